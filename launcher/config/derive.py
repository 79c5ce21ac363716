"""Derived numbers, computed once with exact division and passed on to every later stage.

`derive(spec)` resolves the batch arithmetic (global = per-device x accumulation x world size)
and returns the `Derived` numbers, or None with the problems that prevent them.
"""

from __future__ import annotations

from launcher.config.spec import JobSpec, Problem
from launcher.contract import Derived


def resolve_batch(spec: JobSpec) -> tuple[tuple[int, int, int] | None, list[Problem]]:
    """global = per_device x accumulation x world size, exactly. Any two give the third.

    With fewer than two given on the command line, the model's defaults fill in:
    first its per_device_batch_size, then its global_batch_size, else accumulation 1.
    With tensor/pipeline/context parallelism only the data-parallel ranks count (the "world
    size" below is then world / (tp x pp x cp)).
    """
    world = spec.data_parallel_size
    pdb, ga, gbs = (
        spec.per_device_batch_size,
        spec.gradient_accumulation_steps,
        spec.global_batch_size,
    )
    problems = [
        Problem(name, f"must be a positive integer, got {value}")
        for name, value in (
            ("per_device_batch_size", pdb),
            ("gradient_accumulation_steps", ga),
            ("global_batch_size", gbs),
        )
        if value is not None and value < 1
    ]
    if problems or world < 1:
        return None, problems
    given = sum(v is not None for v in (pdb, ga, gbs))
    if given < 2 and pdb is None:
        pdb, given = spec.model.per_device_batch_size, given + 1
    if given < 2 and gbs is None and spec.model.global_batch_size is not None:
        gbs, given = spec.model.global_batch_size, given + 1
    if given < 2 and ga is None:
        ga = 1
    if gbs is None:
        return (pdb, ga, pdb * ga * world), []
    if ga is None:
        per_step = pdb * world
        if gbs % per_step:
            return None, [
                Problem(
                    "global_batch_size",
                    f"{gbs} is not a multiple of per_device_batch_size x world size = "
                    f"{pdb} x {world} = {per_step}; set global_batch_size to a multiple "
                    f"of {per_step} or give gradient_accumulation_steps",
                )
            ]
        return (pdb, gbs // per_step, gbs), []
    if pdb is None:
        per_device_total = ga * world
        if gbs % per_device_total:
            return None, [
                Problem(
                    "global_batch_size",
                    f"{gbs} is not a multiple of gradient_accumulation_steps x world size = "
                    f"{ga} x {world} = {per_device_total}",
                )
            ]
        return (gbs // per_device_total, ga, gbs), []
    if pdb * ga * world != gbs:
        return None, [
            Problem(
                "global_batch_size",
                f"{gbs} != per_device_batch_size x gradient_accumulation_steps x world size = "
                f"{pdb} x {ga} x {world} = {pdb * ga * world}; give only two of the three",
            )
        ]
    return (pdb, ga, gbs), []


def derive(spec: JobSpec) -> tuple[Derived | None, list[Problem]]:
    """The Derived numbers of `spec`, or None and the problems that prevent them."""
    batch, problems = resolve_batch(spec)
    if batch is None or spec.nodes < 1:
        return None, problems
    pdb, ga, gbs = batch
    mp = spec.parallelism.model_parallel_size
    derived = Derived(
        nodes=spec.nodes,
        gpus_per_node=spec.hw.devices_per_node,
        world_size=spec.world_size,
        per_device_batch_size=pdb,
        gradient_accumulation_steps=ga,
        global_batch_size=gbs,
        model_parallel_size=mp if mp >= 1 and spec.world_size % mp == 0 else 1,
    )
    return derived, problems
