"""On node 0 after the official script exits: metrics.jsonl from its log, then the verdict.

The HF Trainer prints one `{'loss': ..}` dict per logged step and `{'train_runtime': ..}` at
the end (launcher.collect.hf_trainer reads both). metrics.jsonl gets every step with loss, lr,
grad norm (where the transformers version logs it), epoch, step time (tqdm's smoothed rate)
and samples/s for the global batch. The official script never destroys its process group, so
a rank sometimes aborts at exit ("terminate called without an active exception") after
everything was saved: a run that logged `train_runtime` and saved its final model is
completed whatever the exit status, and the abort is named in the reason.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from launcher.collect.hf_trainer import parse
from launcher.collect.records import LogError
from launcher.engines.base import Outcome
from launcher.rundir import RunDir

ABORT = "terminate called without an active exception"
FINAL_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                 "pytorch_model.bin.index.json", "adapter_model.safetensors", "adapter_model.bin")  # fmt: skip


def metrics_records(records: list[dict[str, Any]], global_batch: int | None) -> list[dict]:
    out = []
    for r in records:
        if "loss" not in r:
            continue  # a progress bar without a logged dict (never with logging_steps=1)
        rec = dict(r)
        if global_batch and r.get("step_time"):
            rec["samples_per_sec"] = global_batch / r["step_time"]
        if global_batch:
            rec["samples"] = global_batch
        out.append(rec)
    return out


def write_jsonl_atomic(path: Path, rows: list[dict]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.writelines(json.dumps(r, sort_keys=True) + "\n" for r in rows)
    os.replace(tmp, path)


def final_model_saved(output_dir: Path) -> bool:
    return any((output_dir / name).is_file() for name in FINAL_WEIGHTS)


def judge(run: RunDir, returncode: int) -> Outcome:
    from launcher.plan import Plan

    log = run.node_log(0)
    summary = None
    try:
        parsed = parse(log) if log.is_file() else None
    except LogError as e:
        parsed = None
        problem = str(e).splitlines()[0]
    else:
        problem = None
    if parsed is not None:
        summary = parsed.summary
        batch = Plan.load(run.root).derived.global_batch_size
        rows = metrics_records(parsed.records, batch)
        if rows:
            write_jsonl_atomic(run.metrics_jsonl, rows)
    finished = summary is not None and final_model_saved(run.output_dir)
    if returncode == 0:
        if problem:
            return Outcome(False, f"training exited 0 but its log is unreadable: {problem}")
        return Outcome(True, "training finished")
    if finished:
        text = log.read_text(errors="replace") if log.is_file() else ""
        why = f" ({ABORT!r})" if ABORT in text else ""
        return Outcome(
            True,
            f"training finished: train_runtime logged and the final model saved; a rank "
            f"exited with status {returncode} at shutdown{why}",
        )
    return Outcome(False, f"training exited with status {returncode}")
