"""How many optimizer steps a run takes, how long that should last, and the benchmark's target.

`optimizer_steps(spec, derived, samples)` counts them the way the engine that runs will:
max_steps when given, else from the samples per epoch (x repeat_time), the epochs and the batch,
by the engine's rule (Engine.optimizer_steps: our trainer and the official one: a
DistributedSampler over the data-parallel ranks, no drop_last, optimizer steps = micro-batches
// accumulation per epoch; XTuner: mmengine epochs of micro-batches, the last partial
accumulation steps too; MindSpeed-MM: samples x epochs // global batch). `duration_line` gives
an expected duration from the newest completed run of the same model on the same hw under
runs_root, else from hw peak x an MFU assumption (stated).
`step_problems` refuses epochs <= 0 and a benchmark plan that cannot reach its step target.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from launcher.config.datafacts import MetaRead
from launcher.config.spec import JobSpec, Problem
from launcher.contract import Derived
from launcher.engines import get_engine
from launcher.rundir import RunDir

ASSUMED_MFU = 0.35
"""The MFU the expected duration assumes when no run of this model on this hw says better."""


def optimizer_steps(spec: JobSpec, derived: Derived, samples: int | None) -> int | None:
    """The optimizer steps the run takes (None: the sample count is not known here)."""
    if spec.max_steps is not None:
        return spec.max_steps
    if samples is None or spec.epochs <= 0:
        return None
    return get_engine(spec.model.engine).optimizer_steps(spec, derived, samples)


def step_target(spec: JobSpec) -> int | None:
    """The optimizer steps the benchmark's verdict needs (seed 000: > 250, seed 001: 500)."""
    t = spec.benchmark.target
    n = t.get("min_steps") or t.get("within_steps")
    return int(n) if n else None


def step_problems(spec: JobSpec, derived: Derived | None, samples: int | None) -> list[Problem]:
    out = []
    if spec.max_steps is None and spec.epochs <= 0:
        out.append(Problem("epochs", f"must be > 0 (or give max_steps), got {spec.epochs}"))
    need = step_target(spec)
    if derived is None or need is None or out:
        return out
    steps = optimizer_steps(spec, derived, samples)
    b = spec.benchmark
    origin = f"benchmark {b.name}" + (f" (seed {b.seed})" if b.seed else "")
    if steps is None:
        out.append(
            Problem(
                "max_steps",
                f"{origin} needs {need} optimizer steps and the sample count of data "
                f"{spec.data.name} is not known here; set max_steps={need}",
            )
        )
    elif steps < need:
        fix = f"max_steps={need}"
        if spec.max_steps is None and samples:
            per = get_engine(spec.model.engine).steps_per_epoch(spec, derived, samples)
            fix += f" or epochs={math.ceil(need / per)}"
        out.append(
            Problem(
                "max_steps" if spec.max_steps is not None else "epochs",
                f"the plan takes {steps} optimizer step(s) (global batch "
                f"{derived.global_batch_size}); {origin} needs at least {need}: set {fix}",
            )
        )
    return out


def steps_line(spec: JobSpec, derived: Derived, samples: int | None) -> str:
    steps = optimizer_steps(spec, derived, samples)
    if steps is None:
        return "steps: unknown (the data's sample count is not known here; max_steps=N fixes it)"
    if spec.max_steps is not None:
        how = f"max_steps={spec.max_steps}"
    else:
        how = f"{samples:,} samples x {spec.epochs:g} epoch(s) / global batch {derived.global_batch_size}"
    return f"steps: {steps} optimizer steps ({how})"


def _metrics_rate(run: RunDir) -> float | None:
    """Mean samples/s of a finished run's steps after the first two (warm-up)."""
    try:
        rates = [r.get("samples_per_sec") for r in run.metrics()][2:]
    except (OSError, ValueError):
        return None
    rates = [r for r in rates if isinstance(r, (int, float)) and r > 0]
    return sum(rates) / len(rates) if rates else None


def measured_rate(spec: JobSpec, derived: Derived) -> tuple[float, str] | None:
    """Samples/s from the newest completed run of this model on this hw under runs_root,
    scaled linearly to this run's device count (and where it came from)."""
    root = Path(spec.runs_root)
    if not root.is_dir():
        return None
    plans = sorted(root.glob("*/plan.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    for plan_json in plans[:50]:
        run = RunDir(plan_json.parent)
        try:
            plan = json.loads(plan_json.read_text())
            summary = json.loads(run.summary_json.read_text())
        except (OSError, ValueError):
            continue
        same = (plan.get("model"), plan.get("hw")) == (spec.model.name, spec.hw.name)
        if not same or summary.get("status") != "completed" or not plan.get("world_size"):
            continue
        rate = summary.get("sps") or _metrics_rate(run)
        if rate:
            scaled = rate / plan["world_size"] * derived.world_size
            return scaled, (
                f"run {run.root.name}: {rate:.3g} samples/s on {plan['world_size']} device(s), "
                f"scaled to {derived.world_size}"
            )
    return None


def duration_line(
    spec: JobSpec, derived: Derived, samples: int | None, meta: MetaRead | None = None
) -> str | None:
    """Expected training time: from an earlier run of this model on this hw when there is one,
    else from hw peak x ASSUMED_MFU (None without model dims)."""
    from launcher.flops import check_countable, sample_flops
    from launcher.plan.lengths import sample_tokens

    steps = optimizer_steps(spec, derived, samples)
    if steps is None:
        return None
    measured = measured_rate(spec, derived)
    if measured is not None:
        seconds = steps * derived.global_batch_size / measured[0]
        return f"expected duration: about {_human(seconds)} ({measured[1]})"
    if not spec.hw.peak_tflops:
        return None
    try:
        dims = check_countable(spec.model.flops_dims)
    except ValueError:
        return None
    tokens, _ = sample_tokens(spec, meta)
    flops = sample_flops(dims, llm_tokens=tokens, trainable=spec.model.trainable)
    rate = derived.world_size * spec.hw.peak_tflops * 1e12 * ASSUMED_MFU
    seconds = steps * derived.global_batch_size * flops / rate
    return (
        f"expected duration: about {_human(seconds)} (hw {spec.hw.name} peak {spec.hw.peak_tflops:g} TFLOPs "
        f"x assumed MFU {ASSUMED_MFU:.0%}, {tokens} tokens/sample; no earlier run to go by)"
    )


def _human(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"
