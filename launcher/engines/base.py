"""What every node-side engine provides to the planner and to the node task.

An engine knows *how processes start* (torchrun + our trainer, torchrun + the official
InternVL script, `xtuner train`); it does not know where they run. Argv and env strings may
hold the placeholders `{master_addr}` and `{master_port}`, filled in on the node once the
rendezvous is known (launcher.node).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from launcher.derive import Derived
from launcher.rundir import RunDir
from launcher.spec import JobSpec, Problem

MASTER_ADDR = "{master_addr}"
MASTER_PORT = "{master_port}"


@dataclass(frozen=True, slots=True)
class NodeLaunch:
    """The command one node runs: an argument list and the environment it adds."""

    node_rank: int
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PrepareStep:
    """A command run once, on node 0, before training; skipped when `creates` exists."""

    argv: tuple[str, ...]
    creates: str


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    reason: str


class Engine(Protocol):
    name: str

    def check(self, spec: JobSpec, derived: Derived) -> list[Problem]:
        """Engine-specific problems (e.g. a ZeRO stage it cannot use)."""
        ...

    def files(self, spec: JobSpec, derived: Derived, run: RunDir) -> dict[str, str]:
        """Files the job reads, as run-dir-relative name -> text."""
        ...

    def prepare(self, spec: JobSpec, run: RunDir, python: str) -> list[PrepareStep]: ...

    def node_launch(
        self, spec: JobSpec, derived: Derived, run: RunDir, node_rank: int, python: str
    ) -> NodeLaunch: ...

    def outcome(self, run: RunDir, returncode: int) -> Outcome:
        """On node 0 after the child exits: did training really succeed?"""
        ...

    def finalize(self, run: RunDir) -> None:
        """On node 0 after success: turn engine logs into metrics.jsonl, convert checkpoints."""
        ...
