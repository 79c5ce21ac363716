"""The check vocabulary every stage reports in: a `Problem` names the setting to change, and
`ConfigError` carries every problem found at once (nothing written or submitted)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Problem:
    """One violation: which setting, what is wrong, and (optionally) what to do."""

    setting: str
    message: str

    def __str__(self) -> str:
        return f"{self.setting}: {self.message}"


class ConfigError(Exception):
    """Raised with every problem found; nothing has been written or submitted."""

    def __init__(self, problems: list[Problem], source: str = "configuration"):
        self.problems = list(problems)
        lines = [
            f"{len(self.problems)} problem(s) in the {source}; nothing was written or submitted:"
        ]
        lines += [f"  - {p}" for p in self.problems]
        super().__init__("\n".join(lines))
