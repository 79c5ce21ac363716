"""The newer backbones in both checkpoint formats: Qwen3 (InternVL3.5, q/k RMSNorm per head)
and InternLM3 (InternVL3-9B) from tiny random checkpoints in the GitHub (remote-code) and the
transformers-native -HF formats; one truth across formats (same logits, also against
transformers' own InternVLForConditionalGeneration); the converter's bit-exact round trip."""

from __future__ import annotations

import json

import pytest
import torch
from test_model_layouts import _inputs, _load, _logits

from internvl_chat.model.weights import read_weights
from internvl_chat.tools.convert import convert, main
from internvl_chat.tools.make_tiny import LLMS, make_tiny

NEW = ("qwen3", "internlm3")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("gens")
    return {
        (llm, fmt): make_tiny(root / f"{llm}-{fmt}", fmt, llm, seed=0)
        for llm in NEW
        for fmt in ("original", "hf")
    }


@pytest.mark.parametrize("llm", NEW)
def test_real_key_names_of_both_formats(tiny, llm):
    github, hf = read_weights(tiny[(llm, "original")]), read_weights(tiny[(llm, "hf")])
    attn = "model.layers.0.self_attn"
    for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
        assert f"language_model.{attn}.{name}.weight" in github
        assert f"language_model.{attn}.{name}.weight" in hf
    qk_norm = {f"language_model.{attn}.{n}_norm.weight" for n in "qk"}
    assert (qk_norm <= set(github) and qk_norm <= set(hf)) == (llm == "qwen3")
    if llm == "qwen3":  # per head: head_dim wide, and head_dim != hidden / heads
        assert github[f"language_model.{attn}.q_norm.weight"].shape == (48,)
        assert github[f"language_model.{attn}.q_proj.weight"].shape == (4 * 48, 128)
    assert "vision_model.encoder.layers.0.attn.qkv.weight" in github
    assert "vision_tower.encoder.layer.0.attention.q_proj.weight" in hf
    cfg = json.loads((tiny[(llm, "original")] / "config.json").read_text())["llm_config"]
    assert cfg["architectures"] == [
        {"qwen3": "Qwen3ForCausalLM", "internlm3": "InternLM3ForCausalLM"}[llm]
    ]
    assert cfg["model_type"] == llm and cfg["head_dim"] == 48


@pytest.mark.parametrize("llm", NEW)
def test_same_logits_in_both_formats_and_in_transformers(tiny, llm):
    from transformers import InternVLForConditionalGeneration

    github, hf = _load(tiny[(llm, "original")]), _load(tiny[(llm, "hf")])
    pv, ids = _inputs(github, n_tiles=2)
    ref = _logits(github, pv, ids)
    assert ref.std() > 0.01
    torch.testing.assert_close(_logits(hf, pv, ids), ref, atol=0, rtol=0)
    theirs, info = InternVLForConditionalGeneration.from_pretrained(
        tiny[(llm, "hf")], output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"]
    with torch.no_grad():
        want = theirs.eval()(pixel_values=pv, input_ids=ids).logits
    torch.testing.assert_close(ref, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("llm", LLMS)
def test_convert_round_trip_is_bit_exact(tmp_path, llm):
    """GitHub -> -HF -> GitHub and -HF -> GitHub -> -HF give the same tensors (values, dtype,
    names: InternLM2's fused wqkv comes back) and the same config.json."""
    for start, there, back in (("original", "hf", "github"), ("hf", "github", "hf")):
        src = make_tiny(tmp_path / f"{start}", start, llm, seed=1)
        mid = convert(src, tmp_path / f"{start}-{there}", there)
        again = convert(mid, tmp_path / f"{start}-again", back)
        a, b = read_weights(src), read_weights(again)
        assert a.keys() == b.keys()
        for k in a:
            assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k
        assert json.loads((src / "config.json").read_text()) == json.loads(
            (again / "config.json").read_text()
        )
        assert set(read_weights(mid)) != set(a)  # really the other format in between
        assert (again / "tokenizer_config.json").exists()


def test_convert_cli_refuses_an_existing_output_and_a_missing_input(tmp_path, capsys):
    assert main([str(tmp_path / "nope"), str(tmp_path / "out"), "--to", "hf"]) == 2
    assert "nope" in capsys.readouterr().err
    (tmp_path / "out").mkdir()
    assert main([str(tmp_path / "nope"), str(tmp_path / "out"), "--to", "hf"]) == 2
    assert "exists" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("arch", "name"),
    [("Qwen3MoeForCausalLM", "Qwen3 MoE"), ("GptOssForCausalLM", "GPT-OSS")],
)
def test_moe_and_gpt_oss_checkpoints_are_refused_by_name(arch, name):
    from internvl_chat.model.llm import family_of

    with pytest.raises(ValueError, match=f"{arch}.*{name}.*not supported yet"):
        family_of({"architectures": [arch]})
