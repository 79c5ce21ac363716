"""What every parser returns (ParsedLog) and raises (LogError); imports no parser."""

from __future__ import annotations

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
