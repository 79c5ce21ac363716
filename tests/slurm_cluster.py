"""The local Slurm cluster for tests (slurm/local_cluster.sh), and waiting for jobs without sacct.

The cluster has no accounting storage, so `sacct` exits 1 ("Slurm accounting storage is
disabled"). submitit's SlurmInfoWatcher logs "Bypassing sacct error" and keeps the state
UNKNOWN, which it counts as unfinished: `job.result()` then returns only once the result
pickle exists, and blocks forever for a job that died without writing one (killed, timed out,
failed before Python started). `wait_until_gone` + `submitit_results` are the robust way: poll
`squeue` until the job has left the queue, then read the pickles (or raise with the task logs).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "slurm" / "local_cluster.sh"
# squeue %T states of a job that will not run again by itself.
FINISHED = {
    "BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY",
    "PREEMPTED", "TIMEOUT",
}  # fmt: skip


class SlurmUnavailable(Exception):
    """Slurm cannot run here at all (not installed, not root): a reason to skip, outside CI."""


@dataclass(frozen=True)
class SlurmCluster:
    """A reachable Slurm cluster: `env` is os.environ plus SLURM_CONF, for subprocesses."""

    conf: Path
    env: dict[str, str]

    def run(self, argv: list[str], timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
        """Runs a Slurm command against this cluster; raises with its output if it fails."""
        out = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=timeout_s)
        if out.returncode != 0:
            raise RuntimeError(
                f"{' '.join(argv)} exited {out.returncode}\n{out.stdout[-3000:]}{out.stderr[-3000:]}"
            )
        return out


def _cluster(conf: str | Path) -> SlurmCluster:
    return SlurmCluster(conf=Path(conf), env={**os.environ, "SLURM_CONF": str(conf)})


def _answers(cluster: SlurmCluster) -> bool:
    try:
        out = subprocess.run(
            ["sinfo", "-h", "-o", "%D"], env=cluster.env, capture_output=True, timeout=20
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and out.stdout.strip() != b""


def find_or_start(timeout_s: float = 180) -> SlurmCluster:
    """The cluster named by $SLURM_CONF if it answers, else the local one (started if needed).

    Raises SlurmUnavailable when Slurm cannot run here, RuntimeError (with the daemons' log
    tails) when it should but does not start.
    """
    if os.environ.get("SLURM_CONF"):
        cluster = _cluster(os.environ["SLURM_CONF"])
        if _answers(cluster):
            return cluster
    missing = [
        b for b in ("slurmctld", "slurmd", "sinfo", "munged", "flock") if not shutil.which(b)
    ]
    if missing:
        raise SlurmUnavailable(
            f"Slurm not installed ({', '.join(missing)} not on PATH): "
            "apt-get install -y slurm-wlm munge"
        )
    if os.geteuid() != 0:
        raise SlurmUnavailable(
            "the local Slurm cluster needs root (slurmd); start one as root with "
            "`bash slurm/local_cluster.sh start` and export SLURM_CONF"
        )
    out = subprocess.run(
        ["bash", str(SCRIPT), "start"], capture_output=True, text=True, timeout=timeout_s
    )
    exports = [ln for ln in out.stdout.splitlines() if ln.startswith("export SLURM_CONF=")]
    if out.returncode != 0 or not exports:
        raise RuntimeError(
            f"bash {SCRIPT} start exited {out.returncode}:\n{out.stdout}{out.stderr[-8000:]}"
        )
    return _cluster(exports[-1].split("=", 1)[1])


def squeue_state(job_id: str, env: dict[str, str]) -> str | None:
    """The job's state while Slurm still lists it, None once it has left the queue."""
    out = subprocess.run(
        ["squeue", "-h", "-j", job_id, "-o", "%T"], env=env, capture_output=True, text=True
    )
    if out.returncode != 0:
        # squeue forgets a job MinJobAge (30 s here) after it ended.
        if "Invalid job id" in out.stderr:
            return None
        raise RuntimeError(f"squeue -j {job_id} failed: {out.stderr.strip()}")
    state = out.stdout.strip()
    return None if not state or state in FINISHED else state


