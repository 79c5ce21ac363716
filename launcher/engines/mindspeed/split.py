"""Pipeline splits for MindSpeed-MM InternVL: how many ViT and LLM layers each stage holds.

Pure: no I/O, no launcher state. A split is two lists, `vit` and `llm`, one entry per
pipeline stage (`[24, 0, 0, 0]` / `[6, 9, 9, 8]`), or with virtual pipeline stages (VPP) one
inner list of PP entries per model chunk (`[[6, 7, 7, 4], [0, 0, 0, 0], [0, 0, 0, 0]]`).
Model order runs chunk by chunk: chunk 0 stages 0..PP-1, then chunk 1, ...; the ViT comes
first, then the LLM, as in every MindSpeed-MM v2.2.0 example (shared/specs/mindspeed_mm.md).

The same split must appear in model.json (`pipeline_num_layers`), in `mm-convert hf_to_mm`
(`--cfg.parallel_config.{llm,vit}_pp_layers`) and in any later `mm_to_hf`; MindSpeed-MM itself
only checks the list lengths at training start, so `validate` checks everything before submit:
lengths (PP, or VPP x PP), sums (= layer counts), ViT and LLM shapes equal, non-negative
integers, and `num_key_value_heads % tp == 0` (mm-convert's ConvertVppMMConfig rules).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

LLM_KEY = "parallelism.llm_pp_layers"
VIT_KEY = "parallelism.vit_pp_layers"


@dataclass(frozen=True, slots=True)
class Split:
    """One split; `vit`/`llm` are flat tuples (no VPP) or tuples of VPP tuples."""

    vit: tuple
    llm: tuple

    @property
    def nested(self) -> tuple[list[list[int]], list[list[int]]]:
        """mm-convert hf_to_mm's form: always a list of lists ([[24]] for PP=1)."""
        return _as_nested(self.vit), _as_nested(self.llm)

    def flat(self) -> tuple[list[int], list[int]]:
        """Model order, one entry per virtual stage (mm_to_hf's flat form when VPP=1)."""
        return _flatten(self.vit), _flatten(self.llm)


def _as_nested(x: tuple) -> list[list[int]]:
    if x and isinstance(x[0], tuple):
        return [list(inner) for inner in x]
    return [list(x)]


def _flatten(x: tuple) -> list[int]:
    if x and isinstance(x[0], tuple):
        return [v for inner in x for v in inner]
    return list(x)


def format_list(x: Any) -> str:
    """`[6,9,9,8]` / `[[0,0,0,1],[4,4,4,4]]`: the compact form mm-convert's CLI parses."""
    if isinstance(x, list | tuple):
        return "[" + ",".join(format_list(v) for v in x) + "]"
    return str(x)


@dataclass(frozen=True, slots=True)
class Problem:
    setting: str
    message: str


def balanced(
    vit_layers: int,
    llm_layers: int,
    pp: int,
    vpp: int | None = None,
    *,
    vit_layer_cost: float = 0.5,
    head_cost: float = 1.0,
) -> Split:
    """A split that minimises the most expensive (virtual) stage, then evens the rest out.

    Costs are in LLM layers: a ViT layer costs `vit_layer_cost`, the last stage also carries
    the LM head (`head_cost`). The ViT fills the first stages, the LLM follows, and every
    virtual stage gets at least one layer. Raises ValueError when there are fewer layers
    than virtual stages, or a count is out of range.
    """
    chunks = vpp or 1
    stages = pp * chunks
    n = vit_layers + llm_layers
    if pp < 1 or chunks < 1 or vit_layers < 0 or llm_layers < 0:
        raise ValueError(
            f"need pp >= 1, vpp >= 1 and layer counts >= 0 (got pp={pp}, vpp={vpp}, "
            f"vit={vit_layers}, llm={llm_layers})"
        )
    if n < stages:
        raise ValueError(
            f"{n} layers cannot fill {stages} pipeline stages (pp {pp} x vpp {chunks}) "
            "with at least one layer each"
        )

    def cost(i: int, j: int, last: bool) -> float:
        """Items [i, j): ViT layers are items 0..vit_layers-1, LLM layers follow."""
        v = max(0, min(j, vit_layers) - i)
        return v * vit_layer_cost + (j - i - v) + (head_cost if last else 0.0)

    # dp[s][i]: best (max stage cost, sum of squares) for stages 0..s-1 covering items [0, i)
    inf = (float("inf"), float("inf"))
    dp = [[inf] * (n + 1) for _ in range(stages + 1)]
    back = [[0] * (n + 1) for _ in range(stages + 1)]
    dp[0][0] = (0.0, 0.0)
    for s in range(1, stages + 1):
        last = s == stages
        lo, hi = s, n - (stages - s)  # leave at least one item for every later stage
        for j in range(lo, hi + 1):
            best, arg = inf, 0
            for i in range(s - 1, j):
                prev = dp[s - 1][i]
                if prev[0] == float("inf"):
                    continue
                c = cost(i, j, last)
                cand = (round(max(prev[0], c), 9), round(prev[1] + c * c, 9))
                if cand < best:
                    best, arg = cand, i
            dp[s][j], back[s][j] = best, arg
    bounds = [n]
    for s in range(stages, 0, -1):
        bounds.append(back[s][bounds[-1]])
    bounds.reverse()
    vit, llm = [], []
    for i, j in zip(bounds, bounds[1:], strict=False):
        v = max(0, min(j, vit_layers) - i)
        vit.append(v)
        llm.append(j - i - v)
    if vpp is None:
        return Split(tuple(vit), tuple(llm))
    return Split(
        tuple(tuple(vit[c * pp : (c + 1) * pp]) for c in range(chunks)),
        tuple(tuple(llm[c * pp : (c + 1) * pp]) for c in range(chunks)),
    )


