"""python launch.py status|logs|cancel|report PATH...

PATH is a run dir or a sweep dir (a folder of run dirs). Works without sacct: squeue for
jobs still queued or running, the run dir's summary.json for jobs that ended.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess

from launcher.dispatch import _pid_alive, squeue_state
from launcher.rundir import RunDir


def run_dirs(paths: list[str]) -> list[RunDir]:
    """Expand sweep dirs into their run dirs (any folder holding a plan.json)."""
    return [run for p in paths for run in RunDir.under(p)]


def state(run: RunDir) -> str:
    summary = run.summary()
    if summary is not None:
        return summary["status"].upper()
    if not run.job_json.exists():
        return "PLANNED"
    job = json.loads(run.job_json.read_text())
    if job.get("job_id"):
        try:
            live = squeue_state(job["job_id"])
        except (FileNotFoundError, RuntimeError):
            live = None
        return live or "ENDED-WITHOUT-SUMMARY"
    if job.get("pid") and _pid_alive(job["pid"]):
        return "RUNNING"
    return "ENDED-WITHOUT-SUMMARY"


def cmd_status(runs: list[RunDir]) -> int:
    for run in runs:
        job = json.loads(run.job_json.read_text()) if run.job_json.exists() else {}
        summary = run.summary() or {}
        ident = job.get("job_id") or job.get("pid") or "-"
        loss = summary.get("final_loss")
        extra = f" steps={summary.get('steps')} final_loss={loss:.4f}" if loss is not None else ""
        print(f"{state(run):<22} {ident!s:<10} {run.root}{extra}")
    return 0


def cmd_logs(runs: list[RunDir], lines: int) -> int:
    for run in runs:
        for log in sorted(run.logs_dir.glob("node*.log")):
            print(f"==> {log} <==")
            print("\n".join(log.read_text(errors="replace").splitlines()[-lines:]))
    return 0


def cmd_cancel(runs: list[RunDir]) -> int:
    status = 0
    for run in runs:
        if not run.job_json.exists() or run.summary() is not None:
            continue
        job = json.loads(run.job_json.read_text())
        if job.get("job_id"):
            rc = subprocess.run(["scancel", str(job["job_id"])]).returncode
            print(f"scancel {job['job_id']}: {'ok' if rc == 0 else 'failed'}")
            status |= rc
        elif job.get("pid"):
            try:
                os.killpg(job["pid"], signal.SIGTERM)
                print(f"stopped pid {job['pid']}")
            except ProcessLookupError:
                pass
    return status


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python launch.py", description=__doc__)
    p.add_argument("verb", choices=["status", "logs", "cancel", "report"])
    p.add_argument("paths", nargs="+")
    p.add_argument("-n", "--lines", type=int, default=20, help="logs: lines per node log")
    p.add_argument("--gpus", type=int, help="report on a bare log: number of devices")
    p.add_argument("--seq-len", type=int, help="report on a bare log: sequence length")
    p.add_argument("--global-batch-size", type=int, help="report on a bare log: global batch")
    p.add_argument("--peak-tflops", type=float, help="report on a bare log: device peak")
    a = p.parse_args(argv)
    if a.verb == "report":
        from launcher.report import main as report_main

        return report_main(a)
    runs = run_dirs(a.paths)
    if not runs:
        p.error(f"no run dirs under {' '.join(a.paths)}")
    if a.verb == "status":
        return cmd_status(runs)
    if a.verb == "logs":
        return cmd_logs(runs, a.lines)
    return cmd_cancel(runs)
