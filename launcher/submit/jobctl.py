"""python launch.py status|logs|cancel|report PATH...

PATH is a run dir, a sweep dir, or a folder of runs (`status runs/`: a table, newest first).
`status --watch [--interval S]` refreshes (every 5 s) until the jobs ended; `logs RUN -f [--node R]`
follows node R's log until the job ends. Works without sacct: squeue for jobs still queued or
running, the run dir's summary.json for jobs that ended.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from launcher.config.settings import point_settings
from launcher.node.nodecheck import preflight_table, status_bits
from launcher.rundir import RunDir, SweepDir
from launcher.submit.dispatch import pid_alive, squeue_state


def run_dirs(paths: list[str]) -> list[RunDir]:
    """Expand sweep dirs into their run dirs (any folder holding a plan.json)."""
    return [run for p in paths for run in RunDir.under(p)]


def state(run: RunDir) -> str:
    """Slurm's state while the job is queued or running (a requeued job is running again,
    whatever an earlier attempt wrote), else how summary.json says it ended."""
    job = json.loads(run.job_json.read_text()) if run.job_json.exists() else {}
    if job.get("job_id"):
        try:
            live = squeue_state(job["job_id"])
        except (FileNotFoundError, RuntimeError):
            live = None
        if live is not None:
            return live
    summary = run.summary()
    if summary is not None:
        return summary["status"].upper()
    if not job:
        return "PLANNED"
    if job.get("pid") and pid_alive(job["pid"]):
        return "RUNNING"
    return "ENDED-WITHOUT-SUMMARY"


def progress(run: RunDir) -> dict:
    """Per run: requeues, the last valid checkpoint step (torch-free), the last metrics step,
    and the failure class (summary.json's, or read from the logs of a run that ended without)."""
    from launcher.node.checkpoints import last_step

    summary = run.summary() or {}
    engine = (
        json.loads(run.plan_json.read_text()).get("engine", "") if run.plan_json.exists() else ""
    )
    rows = run.metrics()
    failure = summary.get("failure_class")
    if failure is None and not summary and run.job_json.exists() and state(run) in ENDED:
        from launcher.node.attempt import diagnose

        found = diagnose(run)
        failure = found.failure_class if found else None
    return {
        "requeues": run.requeues_total(),
        "attempt": run.attempt(),
        "checkpoint": last_step(run, engine),
        "metrics_step": rows[-1].get("step") if rows else None,
        "failure_class": failure,
    }


ENDED = {"ENDED-WITHOUT-SUMMARY"}
LIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD",
        "RESIZING", "SUSPENDED", "SIGNALING", "STAGE_OUT"}  # fmt: skip
"""squeue states of a job that is still queued or running (RUNNING: a local job's pid)."""


def status_text(runs: list[RunDir]) -> tuple[str, bool]:
    """What `status` prints for these runs, and whether every one of them has ended. Each run
    gets its line, then indented lines from each of STATUS_DETAILS."""
    out, ended = [], True
    for run in runs:
        job = json.loads(run.job_json.read_text()) if run.job_json.exists() else {}
        summary = run.summary() or {}
        ident = job.get("job_id") or job.get("pid") or "-"
        st = state(run)
        ended = ended and st not in LIVE
        p = progress(run)
        extra = f" requeues={p['requeues']} checkpoint={_dash(p['checkpoint'])}"
        extra += f" metrics_step={_dash(p['metrics_step'])}"
        extra += f" attempt={p['attempt']}" if p["attempt"] > 1 else ""
        loss = summary.get("final_loss")
        if loss is not None:
            extra += f" steps={summary.get('steps')} final_loss={loss:.4f}"
        if p["failure_class"]:
            extra += f" failure={p['failure_class']}"
        extra += point_settings(run.root)  # a sweep point: the settings that differ
        extra += status_bits(run)  # the pre-flight's verdict, stragglers
        out.append(f"{st:<22} {ident!s:<10} {run.root}{extra}")
        out += [f"  {line}" for detail in STATUS_DETAILS for line in detail(run, st)]
    return "\n".join(out), ended


def _live_progress(run: RunDir, st: str) -> list[str]:
    from launcher.submit.progress import progress_lines

    return progress_lines(run) if st == "RUNNING" else []


STATUS_DETAILS = [_live_progress, preflight_table]
"""(run, state) -> lines shown under the run's status line; add one function per topic."""


def cmd_status(paths: list[str], runs: list[RunDir], watch: float | None) -> int:
    """Run dirs and sweep dirs line by line; a folder of runs (no sweep.jsonl) as a table."""
    from launcher.submit.progress import runs_table

    tables = [x for x in paths if _is_runs_folder(x)]
    single = [r for x in paths if x not in tables for r in RunDir.under(x)]

    def render() -> tuple[str, bool]:
        text, ended = status_text(single) if single else ("", True)
        found = [r for folder in tables for r in RunDir.under(folder)]
        if found:
            text += ("\n" if text else "") + runs_table(found, state)
            ended = ended and all(state(r) not in LIVE for r in found)
        return text, ended

    if watch is None:
        print(render()[0])
        return 0
    from launcher.submit.progress import watch as watching

    return watching(render, watch)


