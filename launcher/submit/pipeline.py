"""compose -> spec -> check -> plan -> write -> dispatch: `run(cfg)` calls each stage once."""

from __future__ import annotations

import hashlib
import shlex
import subprocess
import sys

from omegaconf import DictConfig, OmegaConf

from launcher import snapshot
from launcher.config import compose as composing
from launcher.config import run_name
from launcher.config.settings import overrides_record
from launcher.config.spec import ConfigError, JobSpec, Problem, to_spec
from launcher.contract import Plan
from launcher.plan.check import Checked, check
from launcher.plan.jobscript import REPO, sbatch_flags
from launcher.plan.make import make_plan
from launcher.rundir import RunDir
from launcher.submit.dispatch import dispatch, wait


def to_checked_spec(
    cfg: DictConfig, problems: list[Problem] | None = None, *, memory_is_fatal: bool = False
) -> tuple[JobSpec, Checked]:
    """spec -> check; raise ConfigError with every problem (compose's ones included).

    A dry run runs every check a real run does (the data pre-flight too, unless
    check_data=false). Sweep points pass `memory_is_fatal` (launcher.plan.check.check says why).
    """
    problems = list(problems or [])
    try:
        spec = to_spec(composing.to_container(cfg))
    except ConfigError as e:
        raise ConfigError(problems + e.problems) from None
    checked = check(spec, memory_is_fatal=memory_is_fatal, data=not problems)
    if problems or checked.problems:
        raise ConfigError([*problems, *checked.problems])
    return spec, checked


def plan_checked(
    cfg: DictConfig, spec: JobSpec, checked: Checked, code: snapshot.Snapshot | None = None
) -> Plan:
    """The plan stage, with the resolved config and where it came from (`code`: the snapshot
    the nodes will run, taken now if not given)."""
    config_yaml = OmegaConf.to_yaml(OmegaConf.create(composing.to_container(cfg)))
    code = code or snapshot.take(REPO)
    return make_plan(spec, checked, config_yaml, {**provenance(config_yaml), **code.provenance()})


def plan_from_config(
    cfg: DictConfig, problems: list[Problem] | None = None, *, memory_is_fatal: bool = False
) -> tuple[Plan, JobSpec]:
    """spec -> check -> plan, nothing written (what tests and dry-run tools call)."""
    spec, checked = to_checked_spec(cfg, problems, memory_is_fatal=memory_is_fatal)
    return plan_checked(cfg, spec, checked), spec


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
    cfg: DictConfig,
    problems: list[Problem] | None = None,
    *,
    sweep_point: bool = False,
    applied: list[str] | None = None,
    differs: list[str] | None = None,
) -> int:
    """Plan, write the run dir, and (unless dry_run) dispatch. Returns an exit status.

    `applied`: the overrides Hydra applied, recorded in overrides.yaml with the command line
    (and, for a sweep point, `differs`: its overrides that differ between points)."""
    spec, checked = to_checked_spec(cfg, problems, memory_is_fatal=sweep_point)  # spec, check
    code = snapshot.take(REPO)  # what the nodes will run, whatever the checkout becomes
    plan = plan_checked(cfg, spec, checked, code)  # plan
    print(
        f"[launch] {spec.model.name} on {spec.nodes} x {spec.hw.name} via {spec.cluster.kind}: {plan.summary()}"
    )
    if plan.slurm is not None:
        print(f"[launch] slurm: {sbatch_flags(plan.slurm.parameters())}")
    for note in plan.notes:
        print(f"[launch] {note}")
    for w in plan.warnings:
        print(f"[launch] warning: {w}")
    run_dir = RunDir(plan.run_dir)
    record = overrides_record(sys.argv, applied or [], differs)
    files = {**plan.files, run_dir.relative(run_dir.overrides_yaml): record}
    try:
        run_dir.materialize(files, code.files)  # write
    except OSError:
        taken = run_name.next_name(plan.run_dir)  # a launch beside ours took the default name
        if taken is None or not run_dir.root.exists():
            raise
        OmegaConf.update(cfg, "run_dir", taken)
        return run(cfg, problems, sweep_point=sweep_point, applied=applied, differs=differs)
    if spec.dry_run:
        print(f"[launch] dry run: plan written to {run_dir.root} (nothing submitted)")
        return 0
    try:
        sub = dispatch(spec, plan, checked.probed.partition if checked.probed else None)  # dispatch
    except Exception as e:  # sbatch refused it (submitit's FailedJobError), a wrapper missing, ...
        reason = f"not submitted: {type(e).__name__}: {str(e).strip()}"
        run_dir.write_summary({"status": "failed", "reason": reason})  # status: FAILED, not PLANNED
        print(f"[launch] error: {reason}\n[launch] run dir {run_dir.root} marked failed "
              "(summary.json); nothing runs", file=sys.stderr)  # fmt: skip
        return 1
    ident = f"job {sub.job_id}" if sub.job_id else f"pid {sub.pid}"
    print(f"[launch] submitted {ident}; run dir {run_dir.root}", flush=True)
    here = shlex.quote(str(run_dir.root))
    if spec.should_wait:
        rc = wait(sub)
        print(f"[launch] next: python launch.py report {here}  "
              "(report.md, metrics.csv and the loss curve loss.png)")  # fmt: skip
        return rc
    print(f"[launch] follow it: python launch.py status|logs|cancel {here}; once it ended: "
          f"python launch.py report {here} (report.md, loss.png)")  # fmt: skip
    return 0


def main(overrides: list[str]) -> int:
    try:
        cfg, problems = composing.compose(overrides)
        return run(cfg, problems, applied=overrides)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 2
