"""HF-Trainer stdout: per-step `{'loss': ..}` dicts, tqdm progress, the final summary dict.

- A step's dict (`{'loss': 1.2, 'grad_norm': .., 'learning_rate': 2e-05, 'epoch': 0.01}`) is
  printed right after the progress bar moved to that step, often on the same line behind the
  bar; it gets the step of the last training bar seen (or its ordinal when there is no bar).
- tqdm bars (`3/250 [00:41<55:12, 13.41s/it]`, or `2.50it/s`) give step_time: tqdm's rate,
  which is smoothed over recent steps (exponential moving average), not one step's own time.
  Only bars with the training bar's total count; evaluation bars are ignored.
- `{'train_runtime': .., 'train_samples_per_second': .., ...}` becomes ParsedLog.summary.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

from launcher.report.collect.records import LogError, ParsedLog

_DICT = re.compile(r"\{'[A-Za-z_]+':[^{}]*\}")
_BAR = re.compile(r"(\d+)/(\d+) \[[\d:]+<[\d:?]+,\s*(\?|[\d.]+)(s/it|it/s)")
_NONFINITE = re.compile(r"(?<=: )(-?inf|nan)\b")
RENAME = {"loss": "loss", "learning_rate": "lr", "epoch": "epoch", "grad_norm": "grad_norm"}


def _literal(text: str) -> dict[str, Any]:
    value = ast.literal_eval(_NONFINITE.sub(lambda m: f"'{m.group(1)}'", text))
    if not isinstance(value, dict):
        raise ValueError("not a dict")
    return {k: float(v) if v in ("nan", "inf", "-inf") else v for k, v in value.items()}


def parse(path: Path) -> ParsedLog:
    text = path.read_text(errors="replace")
    steps: dict[int, dict[str, Any]] = {}
    summary, problems = None, []
    bar_total = current = None
    ordinal = 0
    for no, line in enumerate(text.split("\n"), 1):
        for segment in line.split("\r"):
            events = [(m.start(), "bar", m) for m in _BAR.finditer(segment)]
            events += [(m.start(), "dict", m) for m in _DICT.finditer(segment)]
            for _, what, m in sorted(events, key=lambda e: e[0]):
                if what == "bar":
                    n, total = int(m.group(1)), int(m.group(2))
                    bar_total = bar_total or total
                    if total != bar_total or n == 0:
                        continue
                    current = n
                    if m.group(3) != "?":
                        rate = float(m.group(3))
                        if rate > 0:
                            t = rate if m.group(4) == "s/it" else 1.0 / rate
                            steps.setdefault(n, {"step": n})["step_time"] = t
                    continue
                try:
                    d = _literal(m.group(0))
                except (ValueError, SyntaxError) as e:
                    problems.append(f"line {no}: unreadable dict {m.group(0)[:80]!r} ({e})")
                    continue
                if "train_runtime" in d:
                    summary = d
                elif "loss" in d:
                    ordinal += 1
                    step = current if current is not None else ordinal
                    rec = steps.setdefault(step, {"step": step})
                    for src, dst in RENAME.items():
                        if isinstance(d.get(src), int | float):
                            rec[dst] = float(d[src])
    if problems:
        raise LogError(path, problems)
    records = [steps[k] for k in sorted(steps)]
    warnings = [] if records else ["no per-step lines found"]
    return ParsedLog("hf_trainer", path, records, summary, warnings)
