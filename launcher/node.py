"""What runs on each node: rendezvous, prepare, the engine's command, and the verdict.

Under submitit (cluster=slurm) the pickled `NodeTask` runs once per node; under srun
(cluster=wrapper) and on this machine (cluster=local) the same code runs as
`python -m launcher.node RUN_DIR [--slurm | --node-rank R --nnodes N --master-addr A --master-port P]`.
Only the standard library and launcher modules are imported: no torch here either.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from launcher.collect.failure import Failure
from launcher.plan import Plan
from launcher.rundir import RunDir, write_json_atomic

PREPARE_TIMEOUT_S = 3600
EX_TEMPFAIL = 75
"""The trainer's exit status after it saved on a stop request (requeue): not done, not failed."""
STOP_ENGINES = ("internvl_chat",)
"""Engines whose trainer honours RUN_DIR/control/stop; the others resume from their last
periodic checkpoint after a requeue."""


@dataclass(frozen=True, slots=True)
class Rendezvous:
    node_rank: int
    nnodes: int
    master_addr: str
    master_port: int
    job_id: str | None = None
    hostnames: tuple[str, ...] = ()


def port_from_job_id(job_id: str) -> int:
    """A master port derived from the Slurm job id: two jobs sharing a node don't collide,
    and a requeued job (same id) gets the same port. Stays below the ephemeral range."""
    return 29500 + int(re.sub(r"\D", "", job_id) or 0) % 2500


def _scontrol(*args: str) -> str:
    return subprocess.run(["scontrol", *args], check=True, capture_output=True, text=True).stdout


def node_addr(hostname: str) -> str:
    """The address Slurm has for a node (NodeAddr), not what DNS says about its name."""
    m = re.search(r"\bNodeAddr=(\S+)", _scontrol("show", "node", hostname))
    return m.group(1) if m else hostname


