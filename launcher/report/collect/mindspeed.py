"""MindSpeed-MM (Megatron) training logs: one `iteration N/ M | key: value | ...` line per step.

The line, as Megatron's `training_log` prints it on the last pipeline rank with
`--log-interval 1` (MindSpeed-MM v2.2.0 adds `tokens per sample` under `--log-tps`):

    [2025-01-01 10:00:00] iteration       51/    5000 | consumed samples:         6528 |
    elapsed time per iteration (ms): 9953.1 | learning rate: 3.999605E-05 |
    global batch size:   128 | loss: 1.234567E+00 | loss scale: 1.0 | grad norm: 2.345 |
    tokens per sample: 1813.2 | number of skipped iterations:   0 | number of nan iterations:   0 |

(one line in the log). torchrun's `[defaultN]:` prefix is stripped. A `tokens per sample: X`
on a line of its own belongs to the iteration line before it. A later line for the same
iteration (a resumed run) replaces the earlier one. Records: step, loss, lr, step_time (s),
samples (= global batch size), samples_per_sec, grad_norm, tokens (= samples x tokens per
sample: LLM tokens in the step), tokens_per_sec (whole job), skipped, and peak_mem_gb from Megatron's
`(after N iterations) memory (MB) | ... max allocated: X` report (the largest rank's).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from launcher.report.collect.records import LogError, ParsedLog

KIND = "mindspeed"
"""The log kind (launcher.report.collect.detect) of a MindSpeed-MM (Megatron) log."""
MARKER = "elapsed time per iteration (ms)"
_PREFIX = re.compile(r"^\s*\[default\d+\]:")
_ITER = re.compile(r"\biteration\s+(\d+)\s*/\s*(\d+)\s*\|(.*)$")
_TPS_ALONE = re.compile(r"tokens per sample:\s*([-+\w.]+)")
_MEM = re.compile(r"\(after \d+ iterations\) memory \(MB\).*?\bmax allocated:\s*([\d.]+)")


def _num(text: str) -> float | None:
    try:
        return float(text.strip())
    except ValueError:
        return None


def parse_text(text: str, path: Path | None = None) -> ParsedLog:
    steps: dict[int, dict[str, Any]] = {}
    problems: list[str] = []
    last: dict[str, Any] | None = None
    for no, raw in enumerate(text.splitlines(), 1):
        line = _PREFIX.sub("", raw)
        m = _ITER.search(line)
        mem = _MEM.search(line) if m is None else None
        if mem and last is not None:
            gb = float(mem.group(1)) / 1024
            last["peak_mem_gb"] = max(gb, last.get("peak_mem_gb", 0.0))
            continue
        if m is None:
            tps = _TPS_ALONE.search(line)
            if tps and last is not None and "samples" in last:
                value = _num(tps.group(1))
                if value is None:
                    problems.append(f"line {no}: unreadable tokens per sample {tps.group(1)!r}")
                else:
                    last["tokens"] = value * last["samples"]
            continue
        if MARKER not in line:
            continue
        step = int(m.group(1))
        fields: dict[str, str] = {}
        for part in m.group(3).split("|"):
            key, sep, value = part.partition(":")
            if sep:
                fields[key.strip()] = value.strip()
        rec: dict[str, Any] = {"step": step}
        bad = []
        for key, dst, scale in (
            (MARKER, "step_time", 1e-3),
            ("learning rate", "lr", 1.0),
            ("global batch size", "samples", 1.0),
            ("grad norm", "grad_norm", 1.0),
            ("number of skipped iterations", "skipped", 1.0),
        ):
            if key in fields:
                value = _num(fields[key])
                if value is None:
                    bad.append(f"{key} {fields[key]!r}")
                else:
                    rec[dst] = value * scale
        losses = [k for k in fields if k.endswith("loss") and k != "loss scale"]
        if losses:
            value = _num(fields[losses[0]])
            if value is None:
                bad.append(f"{losses[0]} {fields[losses[0]]!r}")
            else:
                rec["loss"] = value
        if "tokens per sample" in fields and "samples" in rec:
            value = _num(fields["tokens per sample"])
            if value is None:
                bad.append(f"tokens per sample {fields['tokens per sample']!r}")
            else:
                rec["tokens"] = value * rec["samples"]
        if bad:
            problems.append(f"line {no}: unreadable " + ", ".join(bad))
            continue
        steps[step] = rec
        last = rec
    for rec in steps.values():  # whole-job rates (docs/DESIGN.md metrics.jsonl)
        if rec.get("step_time") and "samples" in rec:
            rec["samples_per_sec"] = rec["samples"] / rec["step_time"]
            if "tokens" in rec:
                rec["tokens_per_sec"] = rec["tokens"] / rec["step_time"]
    where = path or Path("<text>")
    if problems:
        raise LogError(where, problems)
    records = [steps[k] for k in sorted(steps)]
    warnings = [] if records else ["no MindSpeed-MM iteration lines found"]
    return ParsedLog(KIND, where, records, None, warnings)


def parse(path: Path) -> ParsedLog:
    return parse_text(path.read_text(errors="replace"), path)


def parse_run_logs(paths: list[Path]) -> ParsedLog:
    """The iteration lines of a multi-node job: only the last pipeline rank prints them, so
    they sit in one node's log (the last node's); take the log that has the most."""
    best: ParsedLog | None = None
    for p in paths:
        if p.is_file():
            got = parse(p)
            if best is None or len(got.records) > len(best.records):
                best = got
    if best is None:
        return ParsedLog(KIND, Path("."), [], None, ["no node logs"])
    return best
