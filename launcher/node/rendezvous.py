"""Where this node stands in the job: its rank, the node count and the master's address.

From Slurm's environment (`--slurm`, NodeTask) or given on the command line (cluster=local).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
from dataclasses import dataclass

from launcher.contract import MASTER_ADDR, MASTER_PORT


@dataclass(frozen=True, slots=True)
class Rendezvous:
    node_rank: int
    nnodes: int
    master_addr: str
    master_port: int
    job_id: str | None = None
    hostnames: tuple[str, ...] = ()


def port_from_job_id(job_id: str) -> int:
    """A master port derived from the Slurm job id: two jobs sharing a node don't collide,
    and a requeued job (same id) gets the same port. Stays below the ephemeral range."""
    return 29500 + int(re.sub(r"\D", "", job_id) or 0) % 2500


def scontrol(*args: str) -> str:
    return subprocess.run(["scontrol", *args], check=True, capture_output=True, text=True).stdout


def node_addr(hostname: str) -> str:
    """The address Slurm has for a node (NodeAddr), not what DNS says about its name."""
    m = re.search(r"\bNodeAddr=(\S+)", scontrol("show", "node", hostname))
    return m.group(1) if m else hostname


def rendezvous_from_slurm(env: dict[str, str] | None = None) -> Rendezvous:
    env = dict(os.environ if env is None else env)
    nodelist = env.get("SLURM_JOB_NODELIST") or env["SLURM_NODELIST"]
    hostnames = tuple(scontrol("show", "hostnames", nodelist).split())
    job_id = env["SLURM_JOB_ID"]
    return Rendezvous(
        node_rank=int(env["SLURM_NODEID"]),
        nnodes=int(env.get("SLURM_JOB_NUM_NODES") or env.get("SLURM_NNODES") or len(hostnames)),
        master_addr=node_addr(hostnames[0]),
        master_port=port_from_job_id(job_id),
        job_id=job_id,
        hostnames=hostnames,
    )


def slurm_minutes(text: str) -> int | None:
    """Slurm's [D-]HH:MM:SS / MM:SS / MM in minutes; None for infinite/unknown (sinfo's
    partition limits on the login side, scontrol's job limit on the node)."""
    text = text.strip()
    if text.lower() in ("infinite", "unlimited", "n/a", "none", ""):
        return None
    days, _, rest = text.rpartition("-")
    parts = [int(p) for p in rest.split(":")]
    if len(parts) == 3:
        h, m, s = parts
    elif len(parts) == 2:
        h, (m, s) = 0, parts
    else:
        h, m, s = 0, parts[0], 0
    return (int(days or 0) * 24 + h) * 60 + m + (1 if s else 0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fill(text: str, rv: Rendezvous) -> str:
    """The plan's `{master_addr}` / `{master_port}` placeholders, filled in on the node."""
    return text.replace(MASTER_ADDR, rv.master_addr).replace(MASTER_PORT, str(rv.master_port))
