"""What every parser returns (ParsedLog) and raises (LogError); imports no parser."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class LogError(ValueError):
    """A log that cannot be read; the message lists every bad line at once."""

    def __init__(self, path: Path, problems: list[str]):
        self.path, self.problems = path, problems
        lines = [f"{len(problems)} problem(s) in {path}:"] + [f"  - {p}" for p in problems]
        super().__init__("\n".join(lines))


@dataclass(frozen=True, slots=True)
class ParsedLog:
    kind: str
    path: Path
    records: list[dict[str, Any]]
    summary: dict[str, Any] | None = None
    """HF-Trainer's final {'train_runtime', 'train_samples_per_second', ...} line."""
    warnings: list[str] = field(default_factory=list)


def final_loss(records: Sequence[Mapping[str, Any]]) -> float | None:
    """The run's final loss: the loss of the last step that logged one (None: no step did).
    The one definition summary.json, report.md and the after-run line share."""
    by_step = sorted(records, key=lambda r: r["step"])  # stable: a repeated step's last wins
    losses = [r["loss"] for r in by_step if r.get("loss") is not None]
    return losses[-1] if losses else None
