"""Loss parity: our trainer (engine=internvl_chat) and the official InternVL trainer
(engine=internvl_official, the checkouts in shared/upstream, edited copy, fp32 through B1)
give the same per-step losses for the same tiny checkpoint, data, sample order and
hyper-parameters: within 1e-4 relative over 20 steps in fp32, 2e-3 in bf16 (issue 19, item 5).

Each case is two real launches (cluster=local, 2 processes, DeepSpeed ZeRO-1/2): about a
minute per case on 2 idle cores. CI runs the pinned revision with ZeRO-1 in fp32 and in bf16
(both sides load the model in bf16, as the official code does, and train with DeepSpeed's bf16;
a tiny model trains in bf16 on this CPU in seconds) and with ZeRO-2 + freeze_llm (seed 000's
freeze flags), and the newest revision with Qwen2 and ZeRO-2, without and with LoRA (both sides
seed each adapter by its module name and use no LoRA dropout: the official code through its
edit P1, ours through lora_parity_init); VLM_FULL_PARITY=1 adds the other revision x LLM pairs,
bf16 at head, and InternLM2 LoRA, a strict xfail: the official code puts one adapter on the
fused wqkv, ours one on each of q, k and v (docs/DIFFERENCES.md).
Needs .venv-internvl (bash setup.sh --official): skips without it, fails under CI=true.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from internvl_chat.tools.make_synthetic import make_synthetic

REPO = Path(__file__).resolve().parents[1]
UPSTREAM = REPO.parent / "shared" / "upstream"
CHECKOUTS = {"pin": UPSTREAM / "InternVL-764fdc9", "head": UPSTREAM / "InternVL-2410d1d"}
OFFICIAL_PY = REPO / ".venv-internvl" / "bin" / "python"
FP32_TOLERANCE = 1e-4
BF16_TOLERANCE = 2e-3
STEPS = 20
FULL = os.environ.get("VLM_FULL_PARITY") == "1"

# (revision, llm, ZeRO stage, extra settings). CI runs the pin cases (ZeRO-1 in fp32 and bf16,
# ZeRO-2 with seed 000's freeze_llm) and head/Qwen2 (the other revision, LLM family and
# attention); VLM_FULL_PARITY=1 adds the rest, LoRA a strict xfail.
CI_CASES = (
    "pin-internlm2-zero1",
    "pin-internlm2-zero1-bf16",
    "pin-internlm2-zero2-freeze_llm",
    "head-qwen2-zero2",
    "head-qwen2-zero2-lora",
)
BF16 = ["hw.precision=bf16"]
LORA_PARITY = {
    False: ["+engine_args.lora_parity_init=true"],
    True: ["+engine_args.official_lora_parity=true"],
}
CASES = {
    "pin-internlm2-zero1": ("pin", "internlm2", 1, []),
    "pin-internlm2-zero1-bf16": ("pin", "internlm2", 1, BF16),
    "pin-qwen2-zero1": ("pin", "qwen2", 1, []),
    "head-qwen2-zero2": ("head", "qwen2", 2, []),
    "head-qwen2-zero2-bf16": ("head", "qwen2", 2, BF16),
    "head-internlm2-zero2": ("head", "internlm2", 2, []),
    "head-qwen2-zero2-lora": ("head", "qwen2", 2, ["model.use_llm_lora=8"]),
    "head-internlm2-zero2-lora": ("head", "internlm2", 2, ["model.use_llm_lora=8"]),  # xfail
    "pin-internlm2-zero2-freeze_llm": ("pin", "internlm2", 2, ["model.freeze_llm=true"]),
}
LLM_SETTINGS = {
    "internlm2": [],
    "qwen2": ["model.make_tiny.llm=qwen2", "model.llm_family=qwen2", "model.template=Hermes-2"],
}


def need(revision: str) -> Path:
    missing = [p for p in (OFFICIAL_PY, CHECKOUTS[revision]) if not p.exists()]
    if missing:
        msg = f"{missing[0]} is absent (bash setup.sh --official; shared/upstream checkouts)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    return CHECKOUTS[revision]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """8 single-image samples (the pinned code reads one image per sample), no augmentation:
    one global batch of 8 holds the whole set, so every step sees the same samples."""
    out = tmp_path_factory.mktemp("parity") / "data"
    meta_path = make_synthetic(out, num_samples=8, num_eval=0, single_image=True)
    meta = json.loads(meta_path.read_text())
    for entry in meta.values():
        entry["data_augment"] = False
    meta_path.write_text(json.dumps(meta))
    # Distinct precomputed lengths, which both samplers sort by: the same split over the ranks
    # every epoch. Without them the official sorts by an estimate with ties (both multi-turn
    # samples 21) broken by its global-RNG permutation, ours by exact lengths broken by
    # seed + epoch: at head/Qwen2 ours put both multi-turn samples on one rank at steps 8, 11
    # and 19 (per-rank means over 12 and 8 tokens, not 10 and 10): 4.13e-4.
    ann = out / "train.jsonl"
    rows = [json.loads(x) for x in ann.read_text().splitlines()]
    ann.write_text("".join(json.dumps({**r, "length": 200 + i}) + "\n" for i, r in enumerate(rows)))
    return meta_path


def train(engine: str, revision: str, run: Path, cache: Path, meta: Path, extra: list[str]):
    official = engine == "internvl_official"
    args = [
        "model=tiny_internvl",
        f"model.engine={engine}",
        f"model.internvl_root={CHECKOUTS[revision]}",
        f"model.internvl_revision={revision}",
        # B1 (load in fp32 when bf16=False) for the fp32 cases; in bf16 the official code runs
        # without it, loading in bf16 as it always does
        "+engine_args.official_fp32_load=true"
        if official and "hw.precision=bf16" not in extra
        else None,
        # LoRA: both sides seed each adapter by its module name and drop no LoRA inputs (edit P1
        # and lora_parity_init): the two programs' global RNGs reach the wrap differently
        *(LORA_PARITY[official] if any("use_llm_lora" in x for x in extra) else []),
        "hw=cpu",
        "nodes=2",
        "per_device_batch_size=4",
        f"max_steps={STEPS}",
        "data=meta_file",
        f"data.meta_file={meta}",
        # 8 samples are one step: each step is an epoch, and the official Trainer starts its
        # loader workers again every epoch (seconds each); both sides load in-process
        "data.num_workers=0",
        # the official scripts' --group_by_length True: the official LengthGroupedSampler and
        # ours give the same order (without it HF shards a RandomSampler, ours a
        # DistributedSampler: other samples on each rank)
        "data.group_by_length=true",
        "wait=true",
        f"run_dir={run}",
        f"cache_dir={cache}",
        *extra,
    ]
    r = subprocess.run(
        [sys.executable, "launch.py", *[a for a in args if a]],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert r.returncode == 0, f"{engine}: {r.stdout[-3000:]}{r.stderr[-2000:]}"
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in rows] == list(range(1, STEPS + 1)), engine
    return [m["loss"] for m in rows]


def compare(ours: list[float], official: list[float], tolerance: float) -> list[str]:
    """Every step whose relative loss difference exceeds `tolerance`, said with the figures."""
    out = []
    for step, (a, b) in enumerate(zip(ours, official, strict=True), 1):
        rel = abs(a - b) / max(abs(b), 1e-12)
        if rel > tolerance:
            out.append(f"step {step}: ours {a:.6f} vs official {b:.6f} (relative {rel:.2e})")
    return out


def test_compare_names_the_step_and_the_difference():
    assert compare([1.0, 2.0], [1.0, 2.0], 1e-4) == []
    assert compare([1.0, 2.001], [1.0, 2.0], 1e-4) == [
        "step 2: ours 2.001000 vs official 2.000000 (relative 5.00e-04)"
    ]


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_loss_parity(case: str, data: Path, tmp_path: Path, request):
    revision, llm, stage, extra_settings = CASES[case]
    if case not in CI_CASES and not FULL:
        pytest.skip("VLM_FULL_PARITY=1 runs this case")
    if case == "head-internlm2-zero2-lora":
        # measured 8.18e-3 with both sides seeded (7.17e-3 without), docs/OFFICIAL.md: the
        # official InternLM2 adapter is one on the fused wqkv (ours: q, k, v apart; 188,352
        # trainable parameters against 184,256); Qwen2, the same modules on both sides, agrees
        reason = "InternLM2 LoRA: one adapter on the fused wqkv (official) vs q, k, v apart (ours)"
        request.applymarker(pytest.mark.xfail(strict=True, reason=reason))
    need(revision)
    extra = [*LLM_SETTINGS[llm], f"parallelism=zero{stage}", *extra_settings]
    cache = tmp_path / "cache"
    ours = train("internvl_chat", revision, tmp_path / "ours", cache, data, extra)
    official = train("internvl_official", revision, tmp_path / "official", cache, data, extra)
    assert ours[-1] < ours[0], f"the loss did not fall: {ours}"
    worst = max(abs(a - b) / abs(b) for a, b in zip(ours, official, strict=True))
    print(f"{case}: max relative loss difference {worst:.2e} over {STEPS} steps")
    tolerance = BF16_TOLERANCE if extra_settings is BF16 else FP32_TOLERANCE
    assert not compare(ours, official, tolerance), "\n".join(compare(ours, official, tolerance))
