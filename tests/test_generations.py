"""InternVL2.5 / 3 / 3.5 model configs: the official fine-tune scripts' defaults (2410d1d), dims
that add up to the released parameter counts, and the refusals (MoE, GPT-OSS, packing
settings that cannot work), all through compose -> check -> plan."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from launcher.config import compose as composing
from launcher.config.convert import lenient
from launcher.config.spec import ConfigError
from launcher.flops import ModelDims
from launcher.plan import site
from launcher.submit.pipeline import plan_from_config

# From the official scripts: internvl_chat/shell/internvl2.5|internvl3.0/2nd_finetune/*_full.sh
# and internvl_chat_gpt_oss/shell/internvl3_5_qwen3/*_sft.sh:
# per-device batch, ZeRO stage, lr, weight decay, drop path, max_dynamic_patch, seq, freeze_backbone
OFFICIAL = {
    "internvl2_5_1b": (4, 1, 4e-5, 0.01, 0.1, 6, 8192, True),
    "internvl2_5_2b": (4, 1, 4e-5, 0.01, 0.1, 6, 8192, True),
    "internvl2_5_4b": (4, 1, 4e-5, 0.01, 0.1, 6, 8192, True),
    "internvl2_5_8b": (4, 1, 4e-5, 0.05, 0.1, 6, 8192, True),
    "internvl2_5_26b": (2, 3, 2e-5, 0.05, 0.4, 6, 8192, True),
    "internvl2_5_38b": (2, 3, 2e-5, 0.05, 0.4, 6, 8192, True),
    "internvl2_5_78b": (1, 3, 2e-5, 0.05, 0.4, 6, 8192, True),
    "internvl3_1b": (4, 1, 1e-5, 0.05, 0.0, 12, 16384, True),
    "internvl3_2b": (4, 1, 2e-5, 0.05, 0.0, 12, 16384, True),
    "internvl3_8b": (4, 1, 2e-5, 0.05, 0.0, 12, 16384, True),
    "internvl3_9b": (4, 1, 2e-5, 0.05, 0.0, 12, 16384, True),
    "internvl3_14b": (4, 1, 2e-5, 0.05, 0.1, 12, 16384, True),
    "internvl3_38b": (2, 3, 2e-5, 0.05, 0.2, 12, 16384, True),
    "internvl3_78b": (2, 3, 2e-5, 0.05, 0.4, 12, 16384, True),
    "internvl3_5_1b": (1, 3, 8e-5, 0.05, 0.0, 12, 32768, False),
    "internvl3_5_2b": (1, 3, 8e-5, 0.05, 0.0, 12, 32768, False),
    "internvl3_5_4b": (1, 3, 8e-5, 0.05, 0.0, 12, 32768, False),
    "internvl3_5_8b": (1, 3, 8e-5, 0.05, 0.1, 12, 32768, False),
    "internvl3_5_14b": (1, 3, 8e-5, 0.05, 0.1, 12, 32768, False),
    "internvl3_5_38b": (1, 3, 8e-5, 0.05, 0.4, 12, 32768, False),
}
RELEASE = {"internvl2_5": "InternVL2_5", "internvl3": "InternVL3", "internvl3_5": "InternVL3_5"}
FAMILY = {"internvl2_5_2b": "internlm2", "internvl2_5_8b": "internlm2",
          "internvl2_5_26b": "internlm2", "internvl3_9b": "internlm3"}  # fmt: skip


@pytest.fixture(autouse=True)
def no_site_probe(monkeypatch):
    monkeypatch.setattr(site, "partition_info", lambda *a, **k: None)


def plan(tmp_path: Path, *overrides: str):
    # a real model trains on generated data only when asked to (launcher.config.data_select)
    data = [] if any(o.startswith("data=") for o in overrides) else ["data=synthetic"]
    cfg, problems = composing.compose(
        [*overrides, *data, "hw=h100", "nodes=4", "dry_run=true", "check_data=false",
         f"run_dir={tmp_path}/run", f"models_root={tmp_path}/models"]
    )  # fmt: skip
    return plan_from_config(cfg, problems)


@pytest.mark.parametrize("model", sorted(OFFICIAL))
def test_config_carries_the_official_finetune_defaults(tmp_path, model):
    pdb, zero, lr, wd, dpr, tiles, seq, freeze_vit = OFFICIAL[model]
    p, spec = plan(tmp_path, f"model={model}")
    args = json.loads(p.files["train_args.json"])
    assert json.loads(p.files["deepspeed.json"])["zero_optimization"]["stage"] == zero
    assert (args["per_device_train_batch_size"], args["learning_rate"]) == (pdb, lr)
    assert (args["weight_decay"], args["drop_path_rate"]) == (wd, dpr)
    assert (args["max_dynamic_patch"], args["max_seq_length"]) == (tiles, seq)
    assert (args["freeze_backbone"], args["freeze_llm"], args["freeze_mlp"]) == (
        freeze_vit,
        False,
        False,
    )
    assert args["conv_style"] == "internvl2_5" and args["internvl_revision"] == "head"
    gen, size = model.rsplit("_", 1)
    assert spec.model.path == f"{tmp_path}/models/{RELEASE[gen]}-{size.upper()}"
    want_family = FAMILY.get(model, "qwen3" if model.startswith("internvl3_5") else "qwen2")
    assert spec.model.llm_family == want_family
    batch = 512 if model.startswith("internvl3_5") else 128
    assert p.derived.global_batch_size == batch
    if model.startswith("internvl3_5"):  # the 3.5 SFT recipe
        assert args["use_packed_ds"] is True
        assert (args["max_packed_tokens"], args["num_images_expected"]) == (32768, 96)
        assert args["loss_reduction"] == "square"
    else:
        assert args["use_packed_ds"] is False and "loss_reduction" not in args


@pytest.mark.parametrize("model", sorted(OFFICIAL))
def test_dims_add_up_to_the_released_parameter_count(model):
    """The FLOPs count's weights (+ input embedding, once if tied) match the model's own
    parameter count within 3%: a wrong layer count, width or head_dim shows here."""
    from omegaconf import OmegaConf

    raw = OmegaConf.to_container(
        OmegaConf.load(Path(__file__).parents[1] / "conf" / "model" / f"{model}.yaml")
    )
    dims = lenient(ModelDims, raw["dims"], "model.dims")
    counted = dims.llm.matmul_params + dims.llm.hidden * dims.llm.vocab
    released = float(raw["dims"]["llm"]["params"])
    tied = abs(counted - dims.llm.hidden * dims.llm.vocab - released) / released < 0.03
    assert tied or abs(counted - released) / released < 0.03, (counted, released)


def test_qwen3_head_dim_counts_in_flops():
    from launcher.flops import LlmArch

    a = LlmArch(layers=28, hidden=1024, heads=16, kv_heads=8, intermediate=3072, vocab=151936)
    b = LlmArch(layers=28, hidden=1024, heads=16, kv_heads=8, intermediate=3072, vocab=151936,
                head_dim=128)  # fmt: skip
    assert (a.attn_hidden, a.kv_hidden, b.attn_hidden, b.kv_hidden) == (1024, 512, 2048, 1024)
    assert b.layer_params - a.layer_params == 2 * 1024 * 1024 + 2 * 1024 * 512


@pytest.mark.parametrize(
    ("model", "match"),
    [
        ("internvl3_5_30b_a3b", "model.llm_family: qwen3_moe: Qwen3 MoE"),
        ("internvl3_5_241b_a28b", "model.llm_family: qwen3_moe"),
        ("internvl3_5_gpt_oss_20b", "model.llm_family: gpt_oss: the GPT-OSS backbone"),
    ],
)
def test_moe_and_gpt_oss_are_refused_by_name(tmp_path, model, match):
    with pytest.raises(ConfigError, match=match) as e:
        plan(tmp_path, f"model={model}")
    assert "internvl3_5_8b" in str(e.value) or "_8b" in str(e.value)
    assert not (tmp_path / "run").exists()


def test_packing_mistakes_are_refused_all_at_once(tmp_path):
    with pytest.raises(ConfigError) as e:
        plan(tmp_path, "model=internvl3_5_8b", "model.max_packed_tokens=1000",
             "model.num_images_expected=4", "model.engine=internvl_official",
             f"model.internvl_root={tmp_path}", "per_device_batch_size=2",
             "data=meta_file", f"data.meta_file={tmp_path}/meta.json")  # fmt: skip
    text = str(e.value)
    assert "model.max_packed_tokens: 1000 < seq_len 32768" in text
    assert "model.num_images_expected: 4 < 13 tiles" in text
    assert "per_device_batch_size: 2: the official packed dataset" in text
    with pytest.raises(ConfigError, match="model.max_packed_tokens: only applies to packed"):
        plan(tmp_path, "model=internvl3_8b", "model.max_packed_tokens=20000")


def test_packed_memory_estimate_budgets_a_whole_row(tmp_path):
    """A packed micro-batch sample is a row of max_packed_tokens tokens and up to
    num_images_expected tiles (96 ViT tiles for 3.5), not one seq_len sample."""
    p, _ = plan(tmp_path / "a", "model=internvl3_5_8b")
    row = p.memory_estimate
    assert row.detail.endswith("activations for 32768 tokens and 96 tiles per packed row)")
    q, _ = plan(tmp_path / "b", "model=internvl3_5_8b", "model.num_images_expected=24")
    assert q.memory_estimate.per_device_gb < row.per_device_gb  # 72 fewer ViT tiles


def test_loss_reduction_and_save_format_reach_our_trainer(tmp_path):
    p, _ = plan(tmp_path, "model=internvl3_8b", "model.loss_reduction=sample",
                "model.save_format=hf")  # fmt: skip
    args = json.loads(p.files["train_args.json"])
    assert (args["loss_reduction"], args["save_format"]) == ("sample", "hf")
    with pytest.raises(ConfigError, match="model.loss_reduction"):
        plan(tmp_path, "model=internvl3_8b", "model.loss_reduction=mean")
