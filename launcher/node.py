"""What runs on each node: rendezvous, prepare, the engine's command, and the verdict.

Under submitit (cluster=slurm) the pickled `NodeTask` runs once per node; under srun
(cluster=wrapper) and on this machine (cluster=local) the same code runs as
`python -m launcher.node RUN_DIR [--slurm | --node-rank R --nnodes N --master-addr A --master-port P]`.
Only the standard library and launcher modules are imported: no torch here either.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from launcher.plan import Plan
from launcher.rundir import RunDir, write_json_atomic

PREPARE_TIMEOUT_S = 3600


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


def _scontrol(*args: str) -> str:
    return subprocess.run(["scontrol", *args], check=True, capture_output=True, text=True).stdout


def node_addr(hostname: str) -> str:
    """The address Slurm has for a node (NodeAddr), not what DNS says about its name."""
    m = re.search(r"\bNodeAddr=(\S+)", _scontrol("show", "node", hostname))
    return m.group(1) if m else hostname


def rendezvous_from_slurm(env: dict[str, str] | None = None) -> Rendezvous:
    env = dict(os.environ if env is None else env)
    nodelist = env.get("SLURM_JOB_NODELIST") or env["SLURM_NODELIST"]
    hostnames = tuple(_scontrol("show", "hostnames", nodelist).split())
    job_id = env["SLURM_JOB_ID"]
    return Rendezvous(
        node_rank=int(env["SLURM_NODEID"]),
        nnodes=int(env.get("SLURM_JOB_NUM_NODES") or env.get("SLURM_NNODES") or len(hostnames)),
        master_addr=node_addr(hostnames[0]),
        master_port=port_from_job_id(job_id),
        job_id=job_id,
        hostnames=hostnames,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fill(text: str, rv: Rendezvous) -> str:
    return text.replace("{master_addr}", rv.master_addr).replace(
        "{master_port}", str(rv.master_port)
    )


class Tee:
    """Lines from the child go to the node log and to our stdout (Slurm's log)."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = path.open("a", buffering=1)

    def write(self, line: str) -> None:
        self.file.write(line)
        sys.stdout.write(line)
        sys.stdout.flush()

    def run(self, argv: list[str], env: dict[str, str]) -> int:
        self.write(f"[launcher] $ {' '.join(argv)}\n")
        proc = subprocess.Popen(
            argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            self.write(line)
        return proc.wait()


def _child_env(extra: Mapping[str, str], rv: Rendezvous) -> dict[str, str]:
    env = dict(os.environ)
    for key, value in extra.items():
        value = fill(value, rv)
        if key in ("PYTHONPATH", "PATH") and env.get(key):
            value = f"{value}{os.pathsep}{env[key]}"
        env[key] = value
    return env


def _prepare(run: RunDir, plan: Plan, rv: Rendezvous, tee: Tee) -> tuple[bool, str]:
    if rv.node_rank != 0:
        deadline = time.monotonic() + PREPARE_TIMEOUT_S
        while not run.prepared_marker.exists():
            if run.summary_json.exists() or time.monotonic() > deadline:
                return False, "node 0 did not finish preparing"
            time.sleep(1)
        return True, ""
    for step in plan.prepare:
        creates = Path(step.creates)
        creates.parent.mkdir(parents=True, exist_ok=True)
        # Jobs of one sweep share the cache: one builds, the others wait and reuse.
        with open(creates.parent / f".{creates.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if creates.exists():
                tee.write(f"[launcher] prepare: {creates} exists, skipped\n")
                continue
            rc = tee.run(list(step.argv), _child_env(plan.node_launch[0].env, rv))
        if rc != 0 or not creates.exists():
            return False, f"prepare step failed (status {rc}): {' '.join(step.argv)}"
    run.prepared_marker.write_text(time.strftime("%Y-%m-%dT%H:%M:%S\n"))
    return True, ""


PROVENANCE_ENV = ("NCCL_", "HCCL_", "TORCH_NCCL_", "ASCEND_", "CUDA_VISIBLE_DEVICES", "SLURM_JOB_")
PROVENANCE_PACKAGES = (
    "torch",
    "transformers",
    "deepspeed",
    "peft",
    "xtuner",
    "mmengine",
    "submitit",
    "hydra-core",
)


def provenance() -> dict:
    """What this node ran with: package versions, communication and Slurm variables."""
    from importlib import metadata

    versions = {}
    for name in PROVENANCE_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    env = {k: v for k, v in sorted(os.environ.items()) if k.startswith(PROVENANCE_ENV)}
    return {"python": sys.version.split()[0], "packages": versions, "env": env}


def _metrics_tail(run: RunDir) -> dict:
    rows = run.metrics()
    return {"steps": len(rows), "final_loss": rows[-1].get("loss") if rows else None}


def run_node(run_dir: str, rv: Rendezvous) -> int:
    """Run this node's share of the job; return the exit status (0 = success)."""
    from launcher.engines import get_engine

    run = RunDir(run_dir)
    plan = Plan.load(run.root)
    tee = Tee(run.node_log(rv.node_rank))
    started = time.time()
    tee.write(
        f"[launcher] node {rv.node_rank}/{rv.nnodes} on {socket.gethostname()} "
        f"master {rv.master_addr}:{rv.master_port} job {rv.job_id or 'local'}\n"
    )
    engine = get_engine(plan.engine)
    ok, reason = _prepare(run, plan, rv, tee)
    rc = None
    if ok:
        launch = plan.node_launch[rv.node_rank]
        argv = [fill(a, rv) for a in launch.argv]
        rc = tee.run(argv, _child_env(launch.env, rv))
        outcome = engine.outcome(run, rc) if rv.node_rank == 0 else None
        ok = rc == 0 if outcome is None else outcome.ok
        reason = f"exited with status {rc}" if outcome is None else outcome.reason
    if ok and rv.node_rank == 0:
        try:
            engine.finalize(run)
        except Exception as e:  # a failed conversion must not pass for success
            ok, reason = False, f"finalize failed: {e!r}"
    record = {
        "node_rank": rv.node_rank,
        "hostname": socket.gethostname(),
        "returncode": rc,
        "ok": ok,
        "reason": reason,
        "provenance": provenance(),
    }
    write_json_atomic(run.node_exit(rv.node_rank), record)
    if rv.node_rank == 0:
        summary = {
            "status": "completed" if ok else "failed",
            "reason": reason,
            "returncode": rc,
            "job_id": rv.job_id,
            "nodes": rv.nnodes,
            "hostnames": list(rv.hostnames),
            "started": started,
            "ended": time.time(),
            "duration_s": round(time.time() - started, 3),
            **_metrics_tail(run),
            "provenance": {**(plan.provenance or {}), **record["provenance"]},
        }
        run.write_summary(summary)
    tee.write(f"[launcher] node {rv.node_rank}: {'ok' if ok else 'FAILED'}: {reason}\n")
    return 0 if ok else 1


class NodeTask:
    """The callable submitit pickles: small, and requeue-able through `checkpoint()`."""

    def __init__(self, run_dir: str):
        self.run_dir = str(run_dir)

    def __call__(self) -> int:
        status = run_node(self.run_dir, rendezvous_from_slurm())
        if status != 0:
            raise RuntimeError(f"node failed; see {RunDir(self.run_dir).logs_dir}")
        return status

    def checkpoint(self, *args, **kwargs):
        """On timeout/preemption submitit requeues this; the trainer resumes from its last
        complete checkpoint in RUN_DIR/output."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(NodeTask(self.run_dir))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m launcher.node", description=__doc__)
    p.add_argument("run_dir", nargs="?")
    p.add_argument("--slurm", action="store_true", help="take rank and master from Slurm")
    p.add_argument("--node-rank", type=int, default=0)
    p.add_argument("--nnodes", type=int, default=1)
    p.add_argument("--master-addr", default="127.0.0.1")
    p.add_argument("--master-port", type=int)
    p.add_argument("--free-port", action="store_true", help="print a free local port and exit")
    a = p.parse_args(argv)
    if a.free_port:
        print(free_port())
        return 0
    if not a.run_dir:
        p.error("run_dir is required")
    if a.slurm:
        rv = rendezvous_from_slurm()
    else:
        rv = Rendezvous(a.node_rank, a.nnodes, a.master_addr, a.master_port or free_port())
    return run_node(a.run_dir, rv)


if __name__ == "__main__":
    sys.exit(main())
