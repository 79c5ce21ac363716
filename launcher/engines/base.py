"""What every engine provides to the planner, the checker, the node task and `status`.

An engine knows *how processes start* (torchrun + our trainer, torchrun + the official
InternVL script, `xtuner train`, MindSpeed-MM's pretrain script); it does not know where they
run. Argv and env strings may hold the placeholders `{master_addr}` and `{master_port}`, filled
in on the node once the rendezvous is known (launcher.node.task).

Every rule that differs by engine is a method or an attribute here, so that no module outside
launcher/engines/ asks for an engine by name (tests/test_engines_registry.py). The engines
register in launcher.engines.ENGINES.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from launcher.config.datafacts import MetaRead
from launcher.config.spec import JobSpec, Problem
from launcher.contract import Derived, NodeLaunch, Outcome, Plan, PrepareStep
from launcher.rundir import RunDir


class Engine(Protocol):
    name: str
    """model.engine, the key it is registered under."""
    megatron: bool
    """Shards with Megatron (tp/pp/cp, parallelism=megatron) instead of DeepSpeed ZeRO; the
    ZeRO memory model does not apply to it."""
    needs_zero: bool
    """Runs only under a DeepSpeed ZeRO stage 1-3 (parallelism=zero1/zero2/zero3)."""
    preflight_data: bool
    """The launcher's data pre-flight applies (False: the engine reads the data itself)."""
    tracks: bool
    """Experiment tracking (tracking=wandb/mlflow) is supported."""
    wandb_by_itself: bool
    """The trainer opens and ends its own W&B run (the node task opens none for it)."""
    saves_on_stop: bool
    """The trainer honours RUN_DIR/control/stop by saving at the next step boundary; the others
    resume from their last periodic checkpoint after a requeue."""
    resume_how: str
    """How a resumed attempt continues (printed by `launch.py resume`)."""

    # planning, on the login node -------------------------------------------------------
    def check(self, spec: JobSpec, derived: Derived, meta: MetaRead) -> list[Problem]:
        """Engine-specific problems (e.g. a ZeRO stage it cannot use); `meta`: the data as the
        check stage read it (never read again here)."""
        ...

    def model_problems(self, spec: JobSpec) -> list[Problem]:
        """The model settings the engine needs (checked with the other model rules)."""
        ...

    def setup_problems(self, spec: JobSpec) -> tuple[list[Problem], list[str]]:
        """Problems and warnings about engine_args and the engine's own environment."""
        ...

    def required_paths(self, spec: JobSpec) -> list[tuple[str, str | None]]:
        """(setting, path) the engine reads besides the model and data paths."""
        ...

    def own_env(self, spec: JobSpec) -> Path | None:
        """The environment the engine runs everything from on the nodes, the tracker included
        (XTuner's), instead of the nodes' python; None: the nodes' python trains."""
        ...

    def steps_per_epoch(self, spec: JobSpec, derived: Derived, samples: int) -> int:
        """Optimizer steps in one epoch of `samples` samples."""
        ...

    def optimizer_steps(self, spec: JobSpec, derived: Derived, samples: int) -> int:
        """Optimizer steps of `spec.epochs` epochs (max_steps unset, the samples known)."""
        ...

    def precision(self, spec: JobSpec) -> str:
        """What the engine trains in, as plan.json states it (usually hw.precision)."""
        ...

    def plan_record(self, spec: JobSpec, derived: Derived) -> Mapping[str, Any] | None:
        """plan.json's `megatron` record (the Megatron layout), None for other engines."""
        ...

    def files(self, spec: JobSpec, derived: Derived, run: RunDir, meta: MetaRead) -> dict[str, str]:
        """Files the job reads, as run-dir-relative name -> text; `meta.entries`: the meta JSON
        the job reads (paths absolute; None: not readable here), as the check stage read it."""
        ...

    def prepare(self, spec: JobSpec, run: RunDir, python: str) -> list[PrepareStep]: ...

    def node_launch(
        self, spec: JobSpec, derived: Derived, run: RunDir, node_rank: int, python: str
    ) -> NodeLaunch: ...

    # on the nodes, and `status` / `resume` on the login node ------------------------------
    def resume_argv(self, run: RunDir, argv: list[str]) -> tuple[list[str], str | None]:
        """The argv of a (re)started attempt, and a line to log when it resumes."""
        ...

    def last_checkpoint_step(self, run: RunDir) -> int | None:
        """The step of the newest checkpoint a requeued attempt would resume from."""
        ...

    def outcome(self, plan: Plan, run: RunDir, returncode: int) -> Outcome:
        """On node 0 after the child exits: did training really succeed?"""
        ...

    def finalize(self, plan: Plan, run: RunDir) -> None:
        """On node 0 after success: turn engine logs into metrics.jsonl, convert checkpoints."""
        ...


def batches_per_epoch(derived: Derived, samples: int) -> int:
    """Per-device batches one data-parallel rank reads in an epoch of `samples` samples."""
    per_rank = math.ceil(samples / derived.data_parallel_size)
    return math.ceil(per_rank / derived.per_device_batch_size)


def tree_unread(spec: JobSpec) -> list[Problem]:
    """model.internvl_tree set for an engine that does not read it (all but the official)."""
    if not spec.model.internvl_tree:
        return []
    return [
        Problem(
            "model.internvl_tree",
            f"only picks the official tree (engine=internvl_official); engine "
            f"{spec.model.engine} ignores it: leave it null or set "
            "model.engine=internvl_official",
        )
    ]


def unknown_engine_args(spec: JobSpec, known: set[str], where: str = "") -> list[Problem]:
    """engine_args the engine does not know, each with the closest known name."""
    import difflib

    out = []
    for k in spec.engine_args:
        if k not in known:
            close = difflib.get_close_matches(k, sorted(known), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            message = f"unknown to engine {spec.model.engine}{where}{hint}"
            out.append(Problem(f"engine_args.{k}", message))
    return out


class Defaults:
    """What most engines answer; an engine inherits it and overrides what differs."""

    megatron = False
    needs_zero = False
    preflight_data = True
    tracks = True
    wandb_by_itself = False
    saves_on_stop = False

    def model_problems(self, spec: JobSpec) -> list[Problem]:
        return []

    def setup_problems(self, spec: JobSpec) -> tuple[list[Problem], list[str]]:
        return tree_unread(spec), []

    def required_paths(self, spec: JobSpec) -> list[tuple[str, str | None]]:
        return []

    def own_env(self, spec: JobSpec) -> Path | None:
        return None

    def precision(self, spec: JobSpec) -> str:
        return spec.hw.precision

    def plan_record(self, spec: JobSpec, derived: Derived) -> Mapping[str, Any] | None:
        return None

    def resume_argv(self, run: RunDir, argv: list[str]) -> tuple[list[str], str | None]:
        """The trainer resumes by itself: the argv as planned."""
        return argv, None

    def finalize(self, plan: Plan, run: RunDir) -> None:
        return None