def _shape_problems(key: str, value: Any, pp: int, vpp: int | None, example: str) -> list[Problem]:
    def is_count(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0

    if vpp is None:
        if not isinstance(value, list | tuple) or not all(is_count(v) for v in value):
            return [Problem(key, f"must be a list of {pp} layer counts >= 0, e.g. {example}")]
        if len(value) != pp:
            return [
                Problem(
                    key,
                    f"has {len(value)} entries but parallelism.pp is {pp}: one per stage, "
                    f"e.g. {example}",
                )
            ]
        return []
    if not isinstance(value, list | tuple) or not all(
        isinstance(inner, list | tuple) and all(is_count(v) for v in inner) for inner in value
    ):
        return [
            Problem(
                key,
                f"with parallelism.vpp={vpp} must be {vpp} lists of {pp} layer counts "
                f"(outer = vpp, inner = pp), e.g. {example}",
            )
        ]
    lengths = [len(inner) for inner in value]
    if len(value) != vpp or any(n != pp for n in lengths):
        return [
            Problem(
                key,
                f"is {len(value)} list(s) of {lengths} entries; parallelism.vpp={vpp} x "
                f"parallelism.pp={pp} needs {vpp} lists of {pp}, e.g. {example}",
            )
        ]
    return []


def validate(
    vit: Any,
    llm: Any,
    *,
    vit_layers: int,
    llm_layers: int,
    pp: int,
    vpp: int | None,
    tp: int,
    kv_heads: int,
    example: Split | None = None,
) -> list[Problem]:
    """Every problem with a split (user-given or computed), each naming the key and showing a
    valid split (`example`, default: the balanced one)."""
    out: list[Problem] = []
    if kv_heads and tp >= 1 and kv_heads % tp:
        divisors = [d for d in range(1, kv_heads + 1) if kv_heads % d == 0]
        out.append(
            Problem(
                "parallelism.tp",
                f"{tp} does not divide the LLM's {kv_heads} key/value heads "
                f"(num_key_value_heads % tp must be 0); use one of {divisors}",
            )
        )
    if example is None:
        try:
            example = balanced(vit_layers, llm_layers, pp, vpp)
        except ValueError as e:
            return [*out, Problem("parallelism.pp", str(e))]
    ex_vit, ex_llm = format_list(example.vit), format_list(example.llm)
    shape = _shape_problems(VIT_KEY, vit, pp, vpp, ex_vit)
    shape += _shape_problems(LLM_KEY, llm, pp, vpp, ex_llm)
    out += shape
    if shape:
        return out
    for key, value, want, ex, what in (
        (VIT_KEY, vit, vit_layers, ex_vit, "ViT"),
        (LLM_KEY, llm, llm_layers, ex_llm, "LLM"),
    ):
        total = sum(_flatten(_tuples(value)))
        if total != want:
            out.append(
                Problem(
                    key,
                    f"{format_list(value)} sums to {total}, but the {what} has {want} layers; "
                    f"e.g. {ex}",
                )
            )
    return out


def _tuples(x: Any) -> tuple:
    if isinstance(x, list | tuple):
        return tuple(_tuples(v) for v in x)
    return x


def resolve(
    vit: Any,
    llm: Any,
    *,
    vit_layers: int,
    llm_layers: int,
    pp: int,
    vpp: int | None,
    tp: int,
    kv_heads: int,
    vit_layer_cost: float = 0.5,
    head_cost: float = 1.0,
) -> tuple[Split | None, list[Problem]]:
    """The split to use: the user's lists where given (null = computed), checked.

    Giving only one of the two lists computes neither: the other must match the user's stage
    boundaries, which only the user knows, so a missing half is a problem with an example.
    """
    try:
        computed = balanced(
            vit_layers, llm_layers, pp, vpp, vit_layer_cost=vit_layer_cost, head_cost=head_cost
        )
    except ValueError as e:
        return None, [Problem("parallelism.pp", str(e))]
    if vit is None and llm is None:
        vit, llm = computed.vit, computed.llm
    elif vit is None or llm is None:
        given, missing = (LLM_KEY, VIT_KEY) if vit is None else (VIT_KEY, LLM_KEY)
        ex = computed.vit if vit is None else computed.llm
        return None, [
            Problem(
                missing,
                f"{given} is given, so give this one too (stage by stage, same shape); "
                f"e.g. {format_list(ex)} with {given}="
                f"{format_list(computed.llm if vit is None else computed.vit)}",
            )
        ]
    problems = validate(
        vit,
        llm,
        vit_layers=vit_layers,
        llm_layers=llm_layers,
        pp=pp,
        vpp=vpp,
        tp=tp,
        kv_heads=kv_heads,
        example=computed,
    )
    if problems:
        return None, problems
    return Split(_tuples(vit), _tuples(llm)), []
