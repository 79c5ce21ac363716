"""compose -> check -> plan -> write -> dispatch, in one short function tests call directly."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile

from omegaconf import DictConfig, OmegaConf

from launcher import compose as composing
from launcher.check import check, memory_problem
from launcher.dispatch import dispatch, wait
from launcher.engines import get_engine
from launcher.engines.internvl import meta_entries
from launcher.plan import REPO, Plan, make_plan, node_python
from launcher.rundir import RunDir
from launcher.spec import ConfigError, JobSpec, Problem, to_spec


def plan_from_config(
    cfg: DictConfig, problems: list[Problem] | None = None, *, memory_is_fatal: bool = False
) -> tuple[Plan, JobSpec]:
    """Check and plan; raise ConfigError with every problem (compose's ones included).

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
    problems += found
    if derived is not None:
        problems += get_engine(spec.model.engine).check(spec, derived)
        if (too_big := memory_problem(spec, derived)) is not None:
            if memory_is_fatal:
                problems.append(too_big)
            else:
                warnings.append(f"{too_big} (an estimate: submitting anyway)")
    if not problems:
        problems += validate_data(spec)
    if problems:
        raise ConfigError(problems)
    config_yaml = OmegaConf.to_yaml(OmegaConf.create(data))
    return make_plan(spec, derived, config_yaml, warnings, provenance(config_yaml)), spec


def validate_data(spec: JobSpec) -> list[Problem]:
    """Pre-flight: run internvl_chat.tools.validate_data on the real data before submitting.

    It runs with the nodes' Python (it needs a tokenizer), as a subprocess so this side
    stays free of training imports. Skipped for dry runs, generated data and validate_data=false.
    """
    m, d = spec.model, spec.data
    if spec.dry_run or not spec.validate_data or d.generate or m.engine == "xtuner":
        return []
    metas = [p for p in (d.meta_file, d.eval_meta_file) if p]
    inline_meta = None
    if d.datasets:
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as tmp:
            json.dump(meta_entries(spec), tmp)
        metas.append(tmp.name)
        inline_meta = tmp.name
    try:
        return _run_validate(spec, metas, str(m.path or m.llm_path))
    finally:
        if inline_meta:
            os.unlink(inline_meta)


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
        ]
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
