"""Dispatch a written run dir: submitit (cluster=slurm), a site wrapper, or this machine.

Job state never depends on sacct (often absent or lagging): while a job is queued or
running, squeue knows it; once it left the queue, the run dir's summary.json says how it
ended, and a missing summary means it died before node 0 could write one.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field

from launcher.config.spec import JobSpec
from launcher.contract import Plan
from launcher.plan import site
from launcher.plan.jobscript import wrapper_argv
from launcher.report.collect.records import final_loss
from launcher.rundir import RunDir, write_json_atomic


@dataclass(frozen=True, slots=True)
class Submitted:
    kind: str
    run: RunDir
    job_id: str | None = None
    pid: int | None = None
    proc: subprocess.Popen | None = field(default=None, compare=False, repr=False)
    """The process when this launch started it (cluster=local, wrapper): wait() waits on it."""


def dispatch(
    spec: JobSpec, plan: Plan, partition: site.Partition | site.Unknown | None = None
) -> Submitted:
    """Submit or start the planned job. `partition`: what the check stage's sinfo said (None:
    ask sinfo here, when the time limit is needed)."""
    run = RunDir(plan.run_dir)
    if spec.cluster.kind == "slurm":
        sub = _submit_slurm(spec, plan, run, partition)
    elif spec.cluster.kind == "wrapper":
        sub = _start(run, wrapper_argv(spec, run), "wrapper", foreground=spec.should_wait)
    else:
        sub = _start(run, ["bash", str(run.job_sh)], "local", foreground=spec.should_wait)
    write_json_atomic(
        run.job_json,
        {"kind": sub.kind, "job_id": sub.job_id, "pid": sub.pid, "submitted": time.time()},
    )
    return sub


def _submit_slurm(
    spec: JobSpec, plan: Plan, run: RunDir, part: site.Partition | site.Unknown | None
) -> Submitted:
    from launcher.node.task import NodeTask

    executor = _executor_class()(
        folder=run.submitit_dir,
        python=shlex.quote(plan.python),
        max_num_timeout=spec.cluster.max_requeues,
    )
    assert plan.slurm is not None
    executor.update_parameters(**plan.slurm.parameters())
    if plan.slurm.time is None:
        # No --time: the partition's DefaultTime (else MaxTime) applies. submitit still wants
        # a number to tell a time-out from a preemption when USR2 arrives: that, else "never".
        part = part or site.partition_info(spec.cluster.partition)
        limit = part.applies_min if isinstance(part, site.Partition) else None
        executor.requeue_timeout_min = limit or 10**7
    job = executor.submit(NodeTask(str(run.root)))
    submitted = run.submission_sh(str(job.job_id))
    if submitted.exists() and submitted.read_text() != run.sbatch_sh.read_text():
        print(
            f"warning: submitit submitted a script that differs from {run.sbatch_sh}",
            file=sys.stderr,
        )
    return Submitted("slurm", run, job_id=str(job.job_id))


def _executor_class():
    import submitit
    from submitit.slurm.slurm import _make_sbatch_string

    class Executor(submitit.SlurmExecutor):
        """SlurmExecutor that can leave --time out of the script (jobscript.render_sbatch's twin)."""

        requeue_timeout_min: int | None = None

        def _internal_process_submissions(self, delayed_submissions):
            if self.requeue_timeout_min is None:
                return super()._internal_process_submissions(delayed_submissions)
            self.parameters["time"] = self.requeue_timeout_min  # read when pickling the job
            try:
                return super()._internal_process_submissions(delayed_submissions)
            finally:
                self.parameters["time"] = None

        def _make_submission_file_text(self, command: str, uid: str) -> str:
            params = dict(self.parameters)
            if self.requeue_timeout_min is not None:
                params["time"] = None
            return _make_sbatch_string(command=command, folder=self.folder, **params)

    return Executor


def _start(run: RunDir, argv: list[str], kind: str, *, foreground: bool) -> Submitted:
    if foreground:
        # Output streams to this terminal; wait() collects the status.
        proc = subprocess.Popen(argv)
    else:
        log = run.dispatch_log.open("a")
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return Submitted(kind, run, pid=proc.pid, proc=proc)


def squeue_state(job_id: str) -> str | None:
    """The job's state while Slurm still lists it; None once it left the queue."""
    out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True)
    if out.returncode != 0:
        if "Invalid job id" in out.stderr:
            return None
        raise RuntimeError(f"squeue failed: {out.stderr.strip()}")
    states = out.stdout.split()
    return states[0] if states else None


def wait(sub: Submitted, poll_s: float = 2.0) -> int:
    """Block until the job ends; return 0 only if it completed."""
    if sub.proc is not None:
        sub.proc.wait()
    elif sub.pid is not None:
        while pid_alive(sub.pid):
            time.sleep(poll_s)
    else:
        assert sub.job_id is not None
        last = None
        while (state := squeue_state(sub.job_id)) is not None:
            if state != last:
                print(f"job {sub.job_id}: {state}", flush=True)
                last = state
            time.sleep(poll_s)
    summary = sub.run.summary()
    if summary is None:
        print(
            f"job ended without a summary (killed or crashed): see {sub.run.logs_dir}",
            file=sys.stderr,
        )
        return 1
    print(f"job {sub.job_id or sub.pid}: {summary['status']}: {summary.get('reason', '')}")
    print(metrics_line(sub.run))
    return 0 if summary["status"] == "completed" else 1


def metrics_line(run: RunDir) -> str:
    """One line a person reads after a run: how the loss moved and how fast it went."""
    rows = run.metrics()
    if not rows:
        return "no metrics were written"
    k = max(1, min(5, len(rows) // 4))
    first = sum(r["loss"] for r in rows[:k]) / k
    last = final_loss(rows)
    timed = rows[1:] or rows  # the first step carries start-up costs
    sps = sum(r["samples_per_sec"] for r in timed) / len(timed)
    tokens = [r["tokens_per_sec"] for r in timed if "tokens_per_sec" in r]
    tps = f"{sum(tokens) / len(tokens):.0f} tokens/s" if tokens else "tokens/s not logged"
    return (
        f"{len(rows)} steps: loss {first:.3f} (mean of the first {k}) -> {last:.3f} (final); "
        f"{sps:.1f} samples/s, {tps}; metrics in {run.metrics_jsonl}"
    )


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists (on this machine)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
