"""Checks `launcher.plan.check.check` runs beside the settings' rules: what the nodes would refuse
after the queue wait, refused here instead, plus the plan's data and steps lines.

`extra(spec, derived, est, problems, warnings)` adds to the check's lists the problems (meta
files that cannot be read, empty annotations, checkpoint folders without a config.json, the
engine's own (Engine.setup_problems: `engine_args` it does not know, a missing XTuner
environment), a local interpreter that cannot run here, epochs <= 0, a benchmark step target
the plan cannot reach, a model that cannot fit on hw=cpu) and warnings, and returns the derived
numbers with `optimizer_steps` filled in and the notes printed with the plan (data, steps, expected duration).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from launcher.config import datafacts
from launcher.config.spec import JobSpec, Problem
from launcher.contract import Derived
from launcher.engines import get_engine
from launcher.plan import steps
from launcher.plan.site import NodePython, SiteReport


def _model_dirs(spec: JobSpec) -> list[Problem]:
    m = spec.model
    if m.make_tiny:
        return []
    out = []
    for setting in ("model.path", "model.vision_path", "model.llm_path", "model.mlp_path"):
        path = getattr(m, setting.split(".")[1])
        if not path or not Path(path).exists():
            continue
        p = Path(path)
        if setting == "model.mlp_path":
            continue  # a projector checkpoint may be one file
        if not p.is_dir():
            out.append(Problem(setting, f"{path} is a file; name the checkpoint folder"))
        elif not (p / "config.json").is_file():
            what = "an empty folder" if not any(p.iterdir()) else "no config.json in it"
            out.append(Problem(setting, f"{path}: not a checkpoint ({what})"))
    return out


def _local_python(spec: JobSpec, nodes: NodePython) -> list[Problem]:
    """cluster=local runs the nodes' python on this machine: it must be runnable here."""
    if spec.cluster.kind != "local" or spec.dry_run:
        return []
    if get_engine(spec.model.engine).own_env(spec) is not None:
        return []  # the engine runs from its own environment (checked by its setup_problems)
    python, why = nodes.path, nodes.why
    if nodes.build is not None:
        return []
    return [
        Problem(
            "cluster.python",
            f"{python} ({why}) cannot be run on this machine, where cluster=local starts the "
            "job; name a training environment here (cluster.python=.venv/bin/python)",
        )
    ]


def _fits_cpu(spec: JobSpec, est) -> list[Problem]:
    if est is None or spec.hw.accelerator != "cpu" or est.fits(spec.hw.memory_gb):
        return []
    return [
        Problem(
            "hw",
            f"model {spec.model.name} needs about {est.total_gb:.0f} GiB per device (the memory "
            f"estimate); hw={spec.hw.name} ({spec.hw.memory_gb:g} GiB) is for tiny "
            "models: choose a GPU/NPU hw (e.g. hw=a800 nodes=4)",
        )
    ]


def extra(
    spec: JobSpec,
    derived: Derived | None,
    est,
    meta: datafacts.MetaRead,
    probed: SiteReport,
    problems: list[Problem],
    warnings: list[str],
) -> tuple[Derived | None, list[str]]:
    """Add this module's problems and warnings to the check's lists (in place); return the
    derived numbers with optimizer_steps and the notes for the plan."""
    found_problems = datafacts.data_problems(spec, meta) + _model_dirs(spec)
    more, more_warnings = get_engine(spec.model.engine).setup_problems(spec)
    found_problems += more + _fits_cpu(spec, est) + _local_python(spec, probed.python)
    found = [] if found_problems else datafacts.datasets(spec, meta)
    samples = datafacts.total_samples(found)
    found_problems += steps.step_problems(spec, derived, samples)
    problems += found_problems
    warnings += more_warnings
    if derived is None or problems:
        return derived, []
    derived = dataclasses.replace(
        derived, optimizer_steps=steps.optimizer_steps(spec, derived, samples)
    )
    notes = [datafacts.data_line(spec, found), steps.steps_line(spec, derived, samples)]
    when = steps.duration_line(spec, derived, samples, meta)
    return derived, notes + ([when] if when else [])


def tracker_python(spec: JobSpec, nodes: NodePython) -> str:
    """The python that runs the experiment tracker on the nodes: the engine's own env's
    (XTuner's), else the nodes' python."""
    own = get_engine(spec.model.engine).own_env(spec)
    if own is not None:
        return str(own / "bin" / "python")
    return nodes.path
