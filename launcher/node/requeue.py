"""Stop and requeue: the stop request every rank honours, submitit's USR2 handler (time limit
or preemption) behind `NodeTask.checkpoint`, and the sbatch teardown `after_srun`, which reads
the logs when node 0 could not say how the job ended and requeues on a node failure.

Run as `python -m launcher.node RUN_DIR --after-srun=$?` from the sbatch script's teardown.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time

from launcher.contract import RELIABILITY, Plan, Reliability
from launcher.node.attempt import (
    EX_TEMPFAIL,
    STATE,
    attempt_summary,
    diagnose,
    restart_count,
    status_for,
    stop_action,
)
from launcher.node.rendezvous import Rendezvous, rendezvous_from_slurm, scontrol, slurm_minutes
from launcher.report.collect.failure import Failure
from launcher.rundir import RunDir


class _Child:
    """The running child of this node task (one at a time), shared with the signal handler."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.returncode: int = 0
        self.done = threading.Event()
        self.requeuing = False

    def start(self, proc: subprocess.Popen) -> None:
        self.proc, self.returncode = proc, 0
        self.done.clear()

    def finish(self, returncode: int) -> None:
        self.returncode = returncode
        self.done.set()


CHILD = _Child()


def stop_line(run: RunDir, node_rank: int) -> str | None:
    """The trainer's last "[train] stop requested" line in this node's log."""
    log = run.node_log(node_rank)
    text = log.read_text(errors="replace") if log.exists() else ""
    lines = [ln for ln in text.splitlines() if "[train] stop requested" in ln]
    return lines[-1].split("]:", 1)[-1].strip() if lines else None


TORCHRUN_EXIT = re.compile(r"^\s*exitcode\s*:\s*(-?\d+)", re.M)


def saved_for_requeue(run: RunDir, tail: str) -> bool:
    """torchrun exits 1 when its workers exit 75 (saved on a stop request): the stop file was
    written, and every worker exit code in torchrun's failure report is 75."""
    if not run.stop_file.exists():
        return False
    codes = TORCHRUN_EXIT.findall(tail)
    return bool(codes) and all(int(c) == EX_TEMPFAIL for c in codes)


RETRIED = ("node_failure", "collective_timeout", "hardware_error")
"""Failure classes a requeue can cure (cluster.requeue_on_node_failure)."""


def new_attempt(run: RunDir, hostnames: tuple[str, ...] = ()) -> str | None:
    """Node 0 at the start of a requeued attempt: clear the stop request, put the previous
    attempt's summary aside, count a requeue Slurm did on its own (NODE_FAIL, scontrol) if
    the batch script's `before_srun` has not. Returns the line to log, if this is a requeued
    attempt."""
    run.stop_file.unlink(missing_ok=True)
    restarts = restart_count()
    _set_aside_summary(run, restarts)
    event = slurm_requeue(run, hostnames, back=1)  # this attempt has only begun
    if event is not None:
        run.add_requeue(event)
    if restarts:
        return f"[launcher] attempt {restarts + 1}: requeued {restarts} time(s)\n"
    return None


def _set_aside_summary(run: RunDir, restarts: int) -> None:
    if run.summary_json.exists():
        os.replace(run.summary_json, run.logs_dir / f"summary.attempt-{restarts - 1}.json")


def slurm_requeue(run: RunDir, hostnames: tuple[str, ...], back: int) -> dict | None:
    """The event to record for the requeue Slurm did on its own, if this attempt follows one
    nobody recorded (NODE_FAIL, `scontrol requeue`), else None.

    Slurm requeues a job whose node it declared down itself and kills the batch script, so
    after_srun never ran: the logs of the attempt `back` attempts ago then say why ("srun:
    error: Node failure on node2", which that attempt's node 0 could not see yet: it only
    saw its collective time out)."""
    restarts = restart_count()
    if restarts <= len(run.requeues()):
        return None
    event = {
        "restart": restarts - 1,
        "kind": "slurm",
        "at": time.time(),
        "reason": "requeued by Slurm or scontrol (node failure, scontrol requeue)",
        "action": "requeued",
    }
    found = diagnose(run, hostnames, back=back)
    if found is not None and found.failure_class in ("node_failure", "hardware_error"):
        event |= {"kind": found.failure_class, "reason": found.reason, "node": found.node}
    event["resume_step"] = _resume_step(run, Plan.load(run.root))
    return event


def _requeue_refused(rel: Reliability, used: int) -> str | None:
    """Why the run refuses a requeue for a node failure (cluster.requeue_on_node_failure,
    cluster.max_requeues, with `used` requeues so far), or None if it takes one."""
    if not rel.requeue_on_node_failure:
        return "requeue_on_node_failure is off"
    max_requeues = rel.max_requeues
    return f"max_requeues ({max_requeues}) reached" if used >= max_requeues else None