def wait_until_gone(
    job_id: str, env: dict[str, str], timeout_s: float, poll_s: float = 0.5
) -> None:
    """Polls squeue until the job is finished; scancels it and raises after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while (state := squeue_state(job_id, env)) is not None:
        if time.monotonic() > deadline:
            subprocess.run(["scancel", job_id], env=env, check=False)
            raise TimeoutError(f"Slurm job {job_id} still {state} after {timeout_s:g} s; cancelled")
        time.sleep(poll_s)


def submitit_results(job: Any, env: dict[str, str], timeout_s: float = 120) -> list[Any]:
    """Results of every task of a submitit job, without sacct (see the module docstring)."""
    wait_until_gone(job.job_id, env, timeout_s)
    tasks = [job.task(i) for i in range(job.num_tasks)] if job.num_tasks > 1 else [job]
    missing = [t for t in tasks if not t.paths.result_pickle.exists()]
    if missing:
        logs = "\n".join(
            f"--- task {t.task_id}: {t.paths.stdout}\n{(t.stdout() or '')[-2000:]}"
            f"{(t.stderr() or '')[-2000:]}"
            for t in missing
        )
        raise RuntimeError(f"Slurm job {job.job_id} ended without a result from tasks:\n{logs}")
    return job.results()


def _procs() -> dict[int, tuple[int, str, list[str], bytes]]:
    """pid -> (ppid, comm, argv, environ) of every process we may read."""
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            comm = (d / "comm").read_text().strip()
            argv = (d / "cmdline").read_bytes().decode(errors="replace").split("\0")
            environ = (d / "environ").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        out[int(d.name)] = (ppid, comm, argv, environ)
    return out


def node_processes(conf: Path, node: str, job_id: str) -> list[int]:
    """What makes up `node` of the local cluster for job `job_id`: its slurmd (the one started
    with `-f conf -N node`), the slurmstepd of each of the job's steps on it and all their
    descendants. Every node is this machine, so they are found by their arguments and by the
    SLURMD_NODENAME / SLURM_JOB_ID that Slurm puts in the tasks' environment."""
    procs = _procs()
    slurmd = [
        pid
        for pid, (_, comm, argv, _) in procs.items()
        if comm == "slurmd" and str(conf) in argv and f"-N\0{node}\0" in "\0".join(argv) + "\0"
    ]
    marks = (f"SLURMD_NODENAME={node}\0".encode(), f"SLURM_JOB_ID={job_id}\0".encode())
    stepds = {
        ppid
        for pid, (ppid, _, _, environ) in procs.items()
        if all(m in environ for m in marks) and procs.get(ppid, (0, ""))[1] == "slurmstepd"
    }
    tree, grew = set(stepds), True
    while grew:
        grew = False
        for pid, (ppid, *_) in procs.items():
            if ppid in tree and pid not in tree:
                tree.add(pid)
                grew = True
    return slurmd + sorted(stepds) + sorted(tree - stepds)


def rank_pid(run_dir: Path, node_rank: int) -> int | None:
    """The training worker under node `node_rank`'s torchrun (all nodes are this machine)."""
    train_args = str(run_dir / "train_args.json")
    procs = {pid: (argv, ppid) for pid, (ppid, _, argv, _) in _procs().items()}
    agents = [
        pid
        for pid, (args, _) in procs.items()
        if "torch.distributed.run" in args and f"--node_rank={node_rank}" in args
        and train_args in args
    ]  # fmt: skip
    for pid, (args, ppid) in procs.items():
        if ppid in agents and train_args in args:
            return pid
    return None


def freeze(pids: list[int]) -> None:
    """SIGSTOP each: a hung node (its sockets stay open, nothing answers)."""
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)


def reboot(conf: Path, node: str, pids: list[int], timeout_s: float = 30) -> None:
    """What happens to a hung node an operator power-cycles: everything it ran is gone (the
    frozen slurmd, the job's slurmstepd and ranks get SIGKILL, which a stopped process takes),
    and a fresh slurmd starts with nothing of the old job left to clean up."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout_s
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    subprocess.run(["slurmd", "-f", str(conf), "-N", node], check=True, capture_output=True)


def _alive(pid: int) -> bool:
    """Running (a zombie nobody reaped counts as gone: it holds no port and runs nothing)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def node_state(node: str, env: dict[str, str]) -> str:
    out = subprocess.run(
        ["sinfo", "-h", "-N", "-n", node, "-o", "%t"], env=env, capture_output=True, text=True
    )
    return out.stdout.strip()


def restore_node(node: str, env: dict[str, str], timeout_s: float = 60) -> str:
    """After a reboot: wait until the node answers again (ReturnToService=2 brings a
    re-registered node back), else RESUME it; its state (idle/mix/alloc unless it could not
    be restored)."""
    deadline = time.monotonic() + timeout_s
    while (state := node_state(node, env)) not in ("idle", "mix", "alloc"):
        if time.monotonic() > deadline:
            break
        if "down" in state or "drain" in state:
            subprocess.run(
                ["scontrol", "update", f"NodeName={node}", "State=RESUME"],
                env=env,
                capture_output=True,
            )
        time.sleep(1)
    return state
