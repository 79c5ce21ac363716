"""What every node-side engine provides to the planner and to the node task.

An engine knows *how processes start* (torchrun + our trainer, torchrun + the official
InternVL script, `xtuner train`); it does not know where they run. Argv and env strings may
hold the placeholders `{master_addr}` and `{master_port}`, filled in on the node once the
rendezvous is known (launcher.node.task).
"""

from __future__ import annotations

from typing import Protocol

from launcher.config.spec import JobSpec, Problem
from launcher.contract import Derived, NodeLaunch, Outcome, PrepareStep
from launcher.rundir import RunDir


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
