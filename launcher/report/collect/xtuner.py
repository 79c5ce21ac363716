"""XTuner `vis_data/<timestamp>.json` (spec internvl_finetune.md §11).

One object per LoggerHook interval (every N iterations): loss, time and data_time are means
over the interval, `memory` the peak MB over it, tflops / tokens_per_sec (ThroughputHook, per
GPU, text tokens only) the current values.
"""

from __future__ import annotations

from pathlib import Path

from launcher.report.collect.jsonl import _number, read_json_lines
from launcher.report.collect.records import LogError, ParsedLog

RENAME = {
    "loss": "loss",
    "lr": "lr",
    "time": "step_time",
    "data_time": "data_time",
    "tflops": "tflops",
    "tokens_per_sec": "tokens_per_sec_per_device",
    "grad_norm": "grad_norm",
}


def parse(path: Path) -> ParsedLog:
    rows, problems, warnings = read_json_lines(path)
    records = []
    for no, obj in rows:
        step = obj.get("iter", obj.get("step"))
        if not isinstance(step, int) or isinstance(step, bool):
            # mmengine also writes validation scalars without 'iter'; those are not steps.
            if "loss" in obj:
                problems.append(f"line {no}: training record without an integer 'iter'")
            continue
        rec = {"step": step}
        for src, dst in RENAME.items():
            if src in obj:
                num = _number(obj[src])
                if num is None:
                    problems.append(f"line {no}: {src!r} must be a number, got {obj[src]!r}")
                else:
                    rec[dst] = num
        if "memory" in obj:
            num = _number(obj["memory"])
            if num is None:
                problems.append(f"line {no}: 'memory' must be a number, got {obj['memory']!r}")
            else:
                rec["peak_mem_gb"] = num / 1024  # MiB -> GiB
        records.append(rec)
    if problems:
        raise LogError(path, problems)
    return ParsedLog("xtuner_vis", path, records, None, warnings)