def before_srun(run_dir: str) -> int:
    """The sbatch script, before srun, on an attempt Slurm started again (SLURM_RESTART_COUNT
    > 0). Slurm requeues a job whose node it declared down whatever the run asked
    (JobRequeue=1): honour cluster.requeue_on_node_failure=false and cluster.max_requeues
    here, before any node starts. 0: go on; 1: the run stops, summary.json says why."""
    run = RunDir(run_dir)
    plan = Plan.load(run.root)
    earlier = len(run.requeues())
    rv = _batch_rendezvous(plan)
    event = slurm_requeue(run, rv.hostnames, back=0)  # srun has not started this attempt
    if event is None:
        return 0
    why = (
        _requeue_refused(plan.reliability or RELIABILITY, earlier)
        if event["kind"] in RETRIED
        else None
    )
    if why is None:
        run.add_requeue(event)
        return 0
    event["action"] = f"stopped: {why}; Slurm requeued the job itself, this attempt did not train"
    run.add_requeue(event)
    _set_aside_summary(run, restart_count())
    summary = attempt_summary(run, rv, time.time(), status="failed", reason=event["reason"])
    summary |= {"failure_class": event["kind"], "node": event.get("node"),
                "action": event["action"], "returncode": None}  # fmt: skip
    run.write_summary(summary)
    print(f"[launcher] {event['reason']}; not starting attempt {restart_count() + 1}: {why}",
          flush=True)  # fmt: skip
    return 1


def _batch_rendezvous(plan: Plan) -> Rendezvous:
    """The job's nodes as the batch script sees them (node 0, the batch host)."""
    env = dict(os.environ)
    try:
        return rendezvous_from_slurm(env)
    except (KeyError, subprocess.CalledProcessError, FileNotFoundError):
        return Rendezvous(0, plan.derived.nodes, "", 0, env.get("SLURM_JOB_ID"))


def _wait_for_save(run: RunDir, requested: float, limit_s: float) -> tuple[bool, int | None]:
    """Wait (at most limit_s) until this node's child exited after the stop request, or a
    valid checkpoint newer than the request exists. (saved?, step of the newest valid one)."""
    from launcher.node.checkpoints import MARKER, valid_checkpoints

    deadline = time.monotonic() + limit_s
    while True:
        found = valid_checkpoints(run.output_dir)
        fresh = [n for n, p in found if (p / MARKER).stat().st_mtime >= requested - 1]
        if CHILD.done.is_set():
            # torchrun reports its workers' 75 as 1: a checkpoint newer than the request
            # is the proof that they saved
            saved = CHILD.returncode == EX_TEMPFAIL or bool(fresh)
            return saved, found[-1][0] if found else None
        if fresh and CHILD.proc is None:
            return True, fresh[-1]
        if time.monotonic() > deadline:
            return bool(fresh), found[-1][0] if found else None
        time.sleep(0.2)


def request_stop(run: RunDir, reason: str, limit_s: float, engine: str) -> dict:
    """Ask every rank to save (the stop file), wait for it, and say what was saved."""
    requested = time.time()
    run.control_dir.mkdir(parents=True, exist_ok=True)
    run.stop_file.write_text(json.dumps({"reason": reason, "at": requested}) + "\n")
    from launcher.engines import get_engine

    trainer = get_engine(engine)
    if trainer.saves_on_stop:  # the others resume from their last periodic checkpoint
        saved, step = _wait_for_save(run, requested, limit_s)
    else:
        saved, step = False, trainer.last_checkpoint_step(run)
    return {
        "saved": saved,
        "resume_step": step,
        "waited_s": round(time.time() - requested, 1),
    }


def requeue_kind(started: float, time_min: float | None, now: float | None = None) -> str:
    """submitit's rule: a signal after min(0.8 x limit, limit - 10 min) is the time limit
    (no --time: the partition's limit, unknown here, so the job's own SLURM limit is read)."""
    walltime = (now or time.time()) - started
    if time_min is None:
        time_min = _slurm_time_limit_min()
        if time_min is None:
            return "time_limit"
    limit = time_min * 60
    return "time_limit" if walltime >= min(0.8 * limit, limit - 600) else "preempted"


def _slurm_time_limit_min() -> float | None:
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return None
    try:
        out = scontrol("show", "job", job)
    except (OSError, subprocess.CalledProcessError):
        return None
    m = re.search(r"\bTimeLimit=(\S+)", out)
    if m is None:
        return None
    if m.group(1) == "UNLIMITED":
        return float("inf")  # no limit to run into: the signal is a preemption
    try:
        return slurm_minutes(m.group(1))
    except ValueError:  # Partition_Limit and the like: not a time
        return None


