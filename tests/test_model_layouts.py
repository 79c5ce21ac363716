"""Model fidelity: pixel shuffle order, InternLM2 wqkv conversion, the three checkpoint layouts
(against transformers' own InternVL for the native one), LoRA merge, trainable sets."""

from __future__ import annotations

import json

import pytest
import torch

from internvl_chat.model import (
    attach_tokenizer,
    configure_trainable,
    detect_layout,
    load_model,
    pixel_shuffle,
    save_model,
)
from internvl_chat.model.llm import internlm2_to_llama, llama_to_internlm2
from internvl_chat.model.weights import read_weights
from internvl_chat.tokenizer import load_tokenizer
from internvl_chat.tools.make_tiny import make_tiny
from internvl_chat.tools.merge_lora import merge_lora

LAYOUTS = ("original", "components", "hf")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {
        (llm, layout): make_tiny(root / f"{llm}-{layout}", layout, llm, seed=0)
        for llm in ("internlm2", "qwen2", "phi3")
        for layout in LAYOUTS
    }


def _load(path):
    model = load_model(path)
    attach_tokenizer(model, load_tokenizer(model.tokenizer_dir))
    return model.eval()


def _inputs(model, n_tiles=2):
    g = torch.Generator().manual_seed(0)
    pixel_values = torch.randn(n_tiles, 3, 56, 56, generator=g)
    ctx = [model.img_context_token_id] * (model.num_image_token * n_tiles)
    ids = torch.tensor([[101, 102, 103, *ctx, 107, 108, 109]])
    return pixel_values, ids


def _logits(model, pixel_values, ids):
    with torch.no_grad():
        return model(pixel_values, ids, image_flags=torch.ones(len(pixel_values)))["logits"]


def test_pixel_shuffle_v1_v2_on_an_indexed_tensor():
    g = 4
    # value = 10 * row + column: each output channel names the patch it came from
    x = torch.tensor([[10.0 * r + c for c in range(g)] for r in range(g)]).reshape(1, g, g, 1)
    v2 = pixel_shuffle(x, 0.5, "v2")
    v1 = pixel_shuffle(x, 0.5, "v1")
    assert v2.shape == v1.shape == (1, 2, 2, 4)
    for r in range(2):
        for c in range(2):
            want = [10 * (2 * r) + 2 * c, 10 * (2 * r) + 2 * c + 1]
            want += [10 * (2 * r + 1) + 2 * c, 10 * (2 * r + 1) + 2 * c + 1]
            assert v2[0, r, c].tolist() == want  # grid indexed [row, col]
            assert v1[0, c, r].tolist() == want  # v1 leaves the grid transposed