def _is_runs_folder(path: str) -> bool:
    p = Path(path)
    return not RunDir(p).plan_json.exists() and not SweepDir(p).sweep_jsonl.exists()


def _dash(value) -> str:
    return "-" if value is None else str(value)


def cmd_follow(runs: list[RunDir], lines: int, node: int) -> int:
    """`logs RUN -f [--node R]`: node R's log as it grows, until the job ends."""
    from launcher.submit.progress import follow

    if len(runs) != 1:
        print(f"logs -f follows one run, got {len(runs)}", file=sys.stderr)
        return 2
    run = runs[0]
    nodes = json.loads(run.plan_json.read_text()).get("nodes", 1)
    if not 0 <= node < nodes:
        print(f"--node {node}: the run has nodes 0..{nodes - 1}", file=sys.stderr)
        return 2
    return follow(run.node_log(node), lines, lambda: state(run) in LIVE)


def cmd_logs(runs: list[RunDir], lines: int) -> int:
    """The last `lines` of every node log; says why when a run has none. 1 if none had any."""
    shown = 0
    for run in runs:
        logs = sorted(run.logs_dir.glob("node*.log"))
        if not logs:
            print(f"{run.root}: no node logs yet ({_why_no_logs(run)})")
            continue
        for log in logs:
            shown += 1
            print(f"==> {log} <==")
            print("\n".join(log.read_text(errors="replace").splitlines()[-lines:]))
    return 0 if shown else 1


def _why_no_logs(run: RunDir) -> str:
    st = state(run)
    if st == "PLANNED":
        return "planned only: a dry run, or never submitted"
    if st in ("PENDING", "CONFIGURING"):
        return f"{st.lower()} in the queue"
    return f"state {st}; dispatch output: {run.dispatch_log}"


def cmd_cancel(runs: list[RunDir]) -> int:
    """Cancel what still runs; say for every run what was done or why not. 1 if nothing was."""
    cancelled, failed = 0, 0
    for run in runs:
        if not run.job_json.exists():
            print(f"{run.root}: not submitted (planned only), nothing to cancel")
            continue
        summary = run.summary()
        if summary is not None:
            print(f"{run.root}: already ended ({summary['status']}), nothing to cancel")
            continue
        job = json.loads(run.job_json.read_text())
        if job.get("job_id"):
            out = subprocess.run(["scancel", str(job["job_id"])], capture_output=True, text=True)
            if out.returncode == 0:
                print(f"scancel {job['job_id']}: ok")
                cancelled += 1
            else:
                print(f"scancel {job['job_id']}: failed: {out.stderr.strip()}")
                failed += 1
        elif job.get("pid"):
            try:
                os.killpg(job["pid"], signal.SIGTERM)
                print(f"stopped pid {job['pid']}")
                cancelled += 1
            except ProcessLookupError:
                print(f"{run.root}: pid {job['pid']} already gone, nothing to cancel")
    return 0 if cancelled and not failed else 1


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python launch.py", description=__doc__)
    p.add_argument("verb", choices=["status", "logs", "cancel", "report"])
    p.add_argument("paths", nargs="+")
    p.add_argument("-n", "--lines", type=int, default=20, help="logs: lines per node log")
    p.add_argument("-f", "--follow", action="store_true", help="logs: follow until the job ends")
    p.add_argument("--node", type=int, default=0, help="logs -f: which node's log (rank)")
    p.add_argument("--watch", action="store_true", help="status: refresh until the jobs end")
    p.add_argument("--interval", type=float, default=5.0, help="status --watch: seconds")
    p.add_argument("--gpus", type=int, help="report on a bare log: number of devices")
    p.add_argument("--seq-len", type=int, help="report on a bare log: sequence length")
    p.add_argument("--global-batch-size", type=int, help="report on a bare log: global batch")
    p.add_argument("--peak-tflops", type=float, help="report on a bare log: device peak")
    a = p.parse_args(argv)
    if a.verb == "report":
        from launcher.report.make import main as report_main

        return report_main(a)
    missing = [x for x in a.paths if not Path(x).exists()]
    runs = run_dirs([x for x in a.paths if x not in missing])
    for x in missing:
        print(f"{x}: no such file or folder", file=sys.stderr)
    if not runs:
        p.exit(1, f"{a.verb}: no run dirs (a folder with plan.json) in {' '.join(a.paths)}\n")
    if a.verb == "status":
        watch = a.interval if a.watch else None
        return cmd_status([x for x in a.paths if x not in missing], runs, watch)
    if a.verb == "logs":
        return cmd_follow(runs, a.lines, a.node) if a.follow else cmd_logs(runs, a.lines)
    return cmd_cancel(runs)