def rendezvous_from_slurm(env: dict[str, str] | None = None) -> Rendezvous:
    env = dict(os.environ if env is None else env)
    nodelist = env.get("SLURM_JOB_NODELIST") or env["SLURM_NODELIST"]
    hostnames = tuple(_scontrol("show", "hostnames", nodelist).split())
    job_id = env["SLURM_JOB_ID"]
    return Rendezvous(
        node_rank=int(env["SLURM_NODEID"]),
        nnodes=int(env.get("SLURM_JOB_NUM_NODES") or env.get("SLURM_NNODES") or len(hostnames)),
        master_addr=node_addr(hostnames[0]),
        master_port=port_from_job_id(job_id),
        job_id=job_id,
        hostnames=hostnames,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fill(text: str, rv: Rendezvous) -> str:
    return text.replace("{master_addr}", rv.master_addr).replace(
        "{master_port}", str(rv.master_port)
    )


class Tee:
    """Lines from the child go to the node log and to our stdout (Slurm's log)."""

    def __init__(self, path: Path):
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
        CHILD.start(proc)

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                self.write(line)
            CHILD.finish(proc.wait())

        t = threading.Thread(target=pump, name="tee", daemon=True)
        t.start()
        while t.is_alive():
            t.join(0.5)
        return CHILD.returncode


def _ignore_usr2() -> None:
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


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


PROVENANCE_ENV = ("NCCL_", "HCCL_", "TORCH_NCCL_", "ASCEND_", "CUDA_VISIBLE_DEVICES", "SLURM_JOB_")
PROVENANCE_PACKAGES = (
    "torch",
    "transformers",
    "deepspeed",
    "peft",
    "xtuner",
    "mmengine",
    "submitit",
    "hydra-core",
)


def provenance() -> dict:
    """What this node ran with: package versions, communication and Slurm variables."""
    from importlib import metadata

    versions = {}
    for name in PROVENANCE_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    env = {k: v for k, v in sorted(os.environ.items()) if k.startswith(PROVENANCE_ENV)}
    return {"python": sys.version.split()[0], "packages": versions, "env": env}


def _metrics_tail(run: RunDir) -> dict:
    rows = run.metrics()
    return {"steps": len(rows), "final_loss": rows[-1].get("loss") if rows else None}


def restart_count(env: dict[str, str] | None = None) -> int:
    """How often Slurm has requeued this job (0 on the first attempt)."""
    return int((os.environ if env is None else env).get("SLURM_RESTART_COUNT") or 0)


def diagnose(
    run: RunDir, hostnames: tuple[str, ...] = (), extra: dict[str, str] | None = None
) -> Failure | None:
    """Why the run's job failed, from every log it left: node logs, per-rank logs, Slurm's
    batch log (srun and slurmstepd lines) and the nodes' exit records."""
    from launcher.collect.failure import classify

    sources: list[tuple[str, str]] = []
    files = sorted(run.logs_dir.glob("node*.log"))
    files += sorted(run.logs_dir.glob("node*-ranks/**/*.log"))
    files += sorted(run.submitit_dir.glob("*_log.out")) + sorted(run.submitit_dir.glob("*_log.err"))
    for f in files:
        try:
            sources.append((str(f.relative_to(run.root)), f.read_text(errors="replace")))
        except OSError:
            continue
    sources += list((extra or {}).items())  # last: the logs quote the cause, this the verdict
    codes = {}
    for f in sorted(run.logs_dir.glob("node*.exit.json")):
        try:
            rec = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if rec.get("returncode") not in (0, EX_TEMPFAIL, None):
            codes[f"node {rec['node_rank']}"] = rec["returncode"]
    found = classify(sources, returncodes=codes)
    if found is not None and found.node and found.node.startswith("node rank ") and hostnames:
        rank = int(found.node.rsplit(" ", 1)[1])
        if rank < len(hostnames):
            name = hostnames[rank]
            found = Failure(
                found.failure_class,
                found.reason.replace(found.node, f"{name} ({found.node})"),
                found.source,
                found.line,
                name,
            )
    return found


def _stop_line(run: RunDir, node_rank: int) -> str | None:
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


def _new_attempt(run: RunDir, tee: Tee) -> None:
    """Node 0 at the start of a requeued attempt: clear the stop request, put the previous
    attempt's summary aside, count a requeue Slurm did on its own (NODE_FAIL, scontrol)."""
    run.stop_file.unlink(missing_ok=True)
    restarts = restart_count()
    if run.summary_json.exists():
        os.replace(run.summary_json, run.logs_dir / f"summary.attempt-{restarts - 1}.json")
    recorded = run.requeues()
    if restarts > len(recorded):
        run.add_requeue(
            {
                "restart": restarts - 1,
                "kind": "slurm",
                "at": time.time(),
                "reason": "requeued by Slurm or scontrol (node failure, scontrol requeue)",
                "action": "requeued",
            }
        )
    if restarts:
        tee.write(f"[launcher] attempt {restarts + 1}: requeued {restarts} time(s)\n")


def _summary(run: RunDir, rv: Rendezvous, started: float, plan: object, **fields) -> dict:
    return {
        "job_id": rv.job_id,
        "nodes": rv.nnodes,
        "hostnames": list(rv.hostnames),
        "started": started,
        "ended": time.time(),
        "duration_s": round(time.time() - started, 3),
        "restart": restart_count(),
        "requeues": len(run.requeues()),
        "failure_class": None,
        "action": None,
        **_metrics_tail(run),
        **fields,
    }


def _status_for(failure: Failure | None) -> str:
    if failure is not None and failure.failure_class == "user_cancel":
        return "cancelled"
    return "failed"


def run_node(run_dir: str, rv: Rendezvous) -> int:
    """Run this node's share of the job; return the exit status (0 = success, 75 = saved
    for a requeue)."""
    from launcher.engines import get_engine

    run = RunDir(run_dir)
    plan = Plan.load(run.root)
    tee = Tee(run.node_log(rv.node_rank))
    started = time.time()
    STATE.started = STATE.started or started
    tee.write(
        f"[launcher] node {rv.node_rank}/{rv.nnodes} on {socket.gethostname()} "
        f"master {rv.master_addr}:{rv.master_port} job {rv.job_id or 'local'}\n"
    )
    engine = get_engine(plan.engine)
    if rv.node_rank == 0:
        _new_attempt(run, tee)
    ok, reason = _prepare(run, plan, rv, tee)
    rc = None
    outcome = None
    if ok:
        launch = plan.node_launch[rv.node_rank]
        argv = [fill(a, rv) for a in launch.argv]
        resume = getattr(engine, "resume_argv", None)
        if resume is not None:
            argv, note = resume(run, argv)
            if note:
                tee.write(f"[launcher] {note}\n")
        rc = tee.run(argv, _child_env(launch.env, rv))
        if rc != EX_TEMPFAIL and saved_for_requeue(run, "".join(tee.tail)):
            rc = EX_TEMPFAIL
        if rc != EX_TEMPFAIL:
            outcome = engine.outcome(run, rc) if rv.node_rank == 0 else None
            ok = rc == 0 if outcome is None else outcome.ok
            reason = f"exited with status {rc}" if outcome is None else outcome.reason
        else:
            ok, reason = False, "saved for requeue (exit 75)"
    if ok and rv.node_rank == 0:
        try:
            engine.finalize(run)
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
        if rv.node_rank == 0 and not CHILD.requeuing:
            # a stop nobody requeues (the stop file written by hand): resumable by relaunching
            line = _stop_line(run, 0) or "stop requested"
            summary = _summary(run, rv, started, plan, status="stopped", reason=line)
            summary |= {"returncode": rc, "action": "stopped"}
            summary["provenance"] = {**(plan.provenance or {}), **record["provenance"]}
            run.write_summary(summary)
        return EX_TEMPFAIL
    if rv.node_rank == 0:
        # the engine's own verdict is one more source (XTuner: "exited 0 but the log shows")
        failure = None if ok else diagnose(run, rv.hostnames, {"outcome": reason})
        summary = _summary(
            run,
            rv,
            started,
            plan,
            status="completed" if ok else _status_for(failure),
            reason=reason if ok or failure is None else failure.reason,
            returncode=rc,
        )
        if failure is not None:
            summary |= failure.as_dict()
            summary["exit_reason"] = reason
            summary["action"] = stop_action(failure)
        summary["provenance"] = {**(plan.provenance or {}), **record["provenance"]}
        run.write_summary(summary)
    tee.write(f"[launcher] node {rv.node_rank}: {'ok' if ok else 'FAILED'}: {reason}\n")
    return 0 if ok else 1


class _State:
    started: float = 0.0


STATE = _State()


def _wait_for_save(run: RunDir, requested: float, limit_s: float) -> tuple[bool, int | None]:
    """Wait (at most limit_s) until this node's child exited after the stop request, or a
    valid checkpoint newer than the request exists. (saved?, step of the newest valid one)."""
    from launcher.checkpoints import MARKER, valid_checkpoints

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
    if engine in STOP_ENGINES:
        saved, step = _wait_for_save(run, requested, limit_s)
    else:
        from launcher.checkpoints import last_step

        saved, step = False, last_step(run.output_dir, engine)
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
        out = _scontrol("show", "job", job)
    except (OSError, subprocess.CalledProcessError):
        return None
    if re.search(r"\bTimeLimit=UNLIMITED\b", out):
        return float("inf")  # no limit to run into: the signal is a preemption
    m = re.search(r"\bTimeLimit=(?:(\d+)-)?(\d+):(\d+):(\d+)", out)
    if m is None:
        return None
    d, h, mi, sec = (int(x or 0) for x in m.groups())
    return d * 1440 + h * 60 + mi + sec / 60


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

        run = RunDir(self.run_dir)
        plan = Plan.load(run.root)
        slurm = plan.slurm or {}
        kind = requeue_kind(STATE.started or time.time(), slurm.get("time"))
        limit = max(10.0, float(slurm.get("signal_delay_s", 90)) - 15)
        CHILD.requeuing = True
        done = request_stop(run, kind, limit, plan.engine)
        max_requeues = int((plan.reliability or {}).get("max_requeues", 3))
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
            summary = _summary(run, rv, STATE.started, plan, status="stopped", reason=reason)
            summary |= {"failure_class": kind, "action": event["action"]}
            run.write_summary(summary)
            return None  # submitit: "checkpoint function returned None", no requeue
        event["action"] = "requeued"
        run.add_requeue(event)
        return DelayedSubmission(NodeTask(self.run_dir))


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
    if this_attempt and summary["status"] in ("completed", "stopped", "cancelled"):
        return 0 if summary["status"] == "completed" else srun_status or 1
    env = dict(os.environ)
    try:
        rv = rendezvous_from_slurm(env)
    except (KeyError, subprocess.CalledProcessError, FileNotFoundError):
        rv = Rendezvous(0, plan.derived.nodes, "", 0, env.get("SLURM_JOB_ID"))
    failure = diagnose(run, rv.hostnames)
    if failure is None:
        failure = Failure(
            "training_error", f"training error: srun exited with status {srun_status}"
        )
    cluster = plan.reliability or {}
    max_requeues = int(cluster.get("max_requeues", 3))
    retry = failure.failure_class in ("node_failure", "collective_timeout", "hardware_error")
    if retry and cluster.get("requeue_on_node_failure", True) and len(events) < max_requeues:
        event = {
            "restart": restarts,
            "kind": failure.failure_class,
            "at": time.time(),
            "reason": failure.reason,
            "node": failure.node,
            "action": "requeued",
            "resume_step": _resume_step(run, plan),
        }
        if cluster.get("exclude_failed_nodes") and failure.node in rv.hostnames:
            out = subprocess.run(
                ["scontrol", "update", f"JobId={rv.job_id}", f"ExcNodeList={failure.node}"],
                capture_output=True,
                text=True,
            )
            event["excluded"] = failure.node if out.returncode == 0 else None
            if out.returncode != 0:
                event["exclude_error"] = (out.stderr or out.stdout).strip()
        if summary is not None:
            os.replace(run.summary_json, run.logs_dir / f"summary.attempt-{restarts}.json")
        run.add_requeue(event)
        print(f"[launcher] {failure.reason}; requeueing job {rv.job_id}", flush=True)
        done = subprocess.run(["scontrol", "requeue", str(rv.job_id)])
        return done.returncode
    why = (
        "requeue_on_node_failure is off"
        if retry and not cluster.get("requeue_on_node_failure", True)
        else f"max_requeues ({max_requeues}) reached"
        if retry
        else None
    )
    fields = {**failure.as_dict(), "action": stop_action(failure, why)}
    if summary is not None and summary.get("restart", 0) == restarts:
        summary |= fields
        run.write_summary(summary)
    else:
        summary = _summary(
            run, rv, STATE.started or time.time(), plan, status=_status_for(failure), **fields
        )
        summary["returncode"] = srun_status
        run.write_summary(summary)
    print(f"[launcher] job ended: {failure.reason}", flush=True)
    return srun_status or 1


def stop_action(failure: Failure, why: str | None = None) -> str:
    """summary.json's `action` for a run that ends here; an OOM is the point's own verdict."""
    if failure.infeasible:
        return "point infeasible: not retried (out of memory as configured)"
    return "stopped" + (f": {why}" if why else "")


def _resume_step(run: RunDir, plan: Plan) -> int | None:
    from launcher.checkpoints import last_step

    return last_step(run.output_dir, plan.engine)


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
    a = p.parse_args(argv)
    if a.free_port:
        print(free_port())
        return 0
    if not a.run_dir:
        p.error("run_dir is required")
    if a.after_srun is not None:
        return after_srun(a.run_dir, a.after_srun)
    if a.slurm:
        rv = rendezvous_from_slurm()
    else:
        rv = Rendezvous(a.node_rank, a.nnodes, a.master_addr, a.master_port or free_port())
    return run_node(a.run_dir, rv)


if __name__ == "__main__":
    sys.exit(main())
