"""compose -> check -> plan -> write -> dispatch, in one short function tests call directly."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass

from omegaconf import DictConfig, OmegaConf

from launcher import compose as composing
from launcher import site
from launcher.check import check, memory_estimate, memory_problem
from launcher.dispatch import dispatch, wait
from launcher.engines import get_engine
from launcher.engines.base import PrepareStep
from launcher.engines.internvl import meta_entries
from launcher.plan import REPO, Plan, make_plan, node_python, sbatch_flags
from launcher.rundir import RunDir
from launcher.spec import ConfigError, JobSpec, Problem, to_spec


def plan_from_config(
    cfg: DictConfig, problems: list[Problem] | None = None, *, memory_is_fatal: bool = False
) -> tuple[Plan, JobSpec]:
    """Check and plan; raise ConfigError with every problem (compose's ones included).

    A dry run runs every check a real run does (the data pre-flight too, unless
    check_data=false); what a dry run cannot require yet (paths, sbatch) is a warning.
    A memory estimate above the device's is a warning for a single run (it is an estimate)
    and a problem for sweep points (`memory_is_fatal`), which are then not submitted.
    """
    problems = list(problems or [])
    data = composing.to_container(cfg)
    try:
        spec = to_spec(data)
    except ConfigError as e:
        raise ConfigError(problems + e.problems) from None
    derived, found, warnings = check(spec)
    checked = ["settings", "batch arithmetic", "hw/ZeRO/model rules"]
    checked += [f"benchmark {spec.benchmark.name} rules"] if spec.benchmark.name != "none" else []
    problems += found
    if derived is not None:
        problems += get_engine(spec.model.engine).check(spec, derived)
        too_big = memory_problem(spec, derived)
        est = memory_estimate(spec, derived)
        if est is not None:
            fits = "fits" if too_big is None else "does NOT fit"
            checked.append(f"memory ({est.total_gb:.1f} GiB/device, {fits} {spec.hw.memory_gb:g})")
        if too_big is not None:
            if memory_is_fatal:
                problems.append(too_big)
            else:
                warnings.append(f"{too_big} (an estimate: submitting anyway)")
    missing = sum(w.endswith("(dry run: not required now)") for w in warnings)
    checked.append(f"paths ({missing} missing here)" if missing else "paths")
    checked.append("run dir")
    probed = site.probe(spec)
    problems += probed.problems
    warnings += probed.warnings
    checked += probed.checked
    preflight = DataPreflight(note="data: not checked (fix the problems above first)")
    if not problems:
        preflight = data_preflight(spec)
        problems += preflight.problems
    if problems:
        raise ConfigError(problems)
    config_yaml = OmegaConf.to_yaml(OmegaConf.create(data))
    notes = (*probed.lines, preflight.note, "checked: " + ", ".join(checked))
    plan = make_plan(
        spec,
        derived,
        config_yaml,
        warnings,
        provenance(config_yaml),
        notes=notes,
        data_steps=preflight.job_steps,
    )
    return plan, spec


@dataclass(frozen=True, slots=True)
class DataPreflight:
    """The data pre-flight's result: problems found here, or steps node 0 runs first."""

    note: str
    problems: tuple[Problem, ...] = ()
    job_steps: tuple[PrepareStep, ...] = ()


def data_preflight(spec: JobSpec) -> DataPreflight:
    """Run internvl_chat.tools.validate_data on the data before anything is submitted.

    It needs a tokenizer, so it runs in the nodes' environment: here, as a subprocess with
    the nodes' interpreter when this machine has it (the launcher never imports training
    code), else as the job's first step on node 0 (the login side needs no torch).
    """
    m, d = spec.model, spec.data
    if not spec.data_checked:
        return DataPreflight("data: not checked (check_data=false)")
    if d.generate:
        return DataPreflight(f"data: {d.generate}, generated on node 0 (nothing to check)")
    if m.engine == "xtuner":
        return DataPreflight("data: not checked (engine xtuner reads it itself)")
    metas = [p for p in (d.meta_file, d.eval_meta_file) if p]
    entries = meta_entries(spec) if d.datasets and not d.meta_file else {}
    tokenizer = str(m.path or m.llm_path)
    # what the check stage knows of (a user meta file's own entries are validate_data's to judge)
    paths = [e[k] for e in (entries or {}).values() for k in ("root", "annotation")]
    paths += metas + ([] if m.make_tiny else [tokenizer])
    absent = [p for p in paths if isinstance(p, str) and not os.path.exists(p)]
    if absent:
        # a dry run on another machine: check() already warned about the paths it knows
        return DataPreflight(f"data: not checked ({len(absent)} path(s) not on this machine)")
    python = node_python(spec)
    build = site.torch_build(python)
    if m.make_tiny or build is None or build.version is None:
        return _preflight_on_node0(spec, metas, entries, tokenizer, python)
    inline_meta = None
    if entries:
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as tmp:
            json.dump(entries, tmp)
        metas.append(tmp.name)
        inline_meta = tmp.name
    try:
        problems = _run_validate(spec, metas, tokenizer)
    finally:
        if inline_meta:
            os.unlink(inline_meta)
    where = f"with {python}"
    if problems:
        return DataPreflight(f"data: {len(problems)} problem(s) ({where})", tuple(problems))
    return DataPreflight(f"data: {len(metas)} meta file(s) OK ({where})")


def _preflight_on_node0(spec, metas, entries, tokenizer, python) -> DataPreflight:
    run = RunDir(spec.run_dir)
    metas = [*metas, str(run.meta_json)] if entries else metas
    steps = tuple(
        PrepareStep(
            argv=(
                python, "-m", "internvl_chat.tools.validate_data", meta,
                "--model", tokenizer, f"--ok-file={run.logs_dir / f'data-ok-{i}'}",
            ),
            creates=str(run.logs_dir / f"data-ok-{i}"),
        )
        for i, meta in enumerate(metas)
    )  # fmt: skip
    why = "the model is built on node 0" if spec.model.make_tiny else f"{python} is not usable here"
    return DataPreflight(f"data: checked by node 0 before training ({why})", job_steps=steps)


def _run_validate(spec: JobSpec, metas: list[str], tokenizer_dir: str) -> list[Problem]:
    """Every `file:line: reason` validate_data prints, as problems (the first 50 per file)."""
    problems = []
    for meta in metas:
        argv = [
            node_python(spec),
            "-m",
            "internvl_chat.tools.validate_data",
            meta,
            "--model",
            tokenizer_dir,
            # the template, revision and prompt training uses (prompt length moves truncation)
            "--conv-style",
            spec.model.template,
            "--revision",
            spec.model.internvl_revision,
            "--max-seq-length",
            str(spec.seq_len),
        ]
        if spec.model.system_message is not None:
            argv += ["--system-message", spec.model.system_message]
        out = subprocess.run(argv, capture_output=True, text=True, cwd=REPO)
        if out.returncode != 0:
            lines = [
                x for x in out.stdout.splitlines() if x.strip()
            ] or out.stderr.strip().splitlines()[-3:]
            problems += [Problem("data", line) for line in lines[:50]]
            if len(lines) > 50:
                problems.append(
                    Problem("data", f"... and {len(lines) - 50} more (run: {' '.join(argv)})")
                )
    return problems


def provenance(config_yaml: str) -> dict[str, str | bool | None]:
    """Where this plan came from: the resolved config's hash and our git revision."""

    def git(*args: str) -> str | None:
        out = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)
        return out.stdout.strip() if out.returncode == 0 else None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {
        "config_sha256": hashlib.sha256(config_yaml.encode()).hexdigest(),
        "git_revision": git("rev-parse", "HEAD"),
        "git_dirty": bool(status) if status is not None else None,
    }


