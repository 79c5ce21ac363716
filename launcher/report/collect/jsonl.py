"""Our metrics.jsonl (docs/DESIGN.md): one JSON object per optimizer step."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from launcher.report.collect.records import LogError, ParsedLog

NUMERIC = (
    "loss", "lr", "epoch", "grad_norm", "samples_per_sec", "tokens_per_sec", "step_time",
    "data_time", "tokens", "image_tokens", "text_tokens", "samples", "peak_mem_gb",
)  # fmt: skip


def read_json_lines(path: Path) -> tuple[list[tuple[int, dict[str, Any]]], list[str], list[str]]:
    """(line number, object) pairs, problems, warnings. A cut-off last line (a job killed
    mid-write) is a warning, not a problem."""
    lines = path.read_text(errors="replace").splitlines()
    out, problems, warnings = [], [], []
    last = max((i for i, line in enumerate(lines, 1) if line.strip()), default=0)
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            msg = f"line {no}: not JSON ({e.msg}): {line[:80]!r}"
            (warnings if no == last and not line.rstrip().endswith("}") else problems).append(msg)
            continue
        if not isinstance(obj, dict):
            problems.append(f"line {no}: expected a JSON object, got {type(obj).__name__}")
            continue
        out.append((no, obj))
    return out, problems, warnings


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def parse(path: Path) -> ParsedLog:
    rows, problems, warnings = read_json_lines(path)
    records = []
    for no, obj in rows:
        step = obj.get("step")
        if not isinstance(step, int) or isinstance(step, bool):
            problems.append(f"line {no}: 'step' must be an integer, got {step!r}")
            continue
        rec: dict[str, Any] = {"step": step}
        for key in NUMERIC:
            if key in obj and obj[key] is not None:
                num = _number(obj[key])
                if num is None:
                    problems.append(f"line {no}: {key!r} must be a number, got {obj[key]!r}")
                else:
                    rec[key] = num
        records.append(rec)
    if problems:
        raise LogError(path, problems)
    return ParsedLog("metrics_jsonl", path, records, None, warnings)
