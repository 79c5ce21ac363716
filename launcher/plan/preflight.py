"""The pre-flights `check` runs once the settings are right: memory and data.

`memory_estimate(spec, derived)` is the per-device memory estimate (launcher/plan/memory.py,
docs/MEMORY.md); `memory_problem` turns one above the device's memory into a problem.
`data_preflight(spec)` runs internvl_chat.tools.validate_data on the data: here, in the nodes'
interpreter, when this machine has it; else as a prepare step on node 0.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from dataclasses import dataclass

from launcher.config.datafacts import MetaRead
from launcher.config.generations import packed_row
from launcher.config.spec import JobSpec, Problem
from launcher.contract import Derived, PrepareStep
from launcher.engines import get_engine
from launcher.engines.internvl import meta_entries
from launcher.plan import site
from launcher.plan.jobscript import REPO
from launcher.rundir import RunDir


def memory_estimate(spec: JobSpec, derived: Derived, meta: MetaRead | None = None):
    """Per-device memory estimate (launcher/plan/memory.py, docs/MEMORY.md); None without dims."""
    from launcher.flops import check_countable
    from launcher.plan import memory
    from launcher.plan.lengths import sample_tokens

    if spec.parallelism.model_parallel_size > 1 or get_engine(spec.model.engine).megatron:
        return None  # ZeRO model states; pipeline/tensor sharding is not modelled (docs/MEMORY.md)
    try:
        dims = check_countable(spec.model.flops_dims)
    except ValueError:
        return None
    m = spec.model
    tokens, basis = sample_tokens(spec, meta)
    seq_len, tiles = spec.seq_len, m.max_tiles
    if (row := packed_row(spec)) is not None:  # a micro-batch sample is a whole packed row
        tokens, tiles, basis = row
        seq_len = tokens
    return memory.estimate(
        dims,
        trainable=m.trainable,
        zero_stage=spec.parallelism.zero_stage,
        gpus_per_node=derived.gpus_per_node,
        nodes=derived.nodes,
        per_device_batch=derived.per_device_batch_size,
        seq_len=seq_len,
        tiles_per_sample=tiles,
        grad_checkpoint=m.grad_checkpoint,
        offload_optimizer=spec.parallelism.offload_optimizer,
        offload_param=spec.parallelism.offload_param,
        tokens_per_sample=tokens,
        basis=basis,
    )


def memory_problem(spec: JobSpec, derived: Derived, est=None) -> Problem | None:
    """The estimate (`est`, else computed) above the device's memory, as a problem naming
    what to change."""
    est = memory_estimate(spec, derived) if est is None else est
    if est is None or spec.hw.accelerator == "cpu" or est.fits(spec.hw.memory_gb):
        return None
    return Problem(
        "parallelism",
        f"estimated {est.describe()} exceeds hw.memory_gb={spec.hw.memory_gb:g} "
        f"(zero_stage {spec.parallelism.zero_stage}, per-device batch {derived.per_device_batch_size}); "
        "use a higher ZeRO stage, offload, or a smaller per_device_batch_size",
    )


@dataclass(frozen=True, slots=True)
class DataPreflight:
    """The data pre-flight's result: problems found here, or steps node 0 runs first."""

    note: str
    problems: tuple[Problem, ...] = ()
    job_steps: tuple[PrepareStep, ...] = ()


def data_preflight(spec: JobSpec, nodes: site.NodePython) -> DataPreflight:
    """Run internvl_chat.tools.validate_data on the data before anything is submitted.

    It needs a tokenizer, so it runs in the nodes' environment: here, as a subprocess with
    the nodes' interpreter when this machine has it (the launcher never imports training
    code), else as the job's first step on node 0 (the login side needs no torch).
    """
    m, d = spec.model, spec.data
    if not spec.check_data:
        return DataPreflight("data: not checked (check_data=false)")
    if d.generate:
        return DataPreflight(f"data: {d.generate}, generated on node 0 (nothing to check)")
    if not get_engine(m.engine).preflight_data:
        return DataPreflight(f"data: not checked (engine {m.engine} reads it itself)")
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
    python, build = nodes.path, nodes.build
    if m.make_tiny or build is None or build.version is None:
        return _preflight_on_node0(spec, metas, entries, tokenizer, python)
    inline_meta = None
    if entries:
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as tmp:
            json.dump(entries, tmp)
        metas.append(tmp.name)
        inline_meta = tmp.name
    tolerated: list[str] = []
    try:
        problems = _run_validate(spec, python, metas, tokenizer, tolerated)
    finally:
        if inline_meta:
            os.unlink(inline_meta)
    where = f"with {python}"
    if problems:
        return DataPreflight(f"data: {len(problems)} problem(s) ({where})", tuple(problems))
    skipped = (
        f"; {len(tolerated)} sample problem(s) within data.max_bad_sample_ratio="
        f"{d.max_bad_sample_ratio:g}, first: {tolerated[0]}"
        if tolerated
        else ""
    )
    return DataPreflight(f"data: {len(metas)} meta file(s) OK ({where}){skipped}")


def _preflight_on_node0(spec, metas, entries, tokenizer, python) -> DataPreflight:
    run = RunDir(spec.run_dir)
    metas = [*metas, str(run.meta_json)] if entries else metas
    steps = tuple(
        PrepareStep(
            argv=(
                python, "-m", "internvl_chat.tools.validate_data", meta,
                "--model", tokenizer, f"--ok-file={run.data_ok(i)}",
                f"--max-bad-sample-ratio={spec.data.max_bad_sample_ratio}",
            ),
            creates=str(run.data_ok(i)),
        )
        for i, meta in enumerate(metas)
    )  # fmt: skip
    why = "the model is built on node 0" if spec.model.make_tiny else f"{python} is not usable here"
    return DataPreflight(f"data: checked by node 0 before training ({why})", job_steps=steps)


def _run_validate(
    spec: JobSpec, python: str, metas: list[str], tokenizer_dir: str, tolerated: list[str]
) -> list[Problem]:
    """Every `file:line: reason` validate_data prints, as problems (the first 50 per file)."""
    problems = []
    for meta in metas:
        argv = [
            python,
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
            # one bad-sample policy: the trainer skips up to this share of broken samples
            f"--max-bad-sample-ratio={spec.data.max_bad_sample_ratio}",
        ]
        if spec.model.system_message is not None:
            argv += ["--system-message", spec.model.system_message]
        out = subprocess.run(argv, capture_output=True, text=True, cwd=REPO)
        if out.returncode == 0:  # listed but within the policy (the last line says OK)
            tolerated += [x for x in out.stdout.splitlines() if x.strip()][:-1]
        else:
            lines = [
                x for x in out.stdout.splitlines() if x.strip()
            ] or out.stderr.strip().splitlines()[-3:]
            problems += [Problem("data", line) for line in lines[:50]]
            if len(lines) > 50:
                problems.append(
                    Problem("data", f"... and {len(lines) - 50} more (run: {' '.join(argv)})")
                )
            problems.append(policy_problem(spec))
    return problems


def policy_problem(spec: JobSpec) -> Problem:
    """What the pre-flight's refusal means and the two ways past it (one bad-sample policy)."""
    ratio = spec.data.max_bad_sample_ratio
    return Problem(
        "data.max_bad_sample_ratio",
        f"the data above has more broken samples than data.max_bad_sample_ratio={ratio:g} allows "
        "(or problems no ratio covers: meta file, settings); fix them, raise "
        "data.max_bad_sample_ratio (the trainer skips up to that share per dataset), or set "
        "check_data=false to leave the judgement to the trainer",
    )