def stop_for_requeue(run_dir: str) -> bool:
    """On USR2 (global rank 0, through NodeTask.checkpoint): every rank saves at the next step
    boundary (the stop file). True: requeue the job, the event recorded. False: past
    cluster.max_requeues, the run stops instead, with its state saved and summary.json
    written."""
    run = RunDir(run_dir)
    plan = Plan.load(run.root)
    rel, slurm = plan.reliability or RELIABILITY, plan.slurm
    kind = requeue_kind(STATE.started or time.time(), slurm.time if slurm else None)
    limit = max(10.0, float(slurm.signal_delay_s if slurm else rel.signal_delay_s) - 15)
    CHILD.requeuing = True
    done = request_stop(run, kind, limit, plan.engine)
    max_requeues = rel.max_requeues
    used = len(run.requeues())
    event = {
        "restart": restart_count(),
        "kind": kind,
        "at": time.time(),
        **done,
    }
    if used >= max_requeues:
        event["action"] = f"stopped: max_requeues ({max_requeues}) reached"
        reason = (
            f"{kind.replace('_', ' ')}: not requeued, cluster.max_requeues={max_requeues} "
            f"reached; state saved at step {done['resume_step']}"
        )
        rv = rendezvous_from_slurm()
        summary = attempt_summary(run, rv, STATE.started, status="stopped", reason=reason)
        summary |= {"failure_class": kind, "action": event["action"]}
        run.write_summary(summary)
        return False
    event["action"] = "requeued"
    run.add_requeue(event)
    return True


def after_srun(run_dir: str, srun_status: int) -> int:
    """The sbatch script's teardown, on the batch host once srun returned. When node 0 could
    not say how the job ended (another node or rank died and srun killed the rest), read the
    logs: requeue on a node failure or collective timeout (cluster.requeue_on_node_failure,
    within max_requeues, optionally excluding the failed node), else write the summary."""
    run = RunDir(run_dir)
    plan = Plan.load(run.root)
    events = run.requeues()
    restarts = restart_count()
    if events and events[-1].get("restart") == restarts and events[-1]["action"] == "requeued":
        return 0  # submitit's signal handler already requeued this attempt
    summary = run.summary()
    this_attempt = summary is not None and summary.get("restart", 0) == restarts
    if this_attempt and summary.get("failure_class") == "preflight":
        return srun_status or 1  # node 0 stopped the run before training: its verdict stands
    if this_attempt and summary["status"] in ("completed", "stopped", "cancelled"):
        return 0 if summary["status"] == "completed" else srun_status or 1
    rv = _batch_rendezvous(plan)
    failure = diagnose(run, rv.hostnames)
    if failure is None:
        failure = Failure(
            "training_error", f"training error: srun exited with status {srun_status}"
        )
    cluster = plan.reliability or RELIABILITY
    retry = failure.failure_class in RETRIED
    why = _requeue_refused(cluster, len(events)) if retry else None
    if retry and why is None:
        event = {
            "restart": restarts,
            "kind": failure.failure_class,
            "at": time.time(),
            "reason": failure.reason,
            "node": failure.node,
            "action": "requeued",
            "resume_step": _resume_step(run, plan),
        }
        exclude = cluster.exclude_failed_nodes and failure.node in rv.hostnames
        if exclude:
            event["excluded"] = failure.node
        if summary is not None:
            os.replace(run.summary_json, run.logs_dir / f"summary.attempt-{restarts}.json")
        run.add_requeue(event)
        print(f"[launcher] {failure.reason}; requeueing job {rv.job_id}", flush=True)
        if exclude:  # a running job's ExcNodeList cannot change: requeue held, exclude, release
            from launcher.node.gate import requeue_excluding, with_excluded

            job = str(rv.job_id)
            return 1 if requeue_excluding(job, with_excluded(job, [failure.node])) else 0
        done = subprocess.run(["scontrol", "requeue", str(rv.job_id)])
        return done.returncode
    fields = {**failure.as_dict(), "action": stop_action(failure, why)}
    if summary is not None and summary.get("restart", 0) == restarts:
        summary |= fields
        run.write_summary(summary)
    else:
        summary = attempt_summary(
            run, rv, STATE.started or time.time(), status=status_for(failure), **fields
        )
        summary["returncode"] = srun_status
        run.write_summary(summary)
    print(f"[launcher] job ended: {failure.reason}", flush=True)
    return srun_status or 1


def _resume_step(run: RunDir, plan: Plan) -> int | None:
    from launcher.node.checkpoints import last_step

    return last_step(run, plan.engine)