def run(
    cfg: DictConfig, problems: list[Problem] | None = None, *, sweep_point: bool = False
) -> int:
    """Plan, write the run dir, and (unless dry_run) dispatch. Returns an exit status."""
    plan, spec = plan_from_config(cfg, problems, memory_is_fatal=sweep_point)
    print(
        f"[launch] {spec.model.name} on {spec.nodes} x {spec.hw.name} via {spec.cluster.kind}: {plan.summary()}"
    )
    if plan.slurm is not None:
        print(f"[launch] slurm: {sbatch_flags(plan.slurm)}")
    for note in plan.notes:
        print(f"[launch] {note}")
    for w in plan.warnings:
        print(f"[launch] warning: {w}")
    run_dir = RunDir(plan.run_dir)
    run_dir.materialize(plan.files)
    if spec.dry_run:
        print(f"[launch] dry run: plan written to {run_dir.root} (nothing submitted)")
        return 0
    sub = dispatch(spec, plan)
    ident = f"job {sub.job_id}" if sub.job_id else f"pid {sub.pid}"
    print(f"[launch] submitted {ident}; run dir {run_dir.root}", flush=True)
    if spec.should_wait:
        return wait(sub)
    return 0


def main(overrides: list[str]) -> int:
    try:
        cfg, problems = composing.compose(overrides)
        return run(cfg, problems)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 2
