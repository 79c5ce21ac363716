"""What runs on each node: rendezvous, prepare, the engine's command, and the verdict.

Under submitit (cluster=slurm) the pickled `NodeTask` runs once per node; under srun
(cluster=wrapper) and on this machine (cluster=local) the same code runs as
`python -m launcher.node RUN_DIR [--slurm | --node-rank R --nnodes N --master-addr A --master-port P]`.
Where the node stands comes from launcher.node.rendezvous, what the attempt records from
launcher.node.attempt, and stop/requeue plus the sbatch teardown (`--after-srun`) from
launcher.node.requeue. Only the standard library and launcher modules are imported: no torch here either.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path

from launcher.contract import Plan
from launcher.node import tracking as tracking_node
from launcher.node.attempt import (
    EX_TEMPFAIL,
    attempt_summary,
    diagnose,
    provenance,
    status_for,
    stop_action,
)
from launcher.node.gate import gate, step_times_env
from launcher.node.nodecheck import summary_fields
from launcher.node.rendezvous import Rendezvous, fill, free_port, rendezvous_from_slurm
from launcher.node.requeue import (
    CHILD,
    new_attempt,
    saved_for_requeue,
    stop_for_requeue,
    stop_line,
)
from launcher.node.teardown import after_srun, before_srun
from launcher.rundir import RunDir, write_json_atomic

PREPARE_TIMEOUT_S = 3600


class Tee:
    """Lines from the child go to the node log and to our stdout (Slurm's log)."""

    def __init__(self, path: Path, child=CHILD):
        self.child = child  # who else must see the running child: submitit's signal handler
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = path.open("a", buffering=1)
        self.tail: deque[str] = deque(maxlen=200)  # the last child's last lines

    def write(self, line: str) -> None:
        self.tail.append(line)
        self.file.write(line)
        sys.stdout.write(line)
        sys.stdout.flush()

    def run(self, argv: list[str], env: dict[str, str]) -> int:
        """Run the child; its lines are copied by a thread, so that this (main) thread stays
        free for submitit's signal handler, which may wait here for the child's save."""
        self.write(f"[launcher] $ {' '.join(argv)}\n")
        self.tail.clear()
        proc = subprocess.Popen(
            argv,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            # Slurm signals every process of the step; the trainer learns of a requeue from
            # the stop file, and USR2's default action would kill it before it saved.
            preexec_fn=_ignore_usr2,
        )
        child = self.child
        child.start(proc)

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                self.write(line)
            child.finish(proc.wait())

        t = threading.Thread(target=pump, name="tee", daemon=True)
        t.start()
        while t.is_alive():
            t.join(0.5)
        return child.returncode


def _ignore_usr2() -> None:
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


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


def run_node(run_dir: str, rv: Rendezvous) -> int:
    """Run this node's share of the job; return the exit status (0 = success, 75 = saved
    for a requeue)."""
    from launcher.engines import get_engine

    run = RunDir(run_dir)
    plan = Plan.load(run.root)
    tee = Tee(run.node_log(rv.node_rank), CHILD)
    started = time.time()
    CHILD.started = CHILD.started or started
    tee.write(
        f"[launcher] node {rv.node_rank}/{rv.nnodes} on {socket.gethostname()} "
        f"master {rv.master_addr}:{rv.master_port} job {rv.job_id or 'local'}\n"
    )
    engine = get_engine(plan.engine)
    if rv.node_rank == 0:
        line = new_attempt(run, rv.hostnames)
        if line:
            tee.write(line)
    gated = gate(run, plan, rv, tee, _child_env(plan.node_launch[rv.node_rank].env, rv))
    if gated is not None:
        return gated  # the pre-flight stopped the run or requeued it without a bad node
    ok, reason = _prepare(run, plan, rv, tee)
    rc = None
    outcome = None
    if ok:
        launch = plan.node_launch[rv.node_rank]
        argv = [fill(a, rv) for a in launch.argv]
        argv, note = engine.resume_argv(run, argv)
        if note:
            tee.write(f"[launcher] {note}\n")
        env = _child_env(launch.env, rv) | step_times_env(run, rv)
        if rv.node_rank == 0:
            env |= tracking_node.open_run(run, plan, env, tee)
        rc = tee.run(argv, env)
        if rc != EX_TEMPFAIL and saved_for_requeue(run, "".join(tee.tail)):
            rc = EX_TEMPFAIL
        if rc != EX_TEMPFAIL:
            outcome = engine.outcome(plan, run, rc) if rv.node_rank == 0 else None
            ok = rc == 0 if outcome is None else outcome.ok
            reason = f"exited with status {rc}" if outcome is None else outcome.reason
        else:
            ok, reason = False, "saved for requeue (exit 75)"
        if rv.node_rank == 0:
            ended = "FINISHED" if ok else "KILLED" if rc == EX_TEMPFAIL else "FAILED"
            tracking_node.close_run(run, plan, env, ended, tee)
    if ok and rv.node_rank == 0:
        try:
            engine.finalize(plan, run)
        except Exception as e:  # a failed conversion must not pass for success
            ok, reason = False, f"finalize failed: {e!r}"
    record = {
        "node_rank": rv.node_rank,
        "hostname": socket.gethostname(),
        "slurm_node": rv.hostnames[rv.node_rank] if rv.node_rank < len(rv.hostnames) else None,
        "returncode": rc,
        "ok": ok,
        "reason": reason,
        "provenance": provenance(),
    }
    write_json_atomic(run.node_exit(rv.node_rank), record)
    if rc == EX_TEMPFAIL:
        tee.write(f"[launcher] node {rv.node_rank}: saved for requeue\n")
        if rv.node_rank == 0 and not tee.child.requeuing:
            # a stop nobody requeues (the stop file written by hand): resumable by relaunching
            line = stop_line(run, 0) or "stop requested"
            summary = attempt_summary(
                run, rv, started, status="stopped", reason=line, returncode=rc, action="stopped",
                provenance={**(plan.provenance or {}), **record["provenance"]},
            )  # fmt: skip
            run.write_summary(summary.record())
        return EX_TEMPFAIL
    if rv.node_rank == 0:
        # the engine's own verdict is one more source (XTuner: "exited 0 but the log shows")
        failure = None if ok else diagnose(run, rv.hostnames, {"outcome": reason})
        how = {"status": "completed" if ok else status_for(failure), "reason": reason}
        if failure is not None:
            how |= failure.as_dict() | {"exit_reason": reason, "action": stop_action(failure)}
        summary = attempt_summary(
            run, rv, started, **how, returncode=rc,
            provenance={**(plan.provenance or {}), **record["provenance"]},
            **summary_fields(run),  # the pre-flight's verdict, stragglers
        )  # fmt: skip
        run.write_summary(summary.record())
    tee.write(f"[launcher] node {rv.node_rank}: {'ok' if ok else 'FAILED'}: {reason}\n")
    return 0 if ok else 1


class NodeTask:
    """The callable submitit pickles: small, and requeue-able through `checkpoint()`."""

    def __init__(self, run_dir: str):
        self.run_dir = str(run_dir)

    def __call__(self) -> int:
        status = run_node(self.run_dir, rendezvous_from_slurm())
        if status not in (0, EX_TEMPFAIL):
            raise RuntimeError(f"node failed; see {RunDir(self.run_dir).logs_dir}")
        return status

    def checkpoint(self, *args, **kwargs):
        """submitit calls this on global rank 0 when Slurm's USR2 arrives (time limit or
        preemption; `scancel --signal=USR2`). Every rank saves at the next step boundary (the
        stop file), then the job is requeued and resumes from that checkpoint; past
        cluster.max_requeues the run stops instead, with its state saved."""
        from submitit.helpers import DelayedSubmission

        if not stop_for_requeue(self.run_dir):
            return None  # submitit: "checkpoint function returned None", no requeue
        return DelayedSubmission(NodeTask(self.run_dir))


# Pickles name the class where queued jobs find it, whatever module defines it.
NodeTask.__module__ = "launcher.node"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m launcher.node", description=__doc__)
    p.add_argument("run_dir", nargs="?")
    p.add_argument("--slurm", action="store_true", help="take rank and master from Slurm")
    p.add_argument("--node-rank", type=int, default=0)
    p.add_argument("--nnodes", type=int, default=1)
    p.add_argument("--master-addr", default="127.0.0.1")
    p.add_argument("--master-port", type=int)
    p.add_argument("--free-port", action="store_true", help="print a free local port and exit")
    p.add_argument(
        "--after-srun", type=int, metavar="STATUS", help="sbatch teardown: how the job ended"
    )
    p.add_argument(
        "--before-srun", action="store_true", help="sbatch, on a requeued attempt: go on?"
    )
    a = p.parse_args(argv)
    if a.free_port:
        print(free_port())
        return 0
    if not a.run_dir:
        p.error("run_dir is required")
    if a.after_srun is not None:
        return after_srun(a.run_dir, a.after_srun)
    if a.before_srun:
        return before_srun(a.run_dir)
    if a.slurm:
        rv = rendezvous_from_slurm()
    else:
        rv = Rendezvous(a.node_rank, a.nnodes, a.master_addr, a.master_port or free_port())
    return run_node(a.run_dir, rv)
