"""Pipeline splits (launcher.engines.mindspeed.split): computed ones always validate, the seed's
examples validate, and sums off by one are refused, naming the key with a valid example."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from launcher.engines.mindspeed import split as S

# MindSpeed-MM v2.2.0 examples (shared/specs/mindspeed_mm.md, seed 004): (vit layers, llm
# layers, pp, vpp, vit split, llm split)
SEED_SPLITS = {
    "2B": (24, 24, 1, None, [24], [24]),
    "8B": (24, 32, 4, None, [24, 0, 0, 0], [6, 9, 9, 8]),
    "8B_vpp": (
        24, 32, 4, 3,
        [[6, 7, 7, 4], [0, 0, 0, 0], [0, 0, 0, 0]],
        [[0, 0, 0, 1], [4, 4, 4, 4], [4, 4, 4, 3]],
    ),
    "26B": (45, 48, 8, None, [38, 7, 0, 0, 0, 0, 0, 0], [0, 2, 8, 8, 8, 8, 8, 6]),
    "76B": (
        45, 80, 16, None,
        [11, 12, 12, 10] + [0] * 12,
        [0, 0, 0, 1, 5, 6, 7, 7, 7, 7, 7, 7, 7, 7, 6, 6],
    ),
    "76B_performance": (
        45, 80, 16, None,
        [11, 11, 11, 11, 1] + [0] * 11,
        [0, 0, 0, 0, 4, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 6],
    ),
}  # fmt: skip


def check(vit, llm, v, n, pp, vpp, tp=1, kv=8):
    return S.validate(vit, llm, vit_layers=v, llm_layers=n, pp=pp, vpp=vpp, tp=tp, kv_heads=kv)


@pytest.mark.parametrize("name", sorted(SEED_SPLITS))
def test_every_seed_split_validates(name):
    v, n, pp, vpp, vit, llm = SEED_SPLITS[name]
    assert check(vit, llm, v, n, pp, vpp) == []


def _bump(x, delta):
    """The same split with its last non-zero entry off by `delta`."""
    flat = [list(i) for i in x] if x and isinstance(x[0], list) else [list(x)]
    for inner in reversed(flat):
        for k in reversed(range(len(inner))):
            if inner[k] + delta >= 0 and (inner[k] or delta > 0):
                inner[k] += delta
                return flat if isinstance(x[0], list) else flat[0]
    raise AssertionError("no entry to change")


@pytest.mark.parametrize("name", sorted(SEED_SPLITS))
@pytest.mark.parametrize("delta", [-1, 1])
@pytest.mark.parametrize("which", ["vit", "llm"])
def test_sums_off_by_one_are_refused(name, delta, which):
    v, n, pp, vpp, vit, llm = SEED_SPLITS[name]
    if which == "vit":
        vit = _bump(vit, delta)
    else:
        llm = _bump(llm, delta)
    problems = check(vit, llm, v, n, pp, vpp)
    key = S.VIT_KEY if which == "vit" else S.LLM_KEY
    assert [p.setting for p in problems] == [key]
    message = problems[0].message
    assert f"sums to {(v if which == 'vit' else n) + delta}" in message
    example = message.rsplit("e.g. ", 1)[1]
    assert example.startswith("[")  # a valid split to copy


def test_the_example_in_an_error_is_itself_valid():
    problems = check([24, 0, 0, 0], [6, 9, 9, 9], 24, 32, 4, None)
    example = eval(problems[0].message.rsplit("e.g. ", 1)[1])  # noqa: S307 - our own output
    vit_ex = S.balanced(24, 32, 4).vit
    assert check(list(vit_ex), example, 24, 32, 4, None) == []


def test_shapes_lengths_and_tp():
    assert check([24, 0, 0], [6, 9, 9, 8], 24, 32, 4, None)[0].setting == S.VIT_KEY
    assert "outer = vpp" in check([24, 0, 0, 0], [6, 9, 9, 8], 24, 32, 4, 3)[0].message
    got = check([[24, 0, 0, 0]], [[6, 9, 9, 8], [0, 0, 0, 0]], 24, 32, 4, 2)
    assert {p.setting for p in got} == {S.VIT_KEY}
    assert "needs 2 lists of 4" in got[0].message
    assert check([24, 0, 0, -1], [6, 9, 9, 8], 24, 32, 4, None)[0].setting == S.VIT_KEY
    assert check([24, 0, 0, True], [6, 9, 9, 8], 24, 32, 4, None)[0].setting == S.VIT_KEY
    tp = check([24, 0, 0, 0], [6, 9, 9, 8], 24, 32, 4, None, tp=3, kv=8)
    assert [p.setting for p in tp] == ["parallelism.tp"]


def test_one_list_only_is_refused_with_an_example():
    split, problems = S.resolve(
        None, [6, 9, 9, 8], vit_layers=24, llm_layers=32, pp=4, vpp=None, tp=1, kv_heads=8
    )
    assert split is None and problems[0].setting == S.VIT_KEY


def test_too_many_stages_for_the_layers():
    with pytest.raises(ValueError, match="cannot fill"):
        S.balanced(2, 3, 6)
    split, problems = S.resolve(
        None, None, vit_layers=2, llm_layers=3, pp=6, vpp=None, tp=1, kv_heads=8
    )
    assert split is None and problems[0].setting == "parallelism.pp"


layouts = st.integers(1, 6).flatmap(
    lambda pp: st.tuples(
        st.just(pp),
        st.one_of(st.none(), st.integers(2, 3)) if pp >= 2 else st.none(),
    )
)


@settings(max_examples=60, deadline=None)
@given(
    vit=st.integers(0, 48),
    llm=st.integers(1, 48),
    layout=layouts,
    vit_cost=st.floats(0.01, 3.0),
    head_cost=st.floats(0.0, 3.0),
)
def test_any_valid_layout_gets_a_split_that_validates(vit, llm, layout, vit_cost, head_cost):
    pp, vpp = layout
    stages = pp * (vpp or 1)
    if vit + llm < stages:
        with pytest.raises(ValueError):
            S.balanced(vit, llm, pp, vpp)
        return
    got = S.balanced(vit, llm, pp, vpp, vit_layer_cost=vit_cost, head_cost=head_cost)
    vit_l = [list(i) for i in got.vit] if vpp else list(got.vit)
    llm_l = [list(i) for i in got.llm] if vpp else list(got.llm)
    assert check(vit_l, llm_l, vit, llm, pp, vpp) == []
    flat_vit, flat_llm = got.flat()
    # the ViT first: once a stage holds LLM layers, no later stage holds ViT layers
    first_llm = next((i for i, x in enumerate(flat_llm) if x), len(flat_llm))
    assert not any(flat_vit[first_llm + 1 :])
    assert all(a + b >= 1 for a, b in zip(flat_vit, flat_llm, strict=True))
    # balanced: no stage costs more than the best possible bound plus one layer
    costs = [a * vit_cost + b for a, b in zip(flat_vit, flat_llm, strict=True)]
    costs[-1] += head_cost
    ideal = (vit * vit_cost + llm + head_cost) / stages
    assert max(costs) <= ideal + max(1.0, vit_cost) + head_cost + 1e-9
