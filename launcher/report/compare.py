"""`report RUN_A RUN_B ...`: which settings differ between the runs compared, for the table
and the plot legends (a sweep's points or any run dirs; launcher.config.settings does the diff)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from launcher.config.settings import differing, flatten, label


def run_settings(cfg: dict[str, Any], row: Any) -> dict[str, Any]:
    """A run's settings as compared: its resolved config, with the batch shape as planned
    (the derived numbers, not the null a derived setting has in config.yaml)."""
    out = flatten(cfg)
    shape = {
        "nodes": row.nodes,
        "per_device_batch_size": row.per_device_batch,
        "gradient_accumulation_steps": row.accum,
        "global_batch_size": row.global_batch,
        "parallelism.zero_stage": row.zero_stage,
        "hw.name": row.hw,
    }
    return out | {k: v for k, v in shape.items() if v is not None}


def label_rows(rows: Sequence[Any]) -> list[str]:
    """Set each run dir row's `label` to its values of the settings that differ (bare logs,
    which have no settings, keep their name); returns those settings."""
    compared = [r for r in rows if r.settings]
    keys = differing([r.settings for r in compared])
    for r in compared:
        r.label = label(r.settings, keys) if keys else ""
    return keys


def markdown(rows: Sequence[Any], keys: Sequence[str]) -> str:
    """The '## Settings that differ' table ('' when nothing differs)."""
    if not keys:
        return ""
    head = ["run", *keys]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if r.settings:
            cells = [r.name, *(str(r.settings.get(k, "-")) for k in keys)]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n## Settings that differ\n\n" + "\n".join(lines) + "\n"
