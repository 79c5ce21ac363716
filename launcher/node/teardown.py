"""The sbatch script's own steps around srun, on the batch host: `before_srun` on an attempt
Slurm started again (honour cluster.requeue_on_node_failure and max_requeues before any node
starts), `after_srun` once srun returned (read the logs when node 0 could not say how the job
ended; requeue on a node failure, else write the summary).

Run as `python -m launcher.node RUN_DIR --before-srun` / `--after-srun=$?` from sbatch.sh.
"""

from __future__ import annotations

import os
import subprocess
import time

from launcher.contract import RELIABILITY, Plan
from launcher.node.attempt import attempt_summary, diagnose, restart_count, status_for, stop_action
from launcher.node.rendezvous import Rendezvous, rendezvous_from_slurm
from launcher.node.requeue import (
    RETRIED,
    requeue_refused,
    resume_step,
    set_aside_summary,
    slurm_requeue,
)
from launcher.report.collect.failure import Failure
from launcher.rundir import RunDir


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
        requeue_refused(plan.reliability or RELIABILITY, earlier)
        if event["kind"] in RETRIED
        else None
    )
    if why is None:
        run.add_requeue(event)
        return 0
    event["action"] = f"stopped: {why}; Slurm requeued the job itself, this attempt did not train"
    run.add_requeue(event)
    set_aside_summary(run, restart_count())
    summary = attempt_summary(
        run, rv, time.time(), status="failed", reason=event["reason"],
        failure_class=event["kind"], node=event.get("node"), action=event["action"],
        returncode=None,
    )  # fmt: skip
    run.write_summary(summary.record())
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
    why = requeue_refused(cluster, len(events)) if retry else None
    if retry and why is None:
        event = {
            "restart": restarts,
            "kind": failure.failure_class,
            "at": time.time(),
            "reason": failure.reason,
            "node": failure.node,
            "action": "requeued",
            "resume_step": resume_step(run, plan),
        }
        exclude = cluster.exclude_failed_nodes and failure.node in rv.hostnames
        if exclude:
            event["excluded"] = failure.node
        if summary is not None:
            os.replace(run.summary_json, run.summary_attempt_json(restarts))
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
        run.write_summary(fields)  # node 0's summary of this attempt, with the cause added
    else:
        ended = attempt_summary(
            run, rv, time.time(), status=status_for(failure), returncode=srun_status, **fields
        )
        run.write_summary(ended.record())
    print(f"[launcher] job ended: {failure.reason}", flush=True)
    return srun_status or 1
