"""On node 0 after the official script exits: metrics.jsonl from its log, then the verdict.

The HF Trainer prints one `{'loss': ..}` dict per logged step and `{'train_runtime': ..}` at
the end (launcher.report.collect.hf_trainer reads both). Its dicts go to stdout and its progress bar
to stderr, so in the node log a dict can land before or after its step's bar: the step of
each dict comes from the Trainer's own `log_history` (trainer_state.json, saved at the end and
in every checkpoint), the step time from the bar with that step's number. metrics.jsonl gets
every step with loss, lr, grad norm (where the transformers version logs it), epoch, step
time (tqdm's smoothed rate) and samples/s for the global batch. The official script never destroys its process group, so
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

from launcher.contract import Outcome
from launcher.report.collect.hf_trainer import RENAME, parse
from launcher.report.collect.records import LogError
from launcher.rundir import RunDir

ABORT = "terminate called without an active exception"
FINAL_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                 "pytorch_model.bin.index.json", "adapter_model.safetensors", "adapter_model.bin")  # fmt: skip


def log_history(output_dir: Path) -> list[dict[str, Any]]:
    """The Trainer's logged steps: trainer_state.json at the end, else the newest checkpoint's."""
    states = [output_dir / "trainer_state.json"]
    states += sorted(output_dir.glob("checkpoint-*/trainer_state.json"), key=_step, reverse=True)
    for path in states:
        if path.is_file():
            try:
                return json.loads(path.read_text()).get("log_history", [])
            except ValueError:
                continue
    return []


def _step(path: Path) -> int:
    tail = path.parent.name.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else -1


def metrics_records(
    records: list[dict[str, Any]], history: list[dict[str, Any]], global_batch: int | None
) -> list[dict]:
    """One record per logged step: the log_history's figures where it has the step (a run
    that died before any save has none: the log's own order then)."""
    logged = [h for h in history if "loss" in h and "step" in h]
    last = max((h["step"] for h in logged), default=0)
    # steps after the last save (a run that failed later) come from the log alone
    by_step = {r["step"]: dict(r) for r in records if "loss" in r and r["step"] > last}
    for h in logged:
        rec = {"step": h["step"]}
        rec |= {dst: float(h[src]) for src, dst in RENAME.items() if src in h}
        by_step[h["step"]] = rec
    times = {r["step"]: r["step_time"] for r in records if r.get("step_time")}
    out = []
    for step in sorted(by_step):
        rec = by_step[step]
        if step in times:
            rec["step_time"] = times[step]
        if global_batch and rec.get("step_time"):
            rec["samples_per_sec"] = global_batch / rec["step_time"]
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


def judge(run: RunDir, returncode: int, global_batch: int) -> Outcome:
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
        rows = metrics_records(parsed.records, log_history(run.output_dir), global_batch)
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
