"""MindSpeed-MM's published InternVL2 pipeline splits (v2.2.0 `examples/internvl2/model_*.json`).

Users convert their weights with these splits and MindSpeed-MM publishes its figures for them,
so a job without `parallelism.{vit,llm}_pp_layers` uses the recipe's split where one exists
for that model and PP/VPP, and the balanced split (launcher.engines.mindspeed.split) otherwise.
`choose(spec)` says which, for plan.json. Facts: shared/specs/mindspeed_mm.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from launcher.config.spec import JobSpec
from launcher.engines.mindspeed import split as splits


@dataclass(frozen=True, slots=True)
class Recipe:
    vit: tuple
    llm: tuple
    source: str


def _z(n: int) -> tuple[int, ...]:
    return (0,) * n


# (model, pp, vpp) -> the split of MindSpeed-MM v2.2.0's example for it
RECIPES: dict[tuple[str, int, int | None], Recipe] = {
    ("internvl2_8b", 4, None): Recipe(
        (24, 0, 0, 0), (6, 9, 9, 8), "examples/internvl2/model_8B.json"
    ),
    ("internvl2_8b", 4, 3): Recipe(
        ((6, 7, 7, 4), _z(4), _z(4)),
        ((0, 0, 0, 1), (4, 4, 4, 4), (4, 4, 4, 3)),
        "examples/internvl2/model_8B_vpp.json",
    ),
    ("internvl2_26b", 8, None): Recipe(
        (38, 7, *_z(6)), (0, 2, 8, 8, 8, 8, 8, 6), "examples/internvl2/model_26B.json"
    ),
    ("internvl2_76b", 16, None): Recipe(
        (11, 12, 12, 10, *_z(12)),
        (0, 0, 0, 1, 5, 6, 7, 7, 7, 7, 7, 7, 7, 7, 6, 6),
        "examples/internvl2/model_76B.json",
    ),
}


def recipe(spec: JobSpec) -> Recipe | None:
    """The published split for this model and PP/VPP, if it fits the model's layer counts."""
    par, d = spec.parallelism, spec.model.dims
    found = RECIPES.get((spec.model.name, par.pp, par.vpp))
    if found is None:
        return None
    problems = splits.validate(
        found.vit, found.llm, vit_layers=d.vit.layers, llm_layers=d.llm.layers, pp=par.pp,
        vpp=par.vpp, tp=1, kv_heads=0, example=splits.Split(found.vit, found.llm),
    )  # fmt: skip
    return None if problems else found


def source(spec: JobSpec) -> str:
    """Where this job's split comes from, as plan.json says it."""
    par = spec.parallelism
    if par.vit_pp_layers is not None or par.llm_pp_layers is not None:
        return "given: parallelism.vit_pp_layers / parallelism.llm_pp_layers"
    if (r := recipe(spec)) is not None:
        return f"MindSpeed-MM v2.2.0 recipe ({r.source})"
    return "computed: balanced by layer cost (no MindSpeed-MM recipe for this model and pp/vpp)"
