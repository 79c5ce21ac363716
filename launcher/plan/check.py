"""The one check stage: every problem with a JobSpec before anything is written or submitted.

`check(spec)` runs, in order, the settings' own rules (batch arithmetic: config.derive; hw/ZeRO/
model, benchmark, paths, run dir, reliability), the engine's checks, the memory pre-flight, what
the login node sees of the site (plan.site.probe) and, once nothing else is wrong, the data
pre-flight (plan.preflight). It returns one `Checked`: the derived numbers, every problem (each
naming the setting to change), warnings, and what was checked.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launcher.config import datafacts, generations, tracking
from launcher.config.derive import derive
from launcher.config.spec import JobSpec, Problem
from launcher.contract import Derived
from launcher.engines import ENGINES, get_engine
from launcher.plan import check_extra, site
from launcher.plan.bounds import bounds, too_big
from launcher.plan.preflight import DataPreflight, data_preflight, memory_estimate, memory_problem

NOT_CHECKED = DataPreflight("data: not checked (fix the problems above first)")


@dataclass(frozen=True, slots=True)
class Checked:
    """What the check stage found, and what the plan takes from it (nothing is recomputed)."""

    derived: Derived | None
    problems: tuple[Problem, ...]
    warnings: tuple[str, ...]
    notes: tuple[str, ...]
    """Lines printed before submitting: the site probe's, the data pre-flight's, `checked: ...`."""
    memory: Any = None
    """launcher.plan.memory's estimate (None without model dims), recorded in plan.json."""
    preflight: DataPreflight = NOT_CHECKED
    probed: site.SiteReport | None = None  # the nodes' python, sinfo's partition: found once
    meta: datafacts.MetaRead | None = None  # the data's files, read once: engines render from it


def check(spec: JobSpec, *, memory_is_fatal: bool = False, data: bool = True) -> Checked:
    """Every problem at once. A memory estimate above the device's is a warning (it is an
    estimate) unless `memory_is_fatal` (sweep points, then not submitted). What a dry run cannot
    require yet (paths, sbatch) is a warning. `data=False` skips the data pre-flight (the
    caller already has problems); it also waits for every other problem to be fixed."""
    derived, problems, warnings = _rules(spec)
    checked = ["settings", "batch arithmetic", "hw/ZeRO/model rules"]
    checked += [f"benchmark {spec.benchmark.name} rules"] if spec.benchmark.name != "none" else []
    est, meta = None, datafacts.read_meta(spec)  # data.meta_file: read once, passed on
    probed = site.probe(spec)  # its problems come after the rules' (below)
    if derived is not None:
        engine = get_engine(spec.model.engine)
        problems += engine.check(spec, derived, meta)
        tracker = check_extra.tracker_python(spec, probed.python)
        problems += tracking.check(spec, tracker, supported=engine.tracks)
        est = memory_estimate(spec, derived, meta)
        too_big = memory_problem(spec, derived, est)
        if est is not None:
            fits = f"{'fits' if too_big is None else 'does NOT fit'} {spec.hw.memory_gb:g}"
            fits = "not checked on CPU" if spec.hw.accelerator == "cpu" else fits
            checked.append(f"memory ({est.total_gb:.1f} GiB/device, {fits})")
        if too_big is not None:
            if memory_is_fatal:
                problems.append(too_big)
            else:
                warnings.append(f"{too_big} (an estimate: submitting anyway)")
    derived, more_notes = check_extra.extra(spec, derived, est, meta, probed, problems, warnings)
    missing = sum(w.endswith("(dry run: not required now)") for w in warnings)
    checked.append(f"paths ({missing} missing here)" if missing else "paths")
    checked.append("run dir")
    problems += probed.problems
    warnings += probed.warnings
    checked += probed.checked
    preflight = data_preflight(spec, probed.python) if data and not problems else NOT_CHECKED
    problems += preflight.problems
    notes = (*probed.lines, *more_notes, preflight.note, "checked: " + ", ".join(checked))
    return Checked(derived, tuple(problems), tuple(warnings), notes, est, preflight, probed, meta)


def lookup(spec: Any, dotted: str) -> Any:
    obj = spec
    for part in dotted.split("."):
        obj = obj[part] if isinstance(obj, dict) else getattr(obj, part)
    return obj


def _rules(spec: JobSpec) -> tuple[Derived | None, list[Problem], list[str]]:
    """The settings' own rules: (derived numbers or None, problems, warnings)."""
    problems: list[Problem] = bounds(spec)
    warnings: list[str] = []
    if too_big(spec):  # nothing sized by nodes or devices may be built from them
        return None, problems, warnings
    derived, batch_problems = derive(spec)
    batch = None if derived is None else derived.global_batch_size
    problems += batch_problems
    problems += _check_hw(spec)
    problems += _check_parallelism(spec)
    problems += _check_model(spec) + generations.check(spec)
    problems += _check_benchmark(spec, batch)
    missing = _missing_paths(spec)
    if spec.dry_run:
        warnings += [f"{p.setting}: {p.message} (dry run: not required now)" for p in missing]
    else:
        problems += missing
        problems += _check_cluster_tools(spec)
    problems += _check_run_dir(spec)
    problems += _check_reliability(spec)
    return derived, problems, warnings


