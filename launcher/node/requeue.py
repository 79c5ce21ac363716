"""Stop and requeue: the stop request every rank honours, submitit's USR2 handler (time limit
or preemption) behind `NodeTask.checkpoint`, and the requeue rules the sbatch script's own
steps apply too (launcher.node.teardown).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time

from launcher.contract import RELIABILITY, Plan, Reliability
from launcher.node.attempt import EX_TEMPFAIL, attempt_summary, diagnose, restart_count
from launcher.node.rendezvous import rendezvous_from_slurm, scontrol, slurm_minutes
from launcher.rundir import RunDir


class _Child:
    """This process's node task as submitit's signal handler (NodeTask.checkpoint, which gets
    no arguments) must see it: when the task first started, and its running child (one at a
    time). The node task passes it to what runs the child; only the handler reads `CHILD`."""

    def __init__(self) -> None:
        self.started: float = 0.0
        """When this node task first started (the time-limit rule of a stop signal counts from it)."""
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
"""The one module-level holder: a signal handler can be passed nothing."""


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
    set_aside_summary(run, restarts)
    event = slurm_requeue(run, hostnames, back=1)  # this attempt has only begun
    if event is not None:
        run.add_requeue(event)
    if restarts:
        return f"[launcher] attempt {restarts + 1}: requeued {restarts} time(s)\n"
    return None


def set_aside_summary(run: RunDir, restarts: int) -> None:
    if run.summary_json.exists():
        os.replace(run.summary_json, run.summary_attempt_json(restarts - 1))


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
    event["resume_step"] = resume_step(run, Plan.load(run.root))
    return event


def requeue_refused(rel: Reliability, used: int) -> str | None:
    """Why the run refuses a requeue for a node failure (cluster.requeue_on_node_failure,
    cluster.max_requeues, with `used` requeues so far), or None if it takes one."""
    if not rel.requeue_on_node_failure:
        return "requeue_on_node_failure is off"
    max_requeues = rel.max_requeues
    return f"max_requeues ({max_requeues}) reached" if used >= max_requeues else None


def _wait_for_save(
    run: RunDir, child: _Child, requested: float, limit_s: float
) -> tuple[bool, int | None]:
    """Wait (at most limit_s) until this node's child exited after the stop request, or a
    valid checkpoint newer than the request exists. (saved?, step of the newest valid one)."""
    from launcher.node.checkpoints import MARKER, valid_checkpoints

    deadline = time.monotonic() + limit_s
    while True:
        found = valid_checkpoints(run.output_dir)
        fresh = [n for n, p in found if (p / MARKER).stat().st_mtime >= requested - 1]
        if child.done.is_set():
            # torchrun reports its workers' 75 as 1: a checkpoint newer than the request
            # is the proof that they saved
            saved = child.returncode == EX_TEMPFAIL or bool(fresh)
            return saved, found[-1][0] if found else None
        if fresh and child.proc is None:
            return True, fresh[-1]
        if time.monotonic() > deadline:
            return bool(fresh), found[-1][0] if found else None
        time.sleep(0.2)


def request_stop(
    run: RunDir, reason: str, limit_s: float, engine: str, child: _Child = CHILD
) -> dict:
    """Ask every rank to save (the stop file), wait until `child` (this node's) saved or exited,
    and say what was saved."""
    requested = time.time()
    run.control_dir.mkdir(parents=True, exist_ok=True)
    run.stop_file.write_text(json.dumps({"reason": reason, "at": requested}) + "\n")
    from launcher.engines import get_engine

    trainer = get_engine(engine)
    if trainer.saves_on_stop:  # the others resume from their last periodic checkpoint
        saved, step = _wait_for_save(run, child, requested, limit_s)
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
    kind = requeue_kind(CHILD.started or time.time(), slurm.time if slurm else None)
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
        summary = attempt_summary(run, rv, CHILD.started, status="stopped", reason=reason,
                                  failure_class=kind, action=event["action"])  # fmt: skip
        run.write_summary(summary.record())
        return False
    event["action"] = "requeued"
    run.add_requeue(event)
    return True


def resume_step(run: RunDir, plan: Plan) -> int | None:
    from launcher.node.checkpoints import last_step

    return last_step(run, plan.engine)
