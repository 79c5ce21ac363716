"""Which kind of log a file or folder holds, and loading it into records with its parser."""

from __future__ import annotations

import json
from pathlib import Path

from launcher.report.collect import hf_trainer, jsonl, mindspeed, xtuner
from launcher.report.collect.records import LogError, ParsedLog
from launcher.rundir import RunDir


def _first_json_object(path: Path) -> dict | None:
    with path.open(errors="replace") as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError:
                    return None
                return obj if isinstance(obj, dict) else None
    return None


def _kind_of_file(path: Path) -> str | None:
    obj = _first_json_object(path)
    if obj is not None:
        if "iter" in obj and ("time" in obj or "data_time" in obj):
            return "xtuner_vis"
        if "step" in obj:
            return "metrics_jsonl"
        return None
    with path.open(errors="replace") as f:
        head = f.read(4_000_000)
    if mindspeed.MARKER in head:
        return mindspeed.KIND
    if "{'loss'" in head or "{'train_runtime'" in head:
        return "hf_trainer"
    return None


def find_log(path: str | Path) -> tuple[str, Path]:
    """(kind, file) for a log file, a run dir, or a folder holding one raw log.

    Preference in a folder: our metrics.jsonl, then XTuner vis_data/<timestamp>.json, then a
    text log with HF-Trainer or MindSpeed-MM (Megatron) iteration lines (logs/node0.log, then
    the other nodes' logs in a run dir: Megatron prints on the last node; else *.log / *.out /
    *.txt).
    """
    path = Path(path)
    if path.is_file():
        kind = _kind_of_file(path)
        if kind is None:
            raise LogError(
                path,
                ["not a metrics.jsonl, HF-Trainer log, MindSpeed-MM log or XTuner vis_data file"],
            )
        return kind, path
    if not path.is_dir():
        raise LogError(path, ["no such file or folder"])
    run = RunDir(path)  # a run dir's names; a folder of raw logs just lacks them
    if run.metrics_jsonl.is_file() and run.metrics_jsonl.stat().st_size:
        return "metrics_jsonl", run.metrics_jsonl
    vis = sorted(
        p for p in path.rglob("vis_data/*.json") if p.name != "scalars.json" and p.is_file()
    )
    if vis:
        return "xtuner_vis", vis[-1]  # newest timestamp: the latest (resumed) run
    # Megatron (MindSpeed-MM) prints on the last pipeline rank: the last node's log
    texts = [run.node_log(0), *reversed(run.node_logs())]
    texts += sorted(p for ext in ("*.log", "*.out", "*.txt") for p in path.glob(ext))
    for p in texts:
        if p.is_file() and (kind := _kind_of_file(p)) in ("hf_trainer", mindspeed.KIND):
            return kind, p
    raise LogError(
        path,
        [
            "no training log found (looked for metrics.jsonl, vis_data/<timestamp>.json, "
            "logs/node*.log, *.log, *.out, *.txt with HF-Trainer or MindSpeed-MM lines)"
        ],
    )


def detect(path: str | Path) -> str:
    """The kind of log at `path`: metrics_jsonl | hf_trainer | mindspeed | xtuner_vis."""
    return find_log(path)[0]


def load(path: str | Path) -> ParsedLog:
    """Parse the log at `path` (file or folder) into records."""
    kind, file = find_log(path)
    parser = {
        "metrics_jsonl": jsonl.parse,
        "hf_trainer": hf_trainer.parse,
        "xtuner_vis": xtuner.parse,
        mindspeed.KIND: mindspeed.parse,
    }
    return parser[kind](file)
