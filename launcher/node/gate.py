"""The pre-flight gate on each node (launcher.node.task calls `gate` before training): run
`internvl_chat.tools.node_check` under torchrun on every node, judge RUN_DIR/preflight.json
(launcher.node.nodecheck.judge: every node computes the same verdict), then act on
preflight.on_fail: `warn` trains, `stop` ends the run with failure_class "preflight" before
any training, `exclude` requeues the job with the bad nodes in its exclusion list (Slurm's
--exclude, `scontrol update ExcNodeList`), recorded as a requeue event.
"""

from __future__ import annotations

import dataclasses
import re
import signal
import subprocess
import time
from typing import Any

from launcher.contract import RELIABILITY, Plan
from launcher.node import nodecheck
from launcher.node.attempt import EX_TEMPFAIL, attempt_summary, restart_count
from launcher.node.rendezvous import Rendezvous, fill, scontrol
from launcher.rundir import RunDir, write_json_atomic

WAIT_FOR_NODE0_S = 120
"""How long the other nodes wait for node 0 to write the stop summary or book the requeue."""


def gate(run: RunDir, plan: Plan, rv: Rendezvous, tee: Any, env: dict[str, str]) -> int | None:
    """None: train. Else this node's exit status (1: stopped, 75: requeued without bad nodes)."""
    rec = plan.preflight
    if rec is None:
        return None
    pre = dataclasses.replace(rv, master_port=rv.master_port + nodecheck.PORT_OFFSET)
    argv = [fill(a, pre) for a in rec["argv"][rv.node_rank]]
    if rv.node_rank == 0:
        (run.preflight_json).unlink(missing_ok=True)  # a requeued attempt measures anew
    rc = tee.run(argv, {**env, "VLM_NODE_NAME": node_name(rv)})
    found = nodecheck.read(run)
    if rc != 0 or found is None:
        reason = f"preflight: the node check did not complete (status {rc}); see {run.logs_dir}"
        return _stop(run, rv, reason, None) if rec["on_fail"] != "warn" else None
    bad = nodecheck.judge(found, rec)
    tee.write("".join(f"[preflight] {line}\n" for line in nodecheck.table(found)))
    action = _action(run, plan, rv, bad)
    if rv.node_rank == 0:
        found["verdict"] = {"on_fail": rec["on_fail"], "bad": bad, "action": action}
        write_json_atomic(run.preflight_json, found)
    for b in bad:
        tee.write(f"[preflight] {b['node']}: " + "; ".join(b["reasons"]) + f" -> {action}\n")
    if not bad:
        tee.write("[preflight] every node passed\n")
        return None
    what = "; ".join(f"{b['node']}: " + "; ".join(b["reasons"]) for b in bad)
    if action == "warn":
        return None
    if action.startswith("requeued"):
        return _requeue(run, rv, bad, what)
    return _stop(run, rv, f"preflight: {what}", bad, action)


def node_name(rv: Rendezvous) -> str:
    """The node as Slurm names it, else its rank (cluster=local: every node is this machine)."""
    if rv.node_rank < len(rv.hostnames):
        return rv.hostnames[rv.node_rank]
    return f"node-rank-{rv.node_rank}"


def step_times_env(run: RunDir, rv: Rendezvous) -> dict[str, str]:
    """Where the trainer's local rank 0 records this node's step compute times, and as whom."""
    return {"VLM_STEP_TIMES": str(run.node_steps(rv.node_rank)), "VLM_NODE_NAME": node_name(rv)}


def _action(run: RunDir, plan: Plan, rv: Rendezvous, bad: list[dict]) -> str:
    on_fail = (plan.preflight or {})["on_fail"]
    if not bad or on_fail != "exclude":
        return on_fail if bad else "none"
    max_requeues = (plan.reliability or RELIABILITY).max_requeues
    if not rv.job_id or not rv.hostnames:
        return "stopped: on_fail=exclude needs Slurm to requeue without the node"
    if len(bad) >= rv.nnodes:
        return "stopped: every node is bad, nothing left to exclude"
    if len(run.requeues()) >= max_requeues:
        return f"stopped: max_requeues ({max_requeues}) reached"
    return "requeued without " + ",".join(b["node"] for b in bad)


def _stop(run: RunDir, rv: Rendezvous, reason: str, bad: list[dict] | None,
          action: str = "stopped: preflight.on_fail=stop") -> int:  # fmt: skip
    if rv.node_rank == 0:
        summary = attempt_summary(
            run, rv, time.time(), status="failed", reason=reason, failure_class="preflight",
            action=action, returncode=None, node=",".join(b["node"] for b in bad) if bad else None,
            **nodecheck.summary_fields(run),
        )  # fmt: skip
        run.write_summary(summary.record())
        print(f"[launcher] {reason}; {action}", flush=True)
    else:
        _wait(lambda: run.summary_json.exists())
    return 1


def _requeue(run: RunDir, rv: Rendezvous, bad: list[dict], what: str) -> int:
    if rv.node_rank != 0:
        _wait(lambda: any(e.get("kind") == "preflight" and e.get("restart") == restart_count()
                          for e in run.requeues()))  # fmt: skip
        return EX_TEMPFAIL  # Slurm ends this attempt's steps as it requeues the job
    names = [b["node"] for b in bad]
    exclude = with_excluded(str(rv.job_id), names)
    event = {"restart": restart_count(), "kind": "preflight", "at": time.time(),
             "reason": f"preflight: {what}", "excluded": ",".join(names),
             "exclude": exclude, "action": "requeued"}  # fmt: skip
    run.add_requeue(event)
    print(f"[launcher] preflight: requeueing job {rv.job_id} with --exclude={exclude}", flush=True)
    requeue_excluding(str(rv.job_id), exclude)
    return EX_TEMPFAIL


def with_excluded(job_id: str, names: list[str]) -> str:
    """The job's ExcNodeList (cluster.exclude, earlier exclusions) plus `names`."""
    try:
        shown = scontrol("show", "job", job_id)
    except (OSError, subprocess.CalledProcessError):
        shown = ""  # the update below says what is wrong with the job
    current = re.search(r"\bExcNodeList=(\S+)", shown)
    keep = [] if current is None or current.group(1) == "(null)" else [current.group(1)]
    return ",".join([*keep, *names])


def requeue_excluding(job_id: str, exclude: str) -> str | None:
    """Requeue a running job with ExcNodeList=`exclude`, from inside it; the error, if any.

    A running job's ExcNodeList cannot change ("Job is no longer pending execution"): hold
    the requeued job, exclude, release. Slurm ends the caller's step meanwhile (SIGTERM, then
    SIGKILL after KillWait): the three calls are done before that."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    errors = []
    for argv in (["requeuehold", job_id], ["update", f"JobId={job_id}", f"ExcNodeList={exclude}"],
                 ["release", job_id]):  # fmt: skip
        out = subprocess.run(["scontrol", *argv], capture_output=True, text=True)
        if out.returncode != 0:
            errors.append(f"scontrol {' '.join(argv)}: {(out.stderr or out.stdout).strip()}")
            print(f"[launcher] {errors[-1]}", flush=True)
    return "; ".join(errors) or None


def _wait(done) -> None:
    deadline = time.monotonic() + WAIT_FOR_NODE0_S
    while not done() and time.monotonic() < deadline:
        time.sleep(0.5)