@pytest.mark.parametrize("bias", [False, True])
def test_internlm2_wqkv_split_matches_grouped_layout_and_round_trips(bias):
    heads, kv, hd, hidden = 8, 2, 4, 32
    cfg = {"num_attention_heads": heads, "num_key_value_heads": kv, "hidden_size": hidden}
    rows = (heads + 2 * kv) * hd
    sd = {
        "model.layers.0.attention.wqkv.weight": torch.randn(rows, hidden),
        "model.layers.0.attention.wo.weight": torch.randn(hidden, hidden),
        "model.tok_embeddings.weight": torch.randn(10, hidden),
        "output.weight": torch.randn(10, hidden),
    }
    if bias:
        sd["model.layers.0.attention.wqkv.bias"] = torch.randn(rows)
    llama = internlm2_to_llama(sd, cfg)
    # Reference: InternLM2 splits the *output* of wqkv as [kv, q_per_kv + 2, head_dim].
    x = torch.randn(3, hidden)
    out = torch.nn.functional.linear(
        x, sd["model.layers.0.attention.wqkv.weight"], sd.get("model.layers.0.attention.wqkv.bias")
    ).reshape(3, kv, heads // kv + 2, hd)
    ref_q = out[:, :, :-2].reshape(3, heads * hd)
    ref_k, ref_v = out[:, :, -2].reshape(3, kv * hd), out[:, :, -1].reshape(3, kv * hd)
    for name, ref in (("q", ref_q), ("k", ref_k), ("v", ref_v)):
        w = llama[f"model.layers.0.self_attn.{name}_proj.weight"]
        b = llama.get(f"model.layers.0.self_attn.{name}_proj.bias")
        torch.testing.assert_close(torch.nn.functional.linear(x, w, b), ref)
    assert set(llama) >= {"model.embed_tokens.weight", "lm_head.weight"}
    back = llama_to_internlm2(llama, cfg)
    assert set(back) == set(sd)
    for k in sd:
        assert torch.equal(back[k], sd[k]), k


@pytest.mark.parametrize("llm", ["internlm2", "qwen2", "phi3"])
def test_same_logits_from_every_layout(tiny, llm):
    models = {layout: _load(tiny[(llm, layout)]) for layout in LAYOUTS}
    for layout, m in models.items():
        assert m.layout == layout == detect_layout(tiny[(llm, layout)])
    pv, ids = _inputs(models["original"])
    ref = _logits(models["original"], pv, ids)
    assert ref.std() > 0.01
    for layout in ("components", "hf"):
        torch.testing.assert_close(_logits(models[layout], pv, ids), ref)


def test_native_layout_matches_transformers_internvl(tiny):
    from transformers import InternVLForConditionalGeneration

    ours = _load(tiny[("qwen2", "hf")])
    theirs, info = InternVLForConditionalGeneration.from_pretrained(
        tiny[("qwen2", "hf")], output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"]
    pv, ids = _inputs(ours, n_tiles=3)
    with torch.no_grad():
        want = theirs.eval()(pixel_values=pv, input_ids=ids).logits
    torch.testing.assert_close(_logits(ours, pv, ids), want, atol=1e-5, rtol=1e-5)


def test_original_layout_saves_back_byte_identical_tensors(tiny, tmp_path):
    src = tiny[("internlm2", "original")]
    model = _load(src)
    save_model(model, tmp_path / "again")
    a, b = read_weights(src), read_weights(tmp_path / "again")
    assert set(a) == set(b)
    assert any(".attention.wqkv." in k for k in b)  # InternLM2 naming restored
    for k in a:
        assert torch.equal(a[k], b[k]), k
    cfg = json.loads((tmp_path / "again" / "config.json").read_text())
    assert cfg["model_type"] == "internvl_chat"
    assert cfg["llm_config"]["architectures"] == ["InternLM2ForCausalLM"]
    assert (tmp_path / "again" / "tokenizer.model").exists()


def test_image_token_count_mismatch_raises(tiny):
    model = _load(tiny[("qwen2", "original")])
    pv, ids = _inputs(model)
    with pytest.raises(ValueError, match="image token mismatch: 7 <IMG_CONTEXT>"):
        model(pv, ids[:, :10], image_flags=torch.ones(2))


@pytest.mark.parametrize("layout", ["original", "hf"])
def test_merged_lora_gives_the_unmerged_logits(tiny, tmp_path, layout):
    model = _load(tiny[("qwen2", layout)])
    configure_trainable(model, use_llm_lora=4, use_backbone_lora=2, freeze_llm=True)
    with torch.no_grad():  # lora_B starts at zero; make the adapters matter
        g = torch.Generator().manual_seed(1)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    model.eval()
    pv, ids = _inputs(model)
    unmerged = _logits(model, pv, ids)
    save_model(model, tmp_path / "lora")
    reloaded = _load(tmp_path / "lora")
    assert reloaded.config.use_llm_lora == 4
    torch.testing.assert_close(_logits(reloaded, pv, ids), unmerged)
    merge_lora(tmp_path / "lora", tmp_path / "merged")
    merged = _load(tmp_path / "merged")
    assert merged.config.use_llm_lora == merged.config.use_backbone_lora == 0
    assert not any("lora" in k for k in read_weights(tmp_path / "merged"))
    base = _logits(_load(tiny[("qwen2", layout)]), pv, ids)
    assert (unmerged - base).abs().max() > 1e-3
    torch.testing.assert_close(_logits(merged, pv, ids), unmerged, atol=1e-5, rtol=1e-4)
    if layout == "hf":
        from transformers import AutoModelForImageTextToText

        hf = AutoModelForImageTextToText.from_pretrained(tmp_path / "merged").eval()
        with torch.no_grad():
            got = hf(pixel_values=pv, input_ids=ids).logits
        torch.testing.assert_close(got, unmerged, atol=1e-5, rtol=1e-4)


VIT = [
    "embeddings.class_embedding",
    "embeddings.position_embedding",
    "embeddings.patch_embedding.weight",
    "embeddings.patch_embedding.bias",
]
VIT_LAYER = ["norm1.weight", "attn.qkv.weight", "attn.q_norm.weight", "attn.k_norm.weight",
             "attn.proj.weight", "attn.proj.bias", "ls1", "norm2.weight", "mlp.fc1.weight",
             "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias", "ls2"]  # fmt: skip
MLP = [f"mlp1.{i}.{w}" for i in (0, 1, 3) for w in ("weight", "bias")]
LLM_TARGETS = {"self_attn": ["q_proj", "k_proj", "v_proj", "o_proj"],
               "mlp": ["gate_proj", "up_proj", "down_proj"]}  # fmt: skip


def _vit_layer(i):
    return {f"vision_model.encoder.layers.{i}.{n}" for n in VIT_LAYER}


def _llm_lora():
    return {
        f"language_model.base_model.model.model.layers.{i}.{block}.{t}.lora_{ab}.default.weight"
        for i in range(2)
        for block, targets in LLM_TARGETS.items()
        for t in targets
        for ab in "AB"
    }


def _vit_lora():
    return {
        f"vision_model.base_model.model.encoder.layers.{i}.{t}.lora_{ab}.default.weight"
        for i in range(2)
        for t in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")
        for ab in "AB"
    }


@pytest.mark.parametrize(
    "settings, expected",
    [
        ({"freeze_llm": True, "freeze_backbone": True}, lambda llm: set(MLP)),
        (  # seed 000: freeze_llm only
            {"freeze_llm": True},
            lambda llm: (
                set(MLP) | {f"vision_model.{n}" for n in VIT} | _vit_layer(0) | _vit_layer(1)
            ),
        ),
        (  # 2nd-finetune "full": ViT frozen, last ViT layer re-opened
            {"freeze_backbone": True, "unfreeze_vit_layers": -1},
            lambda llm: set(MLP) | _vit_layer(1) | llm,
        ),
        (  # 2nd-finetune LoRA: everything frozen, LLM LoRA r=16
            {"freeze_llm": True, "freeze_backbone": True, "freeze_mlp": True, "use_llm_lora": 16},
            lambda llm: _llm_lora(),
        ),
        (
            {"freeze_llm": True, "use_backbone_lora": 4, "use_llm_lora": 4},
            lambda llm: _llm_lora() | _vit_lora() | set(MLP),
        ),
    ],
)
def test_exact_trainable_parameters(tiny, settings, expected):
    model = _load(tiny[("internlm2", "original")])
    llm = {f"language_model.{n}" for n, _ in model.language_model.named_parameters()}
    got = set(configure_trainable(model, **settings))
    assert got == expected(llm)
    assert got == {n for n, p in model.named_parameters() if p.requires_grad}


def test_packed_rows_keep_attention_inside_each_sample(tiny, tmp_path):
    from internvl_chat.data import DataConfig, build_train_dataset
    from internvl_chat.tools.make_synthetic import make_synthetic

    make_synthetic(tmp_path / "data", num_samples=24, num_eval=0, seed=1)
    model = _load(tiny[("internlm2", "original")])
    cfg = DataConfig.from_any(
        conv_style="internlm2-chat", max_seq_length=256, force_image_size=56,
        max_dynamic_patch=2, use_packed_ds=True, max_packed_tokens=400, system_message="Hi.",
    )  # fmt: skip
    ds = build_train_dataset(tmp_path / "data" / "meta.json", model_tokenizer(model), cfg)
    item = ds[0]
    assert len(item["sample_lengths"]) >= 3
    batch = ds.base.collate([item])
    with torch.no_grad():
        packed = model(**batch)["logits"][0]
        start = tile = 0
        for n in item["sample_lengths"]:
            ids = batch["input_ids"][:, start : start + n]
            tiles = int((ids == model.img_context_token_id).sum()) // model.num_image_token
            if tiles:
                alone = model(batch["pixel_values"][tile : tile + tiles], ids)["logits"][0]
            else:  # text-only: its dummy tile is dropped by image_flags
                alone, tiles = model(None, ids)["logits"][0], 1
            torch.testing.assert_close(packed[start : start + n], alone, atol=1e-5, rtol=1e-5)
            start, tile = start + n, tile + tiles


def model_tokenizer(model):
    return load_tokenizer(model.tokenizer_dir)


def test_training_loss_and_grads_equal_the_full_logits_path(tiny, tmp_path):
    """Training mode runs the LM head on supervised positions only, packed rows use
    per-sample attention, text-only samples skip the ViT: the loss and the gradients are
    those of the plain path (eval-mode loss over full logits, dense block mask)."""
    from internvl_chat.data import DataConfig, build_train_dataset
    from internvl_chat.tools.make_synthetic import make_synthetic

    make_synthetic(tmp_path / "data", num_samples=24, num_eval=0, seed=1)
    model = _load(tiny[("internlm2", "original")])
    cfg = DataConfig.from_any(
        conv_style="internlm2-chat", max_seq_length=256, force_image_size=56,
        max_dynamic_patch=2, use_packed_ds=True, max_packed_tokens=400, system_message="Hi.",
    )  # fmt: skip
    ds = build_train_dataset(tmp_path / "data" / "meta.json", model_tokenizer(model), cfg)
    batch = ds.base.collate([ds[0], ds[1]])
    assert (batch["image_flags"] == 0).any() and (batch["image_flags"] == 1).any()

    def loss_and_grads(train: bool, **drop):
        model.zero_grad()
        model.train(train)
        b = {k: v for k, v in batch.items() if k not in drop}
        out = model(**b)
        out["loss"].backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return out, grads

    ref, ref_g = loss_and_grads(False, cu_seqlens=1)  # full logits, 4D block mask
    got, got_g = loss_and_grads(True)  # sparse LM head, per-segment SDPA
    assert got["logits"] is None and ref["logits"] is not None
    torch.testing.assert_close(got["loss"], ref["loss"], atol=1e-5, rtol=1e-5)
    assert got_g.keys() == ref_g.keys() and any("vision_model" in n for n in got_g)
    for n in ref_g:
        torch.testing.assert_close(got_g[n], ref_g[n], atol=1e-5, rtol=1e-4, msg=n)
