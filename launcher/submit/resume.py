"""python launch.py resume RUN_DIR [key=value ...]

Continue a cancelled, failed, time-limited or requeue-exhausted run from its newest valid
checkpoint, as a new attempt in the same run dir: the same plan (or the plan re-made with the
overrides that keep the checkpoint valid, launcher.submit.resume_rules), the history kept (the ended
attempt's job.json, summary.json and requeues under logs/attempt-K/, one line per resume in
logs/resumes.jsonl), metrics.jsonl continued with every step once. Each engine resumes the way
it does after a requeue (Engine.resume_argv on node 0): our trainer from the newest valid
checkpoint-N by itself, the official script with resume_from_checkpoint, XTuner with
resume=True and load_from, MindSpeed with --load on the run's output dir.

Bad input is refused before anything is moved, written or submitted: every problem at once,
each naming the setting, exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from typing import Any

from launcher.config import compose as composing
from launcher.config.spec import ConfigError, JobSpec, Problem
from launcher.contract import Plan
from launcher.engines import get_engine
from launcher.rundir import RunDir
from launcher.submit.resume_rules import changed_keys, refusal

ENDED = {"COMPLETED", "FAILED", "CANCELLED", "STOPPED", "TIMEOUT", "NODE_FAIL", "PREEMPTED",
         "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "ENDED-WITHOUT-SUMMARY"}  # fmt: skip
"""States (status, squeue %T) of a run whose job will not run again by itself."""


@dataclass(frozen=True)
class Resume:
    """A checked resume, nothing written yet."""

    run: RunDir
    spec: JobSpec
    plan: Plan
    replanned: bool
    changed: tuple[str, ...]
    overrides: tuple[str, ...]
    from_step: int | None
    previous: dict[str, Any]


def prepare(run_dir: str, overrides: list[str]) -> Resume:
    """Every check of a resume; raises ConfigError with every problem, nothing written."""
    from omegaconf import OmegaConf

    from launcher.config.spec import to_spec
    from launcher.node.checkpoints import last_step
    from launcher.plan.check import check
    from launcher.submit.jobctl import state
    from launcher.submit.pipeline import plan_checked

    run = RunDir(run_dir)
    if not run.plan_json.is_file() or not run.config_yaml.is_file():
        raise ConfigError([Problem("RUN_DIR", f"{run.root} is not a run dir (no plan.json)")])
    old_plan = Plan.load(run.root)
    problems: list[Problem] = []
    st = state(run)
    job = json.loads(run.job_json.read_text()) if run.job_json.exists() else {}
    summary = run.summary() or {}
    if st == "PLANNED" and run.resumes():
        st = "NOT-SUBMITTED"  # the last resume set the attempt aside, then could not submit
    elif st == "PLANNED":
        problems.append(Problem("RUN_DIR", f"{run.root} was planned only (a dry run), never "
                                "submitted: launch it instead of resuming it"))  # fmt: skip
    elif st not in ENDED and st != "NOT-SUBMITTED":
        ident = job.get("job_id") or job.get("pid")
        todo = "wait until it has left the queue" if st == "COMPLETING" else "cancel it first"
        problems.append(Problem("RUN_DIR", f"its job {ident} is still {st}: {todo} "
                                f"(python launch.py cancel|status {run.root})"))  # fmt: skip
    from_step = last_step(run, old_plan.engine)

    cfg = OmegaConf.load(run.config_yaml)
    old = OmegaConf.to_container(cfg)
    parsed, bad = composing.parse_overrides(list(overrides), multirun=False)
    problems += bad
    from hydra.core.override_parser.overrides_parser import OverridesParser

    for o in OverridesParser.create().parse_overrides(parsed) if parsed else []:
        key = o.key_or_group
        if o.is_add() or o.is_delete() or key in composing.GROUPS:
            why = refusal(f"{key}.", old_plan.zero_stage, old_plan.derived.world_size)
            problems.append(Problem(key, "a resume sets settings of the run, not config groups "
                                    f"or new keys{'; ' + why if why else ''}"))  # fmt: skip
            continue
        if OmegaConf.select(cfg, key, default=KeyError) is KeyError:
            problems.append(composing._suggest(Problem(key, "unknown setting"), cfg))
            continue
        OmegaConf.update(cfg, key, o.value(), merge=False)
    new = OmegaConf.to_container(cfg)
    changed = changed_keys(old, new)
    for key in changed:
        why = refusal(key, old_plan.zero_stage, old_plan.derived.world_size)
        if why is not None:
            problems.append(Problem(key, f"cannot change on resume: {why}"))
    if st == "COMPLETED":
        done = summary.get("steps") or 0
        if "max_steps" not in changed or (new.get("max_steps") or 0) <= done:
            problems.append(Problem("RUN_DIR", f"already completed ({done} steps); to train "
                                    f"further give max_steps above {done}"))  # fmt: skip
    new["run_dir"] = old_plan.run_dir  # plan.json's: absolute, whatever the cwd now
    try:
        spec = to_spec(new)
    except ConfigError as e:
        problems += e.problems
    if problems:
        raise ConfigError(problems)
    checked = check(spec, data=False)  # the data is the run's own (data.* is refused)
    left = [p for p in checked.problems if not _run_dir_exists(p)]
    if spec.max_steps is not None and from_step is not None and spec.max_steps <= from_step:
        left.append(Problem("max_steps", f"{spec.max_steps} is not beyond the checkpoint's "
                            f"step {from_step}: nothing left to train"))  # fmt: skip
    if left:
        raise ConfigError(left)
    if [k for k in changed if k not in ("wait", "dry_run")]:
        checked = dataclasses.replace(checked, problems=())
        plan = plan_checked(OmegaConf.create(new), spec, checked)
        plan = dataclasses.replace(plan, prepare=old_plan.prepare)  # the run's data steps
        plan.files[run.plan_json.name] = plan.to_json()
    else:
        plan = old_plan
    previous = {
        "attempt": run.attempt(),
        "job_id": job.get("job_id") or job.get("pid"),
        "state": st,
        "reason": summary.get("reason"),
        "requeues": len(run.requeues()),
        "metrics_step": (run.metrics() or [{}])[-1].get("step"),
    }
    return Resume(run, spec, plan, plan is not old_plan, tuple(changed), tuple(overrides), from_step,
                  previous)  # fmt: skip


def _run_dir_exists(p: Problem) -> bool:
    return p.setting == "run_dir" and "already exists" in p.message


SET_ASIDE = ("job.json", "summary.json", "logs/requeues.jsonl", "logs/prepared")


def commit(r: Resume) -> None:
    """Put the ended attempt's records under logs/attempt-K/, write the changed plan files
    (their old text kept there too), and record the resume in logs/resumes.jsonl."""
    run = r.run
    keep = run.attempt_dir(r.previous["attempt"])
    keep.mkdir(parents=True, exist_ok=True)
    moved = [run.root / rel for rel in SET_ASIDE]
    moved += list(run.logs_dir.glob("summary.attempt-*.json"))
    moved += list(run.logs_dir.glob("node*.exit.json"))
    for path in moved:
        if path.exists():
            os.replace(path, keep / path.name)
    run.stop_file.unlink(missing_ok=True)
    written = []
    for name, text in r.plan.files.items():
        target = run.root / name
        if target.exists() and target.read_text() == text:
            continue
        if target.exists():
            (keep / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(target, keep / name)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.resume")
        tmp.write_text(text)
        os.replace(tmp, target)
        written.append(name)
    run.add_resume({
        "attempt": r.previous["attempt"] + 1,
        "at": time.time(),
        "resume_step": r.from_step,
        "overrides": list(r.overrides),
        "changed": list(r.changed),
        "files_changed": written,
        "requeues": r.previous["requeues"],
        "previous": r.previous,
    })  # fmt: skip


def describe(r: Resume) -> list[str]:
    prev = r.previous
    step = "step 0 (no valid checkpoint yet)" if r.from_step is None else f"step {r.from_step}"
    lines = [
        f"[resume] {r.run.root}: attempt {prev['attempt']} ended {prev['state']}"
        + (f" ({prev['reason']})" if prev.get("reason") else "")
        + f", metrics up to step {prev['metrics_step'] or 0}",
        f"[resume] attempt {prev['attempt'] + 1} continues from {step}: "
        + get_engine(r.plan.engine).resume_how,
    ]
    if r.replanned:
        lines.append(f"[resume] changed: {', '.join(r.changed)} (the plan is re-made)")
    if {"max_steps", "epochs"} & set(r.changed):
        lines.append("[resume] note: the learning-rate schedule follows the new length from "
                     "here on, so the steps after the resume differ from the first plan's")  # fmt: skip
    return lines


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python launch.py resume", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("run_dir", help="the run dir to continue")
    p.add_argument("overrides", nargs="*", help="key=value settings that keep the checkpoint valid")
    a = p.parse_args(argv)
    # one resume of a run at a time: a lock on the run dir itself (nothing written for it)
    fd = os.open(a.run_dir if os.path.isdir(a.run_dir) else os.devnull, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"another resume of {a.run_dir} is under way", file=sys.stderr)
        return 2
    try:
        return _resume(a.run_dir, a.overrides)
    finally:
        os.close(fd)


def _resume(run_dir: str, overrides: list[str]) -> int:
    """Check, set the ended attempt aside, dispatch (under the run's resume lock)."""
    from launcher.submit.dispatch import dispatch, wait

    try:
        r = prepare(run_dir, overrides)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 2
    for line in describe(r):
        print(line)
    if r.spec.dry_run:
        print("[resume] dry run: nothing moved, written or submitted")
        return 0
    commit(r)
    try:
        sub = dispatch(r.spec, r.plan)
    except Exception as e:  # sbatch refused, submitit failed: the resume can be run again
        print(f"[resume] could not submit: {e!r}; once fixed: python launch.py resume "
              f"{r.run.root}", file=sys.stderr)  # fmt: skip
        return 1
    ident = f"job {sub.job_id}" if sub.job_id else f"pid {sub.pid}"
    print(f"[resume] submitted {ident}; run dir {r.run.root}", flush=True)
    if r.spec.should_wait:
        return wait(sub)
    print(f"[resume] follow it: python launch.py status --watch {r.run.root}")
    return 0
