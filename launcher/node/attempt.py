"""What one attempt of a job records: the fields of its summary.json, the diagnosis of a
failure from every log it left, and the node's provenance. Shared by the node's own verdict
(launcher.node.task), the stop/requeue handler and the sbatch teardown (launcher.node.requeue)."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from typing import Any

from launcher.contract import Summary
from launcher.node.rendezvous import Rendezvous
from launcher.report.collect.failure import Failure
from launcher.report.collect.records import final_loss
from launcher.rundir import RunDir

EX_TEMPFAIL = 75
"""The trainer's exit status after it saved on a stop request (requeue): not done, not failed."""


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


def attempt_summary(run: RunDir, rv: Rendezvous, started: float, **outcome: Any) -> Summary:
    """summary.json for this attempt, the one place it is built: who ran, when, how far it
    got, then `outcome` (status, reason and the fields of how it ended)."""
    rows, ended = run.metrics(), time.time()
    return Summary(
        job_id=rv.job_id,
        nodes=rv.nnodes,
        hostnames=rv.hostnames,
        started=started,
        ended=ended,
        duration_s=round(ended - started, 3),
        restart=restart_count(),
        requeues=run.requeues_total(),
        attempt=run.attempt(),
        steps=len(rows),
        final_loss=final_loss(rows),
        **outcome,
    )


def status_for(failure: Failure | None) -> str:
    if failure is not None and failure.failure_class == "user_cancel":
        return "cancelled"
    return "failed"


def stop_action(failure: Failure, why: str | None = None) -> str:
    """summary.json's `action` for a run that ends here; an OOM is the point's own verdict."""
    if failure.infeasible:
        return "point infeasible: not retried (out of memory as configured)"
    return "stopped" + (f": {why}" if why else "")


ATTEMPT_START = (
    re.compile(r"^submitit INFO \(.*\) - Starting with JobEnvironment", re.M),
    re.compile(r"^\[launcher\] node \d+/\d+ on ", re.M),
)
"""The first line each attempt writes to a submitit log, else to a node log (both appended
to; a submitit task log also holds node 0's launcher lines, so its own line is used there)."""


def attempt_text(text: str, back: int = 0) -> str:
    """The part of an appended log that the attempt `back` attempts before the newest wrote."""
    starts = next(
        ([m.start() for m in found] for rx in ATTEMPT_START if (found := list(rx.finditer(text)))),
        [],
    )
    if not starts:
        return text if back == 0 else ""
    if back >= len(starts):
        return ""
    i = len(starts) - 1 - back
    return text[starts[i] : starts[i + 1] if i + 1 < len(starts) else len(text)]


def diagnose(
    run: RunDir,
    hostnames: tuple[str, ...] = (),
    extra: dict[str, str] | None = None,
    back: int = 0,
) -> Failure | None:
    """Why the run's job failed, from every log its newest attempt (or the one `back` attempts
    before it) left: node logs, per-rank logs (newest attempt only), Slurm's batch log (srun
    and slurmstepd lines) and the nodes' exit records. A requeued job appends to the same
    logs: an earlier attempt's cause must not explain a later one."""
    from launcher.report.collect.failure import classify

    sources: list[tuple[str, str]] = []
    files = sorted(run.logs_dir.glob("node*.log"))
    if back == 0:
        # torchrun's per-run folders made since node 0 prepared this attempt (it rewrites
        # the marker each attempt; torchrun starts after it)
        marker = run.prepared_marker
        since = marker.stat().st_mtime - 1 if marker.exists() else 0
        for d in sorted(run.logs_dir.glob("node*-ranks/*")):
            files += sorted(d.glob("**/*.log")) if d.stat().st_mtime >= since else []
    files += sorted(run.submitit_dir.glob("*_log.out")) + sorted(run.submitit_dir.glob("*_log.err"))
    for f in files:
        try:
            text = f.read_text(errors="replace")
        except OSError:
            continue
        if "-ranks" not in f.parent.as_posix():
            text = attempt_text(text, back)
        sources.append((str(f.relative_to(run.root)), text))
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
