"""Checks `launcher.plan.check.check` runs beside the settings' rules: what the nodes would refuse
after the queue wait, refused here instead, plus the plan's data and steps lines.

`extra(spec, derived, est, problems, warnings)` adds to the check's lists the problems (meta files that cannot be read, empty annotations, checkpoint folders without a
config.json, `engine_args` names the engine does not know, a missing XTuner environment or
local interpreter,
epochs <= 0, a benchmark step target the plan cannot reach, a model that cannot fit on hw=cpu)
and warnings, and returns the derived numbers with `optimizer_steps` filled in and the notes
printed with the plan (data, steps, expected duration).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from launcher.config import datafacts
from launcher.config.spec import JobSpec, Problem
from launcher.contract import Derived
from launcher.plan import steps


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


def known_engine_args(spec: JobSpec) -> set[str] | None:
    """The `+engine_args.*` names the engine that runs accepts (None: the engine checks them)."""
    engine = spec.model.engine
    if engine == "internvl_chat":
        from internvl_chat.train import args as train_args  # torch-free (its docstring says)

        return {f.name for f in dataclasses.fields(train_args.TrainArgs)} | train_args.IGNORED_KEYS
    if engine == "internvl_official":
        from launcher.engines.internvl import TRAINING_ARGS
        from launcher.engines.official import trees
        from launcher.engines.official.engine import ENGINE_ARGS

        return trees.allowed_args(spec.model) | TRAINING_ARGS | set(ENGINE_ARGS)
    return None


def _engine(spec: JobSpec) -> tuple[list[Problem], list[str]]:
    problems: list[Problem] = []
    warnings: list[str] = []
    known = known_engine_args(spec)
    if known is not None:
        rev = ""
        if "official" in spec.model.engine:
            from launcher.engines.official import trees

            rev = (
                f" at internvl_revision={spec.model.internvl_revision} ({trees.tree(spec.model)}/)"
            )
        for k in spec.engine_args:
            if k not in known:
                import difflib

                close = difflib.get_close_matches(k, sorted(known), n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                problems.append(
                    Problem(f"engine_args.{k}", f"unknown to engine {spec.model.engine}{rev}{hint}")
                )
    if spec.model.internvl_tree and spec.model.engine != "internvl_official":
        problems.append(
            Problem(
                "model.internvl_tree",
                f"only picks the official tree (engine=internvl_official); engine "
                f"{spec.model.engine} ignores it: leave it null or set "
                "model.engine=internvl_official",
            )
        )
    if spec.model.engine == "internvl_official" and (spec.model.packed or spec.data.packed):
        warnings.append(
            "model.packed: the official packed dataset keeps no data position (its 'TODO: quick "
            "resume'): a requeue or resume restores the model and optimizer from the checkpoint "
            "but reads the data from the start again (engine=internvl_chat resumes it exactly)"
        )
    if spec.model.engine == "xtuner":
        from launcher.engines.xtuner.render import DEFAULT_ENV

        env = Path(spec.engine_args.get("xtuner_env") or DEFAULT_ENV)
        if not (env / "bin" / "xtuner").exists():
            msg = (
                f"no XTuner environment at {env} ({env}/bin/xtuner missing): build it with "
                "`bash xtuner_cfgs/make_env.sh`, or name one with +engine_args.xtuner_env=PATH"
            )
            if spec.dry_run:
                warnings.append(f"engine_args.xtuner_env: {msg} (dry run: not required now)")
            else:
                problems.append(Problem("engine_args.xtuner_env", msg))
    return problems, warnings


def _local_python(spec: JobSpec) -> list[Problem]:
    """cluster=local runs the nodes' python on this machine: it must be runnable here."""
    if spec.cluster.kind != "local" or spec.dry_run or spec.model.engine == "xtuner":
        return []
    from launcher.plan import site

    python, why = site.node_python(spec)
    if site.torch_build(python) is not None:
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
    spec: JobSpec, derived: Derived | None, est, problems: list[Problem], warnings: list[str]
) -> tuple[Derived | None, list[str]]:
    """Add this module's problems and warnings to the check's lists (in place); return the
    derived numbers with optimizer_steps and the notes for the plan."""
    found_problems = datafacts.data_problems(spec) + _model_dirs(spec)
    more, more_warnings = _engine(spec)
    found_problems += more + _fits_cpu(spec, est) + _local_python(spec)
    found = [] if found_problems else datafacts.datasets(spec)
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
    when = steps.duration_line(spec, derived, samples)
    return derived, notes + ([when] if when else [])


def tracker_python(spec: JobSpec) -> str:
    """The python that runs the experiment tracker on the nodes: the XTuner env's for
    model.engine=xtuner, else the nodes' python."""
    if spec.model.engine == "xtuner":
        from launcher.engines.xtuner.engine import XTunerEngine

        return str(XTunerEngine().env_dir(spec) / "bin" / "python")
    from launcher.plan.site import node_python

    return node_python(spec)[0]
