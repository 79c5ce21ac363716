"""Fault table: inject the ordinary faults into tiny 2-node runs on the local Slurm, print what happened.

`python bench/faults.py [--steps 12] [--save-steps 3] [--at 5] [--only preempt,requeue,...]`

Each fault gets its own run (`launch.py cluster=slurm hw=cpu nodes=2 ...`, our trainer) and
is injected into that job only, once metrics.jsonl reaches step --at:

- preempt:  `scancel --signal=USR2 JOB` (submitit's preemption/time-limit signal)
- requeue:  `scontrol requeue JOB` (Slurm kills the job without warning and requeues it)
- corrupt:  USR2, then the newest checkpoint is truncated while the job waits to restart
- sigkill:  SIGKILL to rank 1's training process (node 2)
- frozen:   node2 hangs (SIGSTOP to its slurmd, the job's slurmstepd and ranks there),
            `cluster.collective_timeout_s=20`; once the job has left RUNNING node2 is
            rebooted (killed and a fresh slurmd started) and the requeued job resumes
- frozen-norequeue: the same with `cluster.requeue_on_node_failure=false`: Slurm requeues
            the job itself, the requeued attempt stops before srun, the run ends failed
- timelimit: nobody injects: `cluster.time_min=1 cluster.signal_delay_s=10` makes Slurm send
            USR2 itself (300 steps of 4 micro-batches, so they never fit in one minute); the
            requeued job's limit is raised to 10 minutes so the second attempt finishes
- diskfull: a 30 MB tmpfs mounted over the output dir before the first write: the third
            checkpoint does not fit (needs root for mount)

Slurm holds a requeued job for its credential lifetime (2 min); the bench releases it at once
(`scontrol update JobId=J StartTime=now`), as the test does. Columns: injected at step (the
last logged step when injected), detected after s (injection until the stop line, for a
signal, or until the job left RUNNING; timelimit: Slurm's signal until the save, from the
requeue record; diskfull: the last valid checkpoint until the job left the queue), steps lost
(logged before the fault but recomputed after the resume), outcome (final status, steps,
requeues, failure class, each step once?).
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

from launcher.rundir import RunDir  # noqa: E402

FAULTS = (
    "preempt", "requeue", "corrupt", "sigkill", "frozen", "frozen-norequeue", "timelimit",
    "diskfull",
)  # fmt: skip
OVERRIDES = {
    "frozen": ["cluster.collective_timeout_s=20"],
    "frozen-norequeue": [
        "cluster.collective_timeout_s=20",
        "cluster.requeue_on_node_failure=false",
    ],
    "timelimit": [
        "max_steps=300",
        "gradient_accumulation_steps=4",
        "save_steps=100",
        "cluster.time_min=1",
        "cluster.signal_delay_s=10",
    ],
    "diskfull": ["max_steps=30", "save_total_limit=3"],
}
"""Launch settings of a fault beyond the common ones (later ones win)."""
DISK_MB = 30


def metrics(run_dir: Path) -> list[dict]:
    return RunDir(run_dir).metrics()


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


def inject(fault: str, run_dir: Path, job: str, conf: Path) -> list[int]:
    """Inject `fault` into the running job; the pids frozen (frozen faults), else []."""
    from slurm_cluster import freeze, node_processes, rank_pid

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
    elif fault.startswith("frozen"):
        pids = node_processes(conf, "node2", job)
        freeze(pids)
        until(lambda: state(job) != "RUNNING", 300)
        return pids
    return []


def mount_tmpfs(out: Path) -> str | None:
    out.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m", "tmpfs", str(out)],
                       capture_output=True, text=True)  # fmt: skip
    return None if r.returncode == 0 else r.stderr.strip()


def run_fault(fault: str, root: Path, cache: Path, a: argparse.Namespace) -> dict:
    from slurm_cluster import reboot, restore_node

    from launcher.node.checkpoints import MARKER, valid_checkpoints

    run_dir = root / fault
    conf = Path(os.environ["SLURM_CONF"])
    r = subprocess.run(
        [sys.executable, "launch.py", "cluster=slurm", "hw=cpu", "nodes=2",
         f"max_steps={a.steps}", f"save_steps={a.save_steps}", "save_total_limit=2",
         *OVERRIDES.get(fault, []), "wait=false", f"run_dir={run_dir}", f"cache_dir={cache}"],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    if r.returncode != 0:
        return {"fault": fault, "outcome": f"launch failed: {r.stderr.strip()[-300:]}"}
    job = json.loads((run_dir / "job.json").read_text())["job_id"]
    row: dict = {"fault": fault, "job": job}
    if fault == "diskfull" and (why := mount_tmpfs(run_dir / "output")):
        subprocess.run(["scancel", job], capture_output=True)
        return {**row, "outcome": f"skipped: cannot mount a tmpfs: {why}"}
    try:
        if fault in ("timelimit", "diskfull"):  # nobody injects: wait for the job to act
            until(lambda: metrics(run_dir), 300)  # running
            until(lambda: RunDir(run_dir).requeues() or state(job) in ("PENDING", None), 600,
                  poll_s=0.5)  # fmt: skip
            before = max((m["step"] for m in metrics(run_dir)), default=0)
            row["at_step"] = before
            if fault == "timelimit":
                row["detected_s"] = RunDir(run_dir).requeues()[0].get("waited_s")
                subprocess.run(["scontrol", "update", f"JobId={job}", "TimeLimit=10"])
            else:
                until(lambda: state(job) is None, 120)
                newest = valid_checkpoints(run_dir / "output")[-1][1]
                row["detected_s"] = round(time.time() - (newest / MARKER).stat().st_mtime, 1)
        else:
            until(lambda: len(metrics(run_dir)) >= a.at, 300)
            row["at_step"] = len(metrics(run_dir))
            t0 = time.monotonic()
            frozen = inject(fault, run_dir, job, conf)
            row["detected_s"] = round(time.monotonic() - t0, 1)
            before = max((m["step"] for m in metrics(run_dir)), default=0)
            if frozen:
                subprocess.run(["scontrol", "hold", job], capture_output=True)
                reboot(conf, "node2", frozen)
                restore_node("node2", dict(os.environ))
                subprocess.run(["scontrol", "release", job], capture_output=True)
        until(lambda: state(job) in ("PENDING", None), 120)
        if state(job) == "PENDING":
            if fault == "corrupt":
                newest = valid_checkpoints(run_dir / "output")[-1][1]
                victim = max((p for p in newest.rglob("*") if p.is_file()),
                             key=lambda p: p.stat().st_size)  # fmt: skip
                with victim.open("r+b") as f:
                    f.truncate(victim.stat().st_size // 2)
                row["corrupted"] = newest.name
            time.sleep(2)
            release(job)
        until(lambda: state(job) is None, 600, poll_s=1)
    except TimeoutError:
        subprocess.run(["scancel", job], capture_output=True)
        row["outcome"] = "TIMED OUT (cancelled)"
        return row
    finally:
        if fault == "diskfull":
            subprocess.run(["umount", "-l", str(run_dir / "output")], capture_output=True)
    row.update(outcome(run_dir, row, before))
    return row


def outcome(run_dir: Path, row: dict, before: int) -> dict:
    """steps_lost and the outcome line of a finished run."""
    resumed = re.findall(r"\[train\] resuming from \S+ \(step (\d+)\)", node_logs(run_dir))
    resume_step = int(resumed[-1]) if resumed else None
    rows = metrics(run_dir)
    once = [m["step"] for m in rows] == list(range(1, len(rows) + 1))
    s = (
        json.loads((run_dir / "summary.json").read_text())
        if (run_dir / "summary.json").exists()
        else {}
    )
    steps = json.loads((run_dir / "plan.json").read_text()).get("max_steps") or "?"
    skipped = (
        "skipped " + row["corrupted"] + ", "
        if "corrupted" in row
        and (f"[train] skipping {run_dir / 'output' / row['corrupted']}" in node_logs(run_dir))
        else ""
    )
    line = (
        f"{s.get('status', '?')}, {s.get('steps', len(rows))}/{steps} steps, {skipped}"
        + (f"resumed from step {resume_step}, " if resume_step is not None else "not resumed, ")
        + f"requeues {s.get('requeues', '?')}"
        + (f", class {s['failure_class']}" if s.get("failure_class") else "")
        + (f" ({s['node']})" if s.get("node") else "")
        + (", each step once" if once else ", STEPS NOT EACH ONCE")
    )
    lost = max(0, before - resume_step) if resume_step is not None else 0
    return {"steps_lost": lost, "outcome": line}


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
    print(f"{a.steps} steps, checkpoint every {a.save_steps} (unless the fault sets its own: "
          f"{OVERRIDES}), 2 nodes (cpu), runs in {root}\n")  # fmt: skip
    print("| fault | injected at step | detected after s | steps lost | outcome |")
    print("|---|---|---|---|---|", flush=True)
    for fault in faults:
        r = run_fault(fault, root, root / "cache", a)
        print(
            f"| {r['fault']} | {r.get('at_step', '-')} | {r.get('detected_s', '-')} | "
            f"{r.get('steps_lost', '-')} | {r.get('outcome', '-')} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