def _check_hw(spec: JobSpec) -> list[Problem]:
    hw = spec.hw
    out = []
    if hw.gres:
        count = hw.gres.rsplit(":", 1)[-1]
        if not count.isdigit() or int(count) != hw.devices_per_node:
            out.append(
                Problem(
                    "hw.gres",
                    f"'{hw.gres}' does not ask for hw.devices_per_node={hw.devices_per_node} "
                    f"devices (write e.g. gpu:{hw.devices_per_node})",
                )
            )
    timeout = hw.env.get("HCCL_CONNECT_TIMEOUT")
    if timeout is not None and not (str(timeout).isdigit() and 120 <= int(timeout) <= 7200):
        out.append(
            Problem(
                "hw.env.HCCL_CONNECT_TIMEOUT",
                f"{timeout!r} is outside HCCL's range of 120..7200 seconds (e.g. 1200)",
            )
        )
    visible = hw.env.get("ASCEND_RT_VISIBLE_DEVICES")
    if visible is not None and len(str(visible).split(",")) != hw.devices_per_node:
        out.append(
            Problem(
                "hw.env.ASCEND_RT_VISIBLE_DEVICES",
                f"'{visible}' lists {len(str(visible).split(','))} NPU(s) but "
                f"hw.devices_per_node={hw.devices_per_node} (e.g. "
                f"{','.join(map(str, range(hw.devices_per_node)))})",
            )
        )
    if hw.accelerator == "cpu" and hw.precision != "fp32" and not spec.model.make_tiny:
        out.append(Problem("hw.precision", "fp32 on CPUs (bf16 is ~100x slower; tiny only)"))
    if hw.accelerator == "cpu" and hw.dist_backend != "gloo":
        out.append(Problem("hw.dist_backend", "CPU processes communicate with gloo"))
    return out


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _nearest_pp(world: int, tp_cp: int, pp: int) -> int:
    """The pipeline size closest to `pp` that makes tp x pp x cp divide `world`."""
    fits = [p for p in _divisors(world) if world % (p * tp_cp) == 0] or [1]
    return min(fits, key=lambda p: (abs(p - pp), p))


def _check_parallelism(spec: JobSpec) -> list[Problem]:
    par = spec.parallelism
    out = []
    if (par.offload_optimizer or par.offload_param) and spec.hw.accelerator == "cpu":
        out.append(
            Problem(
                "parallelism",
                f"{par.name} offloads to CPU memory; hw=cpu has nothing to offload from (use zero1/zero2/zero3)",
            )
        )
    if par.offload_param and par.zero_stage != 3:
        out.append(Problem("parallelism.offload_param", "parameter offload needs zero_stage 3"))
    for key in ("tp", "pp", "cp"):
        if getattr(par, key) < 1:
            out.append(Problem(f"parallelism.{key}", f"must be >= 1, got {getattr(par, key)}"))
    if par.vpp is not None and (par.vpp < 1 or par.pp < 2):
        out.append(
            Problem(
                "parallelism.vpp",
                f"{par.vpp}: virtual pipeline stages need vpp >= 1 and parallelism.pp >= 2 "
                "(e.g. parallelism.pp=4 parallelism.vpp=3), or vpp=null",
            )
        )
    mp = par.model_parallel_size
    if mp >= 1 and spec.world_size % mp:
        out.append(
            Problem(
                "parallelism",
                f"world size {spec.world_size} is not a multiple of tp x pp x cp = "
                f"{par.tp} x {par.pp} x {par.cp} = {mp}; tp x pp x cp must divide "
                f"{spec.world_size} (one of {_divisors(spec.world_size)}), e.g. "
                f"parallelism.pp={_nearest_pp(spec.world_size, par.tp * par.cp, par.pp)}, "
                "or change nodes",
            )
        )
    megatron_keys = mp > 1 or par.vpp is not None or par.llm_pp_layers or par.vit_pp_layers
    engine = get_engine(spec.model.engine)
    if engine.megatron and par.zero_stage != 0:
        out.append(
            Problem(
                "parallelism",
                f"{par.name} (ZeRO stage {par.zero_stage}) is DeepSpeed; engine {engine.name} "
                "shards with Megatron (tp/pp/cp and its distributed optimizer): use "
                "parallelism=megatron",
            )
        )
    elif not engine.megatron and megatron_keys:
        megatron = ", ".join(f"model.engine={n}" for n in ENGINES if get_engine(n).megatron)
        out.append(
            Problem(
                "parallelism",
                f"tp/pp/vpp/cp and pipeline splits are for {megatron}; "
                f"engine {engine.name} uses DeepSpeed ZeRO (parallelism=zero1/zero2/zero3)",
            )
        )
    if par.zero_stage == 0 and engine.needs_zero:
        out.append(
            Problem(
                "parallelism", f"engine {spec.model.engine} runs with a DeepSpeed ZeRO stage 1-3"
            )
        )
    return out


