"""Fault table: inject the ordinary faults into tiny 2-node runs on the local Slurm, print what happened.

`python bench/faults.py [--steps 12] [--save-steps 3] [--at 5] [--only preempt,requeue,...]`

Each fault gets its own run (`launch.py cluster=slurm hw=cpu nodes=2 ...`, our trainer) and
is injected into that job only, once metrics.jsonl reaches step --at:

- preempt:  `scancel --signal=USR2 JOB` (submitit's preemption/time-limit signal)
- requeue:  `scontrol requeue JOB` (Slurm kills the job without warning and requeues it)
- corrupt:  USR2, then the newest checkpoint is truncated while the job waits to restart
- sigkill:  SIGKILL to rank 1's training process (node 2)

Slurm holds a requeued job for its credential lifetime (2 min); the bench releases it at once
(`scontrol update JobId=J StartTime=now`), as the test does. Columns: injected at step (the
last logged step when injected), detected after s (injection until the stop line, for a
signal, or until the job left RUNNING), steps lost (logged before the fault but recomputed
after the resume), outcome (final status, steps, requeues, failure class, each step once?).
Needs SLURM_CONF (the local cluster). Figures only: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

FAULTS = ("preempt", "requeue", "corrupt", "sigkill")


def metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue  # a line being written
    return rows


def node_logs(run_dir: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in sorted((run_dir / "logs").glob("*.log")))


def state(job_id: str) -> str | None:
    from slurm_cluster import squeue_state

    return squeue_state(job_id, dict(os.environ))


def until(cond, timeout_s: float, poll_s: float = 0.2):
    deadline = time.monotonic() + timeout_s
    while not (got := cond()):
        if time.monotonic() > deadline:
            raise TimeoutError("timed out")
        time.sleep(poll_s)
    return got


def release(job_id: str) -> None:
    subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], capture_output=True)


def rank_pid(run_dir: Path, node_rank: int) -> int | None:
    """The training worker under node `node_rank`'s torchrun (all nodes are this machine)."""
    train_args = str(run_dir / "train_args.json")
    procs = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            args = (d / "cmdline").read_bytes().split(b"\0")
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        procs[int(d.name)] = ([a.decode(errors="replace") for a in args], ppid)
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


def run_fault(fault: str, root: Path, cache: Path, a: argparse.Namespace) -> dict:
    from launcher.checkpoints import valid_checkpoints

    run_dir = root / fault
    r = subprocess.run(
        [sys.executable, "launch.py", "cluster=slurm", "hw=cpu", "nodes=2",
         f"max_steps={a.steps}", f"save_steps={a.save_steps}", "save_total_limit=2",
         "wait=false", f"run_dir={run_dir}", f"cache_dir={cache}"],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    if r.returncode != 0:
        return {"fault": fault, "outcome": f"launch failed: {r.stderr.strip()[-300:]}"}
    job = json.loads((run_dir / "job.json").read_text())["job_id"]
    row: dict = {"fault": fault, "job": job}
    try:
        until(lambda: len(metrics(run_dir)) >= a.at, 300)
        row["at_step"] = len(metrics(run_dir))
        t0 = time.monotonic()
        if fault in ("preempt", "corrupt"):
            subprocess.run(["scancel", "--signal=USR2", job], check=True)
            until(lambda: "[train] stop requested" in node_logs(run_dir), 120)
        elif fault == "requeue":
            subprocess.run(["scontrol", "requeue", job], check=True)
            until(lambda: state(job) != "RUNNING", 120)
        elif fault == "sigkill":
            pid = until(lambda: rank_pid(run_dir, 1), 30)
            os.kill(pid, signal.SIGKILL)
            until(lambda: state(job) != "RUNNING", 600)
        row["detected_s"] = round(time.monotonic() - t0, 1)
        before = max((m["step"] for m in metrics(run_dir)), default=0)
        requeued = until(lambda: state(job) in ("PENDING", None), 120) or True
        if requeued and state(job) == "PENDING":
            if fault == "corrupt":
                newest = valid_checkpoints(run_dir / "output")[-1][1]
                victim = max((p for p in newest.rglob("*") if p.is_file()),
                             key=lambda p: p.stat().st_size)  # fmt: skip
                with victim.open("r+b") as f:
                    f.truncate(victim.stat().st_size // 2)
                row["corrupted"] = newest.name
            time.sleep(1)
            release(job)
        until(lambda: state(job) is None, 600, poll_s=1)
    except TimeoutError:
        subprocess.run(["scancel", job], capture_output=True)
        row["outcome"] = "TIMED OUT (cancelled)"
        return row
    resumed = re.findall(r"\[train\] resuming from \S+ \(step (\d+)\)", node_logs(run_dir))
    resume_step = int(resumed[-1]) if resumed else 0
    row["steps_lost"] = max(0, before - resume_step)
    rows = metrics(run_dir)
    once = [m["step"] for m in rows] == list(range(1, len(rows) + 1))
    s = (
        json.loads((run_dir / "summary.json").read_text())
        if (run_dir / "summary.json").exists()
        else {}
    )
    skipped = (
        "skipped " + row["corrupted"] + ", "
        if "corrupted" in row
        and (f"[train] skipping {run_dir / 'output' / row['corrupted']}" in node_logs(run_dir))
        else ""
    )
    row["outcome"] = (
        f"{s.get('status', '?')}, {s.get('steps', len(rows))}/{a.steps} steps, "
        f"{skipped}resumed from step {resume_step}, requeues {s.get('requeues', '?')}"
        + (f", class {s['failure_class']}" if s.get("failure_class") else "")
        + (", each step once" if once else ", STEPS NOT EACH ONCE")
    )
    return row


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--save-steps", type=int, default=3)
    p.add_argument("--at", type=int, default=5, help="inject once this many steps are logged")
    p.add_argument("--only", default=",".join(FAULTS), help=f"comma list of {FAULTS}")
    p.add_argument("--keep", type=Path, help="keep the run dirs under this folder")
    a = p.parse_args()
    if not os.environ.get("SLURM_CONF"):
        p.error("SLURM_CONF is not set (the local cluster: slurm/local_cluster.sh start)")
    faults = [f for f in a.only.split(",") if f]
    unknown = sorted(set(faults) - set(FAULTS))
    if unknown:
        p.error(f"unknown fault(s) {unknown}; choose from {FAULTS}")
    root = a.keep or Path(tempfile.mkdtemp(prefix="vlm-faults-"))
    root.mkdir(parents=True, exist_ok=True)
    rows = [run_fault(f, root, root / "cache", a) for f in faults]
    print(f"\n{a.steps} steps, checkpoint every {a.save_steps}, 2 nodes (cpu), runs in {root}\n")
    print("| fault | injected at step | detected after s | steps lost | outcome |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['fault']} | {r.get('at_step', '-')} | {r.get('detected_s', '-')} | "
            f"{r.get('steps_lost', '-')} | {r.get('outcome', '-')} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
