"""What one attempt of a job records: the fields of its summary.json, the diagnosis of a
failure from every log it left, and the node's provenance. Shared by the node's own verdict
(launcher.node), the stop/requeue handler and the sbatch teardown (launcher.requeue)."""

from __future__ import annotations

import json
import os
import sys
import time

from launcher.collect.failure import Failure
from launcher.rendezvous import Rendezvous
from launcher.rundir import RunDir

EX_TEMPFAIL = 75
"""The trainer's exit status after it saved on a stop request (requeue): not done, not failed."""


class _State:
    started: float = 0.0


STATE = _State()
"""When this node task first started (the time-limit rule of a stop signal counts from it)."""


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


def restart_count(env: dict[str, str] | None = None) -> int:
    """How often Slurm has requeued this job (0 on the first attempt)."""
    return int((os.environ if env is None else env).get("SLURM_RESTART_COUNT") or 0)


def _metrics_tail(run: RunDir) -> dict:
    rows = run.metrics()
    return {"steps": len(rows), "final_loss": rows[-1].get("loss") if rows else None}


def attempt_summary(run: RunDir, rv: Rendezvous, started: float, **fields) -> dict:
    """summary.json for this attempt: who ran, when, how far it got, then `fields`."""
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


def status_for(failure: Failure | None) -> str:
    if failure is not None and failure.failure_class == "user_cancel":
        return "cancelled"
    return "failed"


def stop_action(failure: Failure, why: str | None = None) -> str:
    """summary.json's `action` for a run that ends here; an OOM is the point's own verdict."""
    if failure.infeasible:
        return "point infeasible: not retried (out of memory as configured)"
    return "stopped" + (f": {why}" if why else "")


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