def _check_model(spec: JobSpec) -> list[Problem]:
    out = get_engine(spec.model.engine).model_problems(spec)
    if spec.max_steps is not None and spec.max_steps < 1:
        out.append(Problem("max_steps", f"must be >= 1 or null, got {spec.max_steps}"))
    if spec.seq_len < 16:
        out.append(Problem("seq_len", f"{spec.seq_len} is too short"))
    if spec.lr <= 0:
        out.append(Problem("lr", f"must be > 0, got {spec.lr}"))
    return out


def _check_benchmark(spec: JobSpec, global_batch: int | None) -> list[Problem]:
    b = spec.benchmark
    origin = f"benchmark {b.name}" + (f" (seed {b.seed})" if b.seed else "")
    out = []
    for key, wanted in b.locked.items():
        try:
            actual = lookup(spec, key)
        except (AttributeError, KeyError):
            out.append(Problem(f"benchmark.locked.{key}", "names no setting"))
            continue
        if actual != wanted:
            free = f"; free to change: {', '.join(b.allowed)}" if b.allowed else ""
            out.append(Problem(key, f"is locked to {wanted!r} by {origin}; got {actual!r}{free}"))
    if (
        b.max_global_batch_size is not None
        and global_batch is not None
        and global_batch > b.max_global_batch_size
    ):
        out.append(
            Problem(
                "global_batch_size",
                f"{global_batch} exceeds {b.max_global_batch_size}, the most {origin} allows",
            )
        )
    return out


def _exists(path: str | None) -> bool:
    return path is not None and Path(path).exists()


def _missing_paths(spec: JobSpec) -> list[Problem]:
    m, d = spec.model, spec.data
    out = []
    # a tiny model is built on the first node (prepare step): its paths need not exist yet
    model_paths = [
        ("model.path", m.path),
        ("model.vision_path", m.vision_path),
        ("model.llm_path", m.llm_path),
        ("model.mlp_path", m.mlp_path),
    ]
    if m.make_tiny:
        model_paths = []
    model_paths += [("model.internvl_root", m.internvl_root)]
    model_paths += get_engine(m.engine).required_paths(spec)
    data_paths = (
        []
        if d.generate
        else [
            ("data.meta_file", d.meta_file),
            ("data.eval_meta_file", d.eval_meta_file),
            ("data.json_path", d.json_path),
            ("data.image_folder", d.image_folder),
        ]
    )
    if not d.generate:
        for name, entry in d.datasets.items():
            data_paths += [
                (f"data.datasets.{name}.root", entry.root),
                (f"data.datasets.{name}.annotation", entry.annotation),
            ]
    for setting, path in model_paths + data_paths:
        if path is not None and not _exists(path):
            out.append(Problem(setting, f"path does not exist: {path}"))
    return out


def _check_cluster_tools(spec: JobSpec) -> list[Problem]:
    c = spec.cluster
    if c.kind == "slurm" and shutil.which("sbatch") is None:
        return [
            Problem(
                "cluster",
                "cluster=slurm but sbatch is not on PATH (run on a login node, or use cluster=local)",
            )
        ]
    if c.kind == "wrapper":
        if not c.command:
            return [Problem("cluster.command", "the wrapper command is empty")]
        if shutil.which(c.command[0]) is None:
            return [Problem("cluster.command", f"{c.command[0]!r} is not on PATH")]
    return []


def _check_reliability(spec: JobSpec) -> list[Problem]:
    c, out = spec.cluster, []
    if c.max_requeues < 0:
        out.append(Problem("cluster.max_requeues", f"must be >= 0, got {c.max_requeues}"))
    if c.collective_timeout_s < 10:
        out.append(Problem("cluster.collective_timeout_s", "must be >= 10 (seconds)"))
    limit_s = c.time_min * 60 if c.time_min is not None else float("inf")
    if c.kind == "slurm" and not 10 <= c.signal_delay_s < limit_s:
        out.append(
            Problem(
                "cluster.signal_delay_s",
                f"must be >= 10 s and below the time limit ({c.time_min} min), got {c.signal_delay_s}",
            )
        )
    return out


def _check_run_dir(spec: JobSpec) -> list[Problem]:
    run = Path(spec.run_dir)
    if "\n" in spec.run_dir:
        return [Problem("run_dir", "must not contain a newline")]
    if run.exists() and not run.is_dir():
        return [
            Problem(
                "run_dir",
                f"{run} is a file, not a folder; choose a new or empty folder (nothing is overwritten)",
            )
        ]
    if run.exists() and any(run.iterdir()):
        return [
            Problem(
                "run_dir",
                f"{run} already exists and is not empty; choose another run_dir (nothing is overwritten)",
            )
        ]
    if os.path.exists(run.parent) and not os.access(run.parent, os.W_OK):
        return [Problem("run_dir", f"cannot write to {run.parent}")]
    return []
