"""XTuner checkpoints -> loadable folders (xtuner_cfgs/to_hf.py).

LLaVA: a real tiny `xtuner train` through the launcher ends with RUN_DIR/output/hf, a native
LlavaForConditionalGeneration folder that transformers 5 (this env) loads and generates with.
InternVL: the official-layout conversion over a tiny original-layout checkpoint and a
synthetic XTuner state dict (training InternVL under XTuner needs flash-attention / a GPU).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from launcher.plan.jobscript import REPO
from tests.test_xtuner import (
    TINY_PARAMS,
    XPY,
    launch,
    need_xtuner_env,
    tiny_llava,
    tiny_overrides,
)
from xtuner_cfgs.to_hf import (
    ConversionError,
    apply_trained,
    internvl_to_official,
    load_xtuner_state,
)

__all__ = ["tiny_llava"]  # the session fixture, shared with tests/test_xtuner.py


# --- LLaVA ----------------------------------------------------------------------------------


@pytest.mark.xtuner
@pytest.mark.slow
def test_tiny_llava_run_ends_with_a_native_hf_folder(tiny_llava: Path, tmp_path: Path):
    from PIL import Image
    from safetensors.torch import load_file
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    run = tmp_path / "run"
    r = launch(*tiny_overrides(str(tiny_llava)), f"run_dir={run}", f"cache_dir={tmp_path}/c")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed", summary["reason"]
    hf = run / "output" / "hf"
    assert json.loads((hf / "config.json").read_text())["model_type"] == "llava"

    model, info = LlavaForConditionalGeneration.from_pretrained(hf, output_loading_info=True)
    assert not any(info.values()), info  # no missing / unexpected / mismatched keys

    # The projector is the trained one (XTuner's fp32 weights in the DeepSpeed checkpoint), not
    # LLaVA's random init; the exact pre-training init is not recoverable (XTuner's RNG order).
    ckpt = Path((run / "output" / "last_checkpoint").read_text().strip())
    trained = load_xtuner_state(ckpt)
    assert sorted(trained) == [
        f"projector.model.{i}.{p}" for i in (0, 2) for p in ("bias", "weight")
    ]
    proj = model.model.multi_modal_projector
    for xt, ours in (("0", proj.linear_1), ("2", proj.linear_2)):
        assert torch.equal(ours.weight, trained[f"projector.model.{xt}.weight"])
        assert torch.equal(ours.bias, trained[f"projector.model.{xt}.bias"])
    # The frozen LLM and CLIP are the ones the run read.
    llm = load_file(tiny_llava / "llm" / "model.safetensors")
    layer = model.model.language_model.layers[1].mlp.down_proj.weight
    assert torch.equal(layer, llm["model.layers.1.mlp.down_proj.weight"])
    vocab = llm["model.embed_tokens.weight"].shape[0]
    assert model.config.image_token_id == vocab  # <image> was added after the tokenizer's ids
    assert model.config.image_seq_length == 4  # (28 px / 14 px)^2

    processor = AutoProcessor.from_pretrained(hf)
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi"}]}]
    prompt = processor.apply_chat_template(msgs, add_generation_prompt=True)
    assert prompt == "<|im_start|>user\n<image>\nHi<|im_end|>\n<|im_start|>assistant\n"
    red_px = Image.new("RGB", (40, 30), (220, 40, 40))
    inputs = processor(images=red_px, text=prompt, return_tensors="pt")
    assert (inputs["input_ids"] == model.config.image_token_id).sum() == 4
    out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 4
    # The image reaches the logits through the trained projector.
    with torch.no_grad():
        red = model(**inputs).logits[0, -1]
        blue_px = Image.new("RGB", (40, 30), (40, 70, 220))
        blue = model(**processor(images=blue_px, text=prompt, return_tensors="pt")).logits[0, -1]
    assert not torch.allclose(red, blue)


@pytest.mark.xtuner
def test_llava_export_refuses_a_checkpoint_without_projector(tiny_llava: Path, tmp_path: Path):
    need_xtuner_env()
    cfg = tmp_path / "cfg.py"
    cfg.write_text(
        "from transformers import AutoModelForCausalLM, CLIPVisionModel\n"
        "model = dict(llm=dict(type=AutoModelForCausalLM.from_pretrained,\n"
        f"    pretrained_model_name_or_path={str(tiny_llava / 'llm')!r}),\n"
        "  visual_encoder=dict(type=CLIPVisionModel.from_pretrained,\n"
        f"    pretrained_model_name_or_path={str(tiny_llava / 'clip')!r}))\n"
    )
    ckpt = tmp_path / "iter_1.pth"
    torch.save({"state_dict": {"llm.nonsense.weight": torch.zeros(2)}}, ckpt)
    done = subprocess.run(
        [str(XPY), str(REPO / "xtuner_cfgs" / "to_hf.py"), "llava", str(cfg), str(ckpt), "o"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "expected 4 projector tensors" in done.stderr
    assert "'nonsense.weight' has no counterpart in the LLM" in done.stderr
    assert not (tmp_path / "o").exists()


# --- InternVL (official layout) ---------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_internvl(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("internvl") / "base"
    subprocess.run(
        [sys.executable, "-m", "internvl_chat.tools.make_tiny", str(out)]
        + ["--layout", "original", "--llm", "internlm2"],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=300,
    )
    return out


def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.language_model(input_ids=ids).logits


def test_internvl_export_to_the_official_layout(tiny_internvl: Path, tmp_path: Path):
    from internvl_chat.model import detect_layout, load_model
    from internvl_chat.model.checkpoint import read_weights

    disk = read_weights(tiny_internvl)  # InternLM2 names, as the official layout stores them
    lin = "language_model.model.layers.1.attention.wo.weight"
    loaded_lin = "language_model.model.layers.1.self_attn.o_proj.weight"  # our loader's name
    g = torch.Generator().manual_seed(0)
    out_f, in_f = disk[lin].shape
    a, b = torch.randn(8, in_f, generator=g), torch.randn(out_f, 8, generator=g) * 0.1
    mlp1 = {k: torch.randn(v.shape, generator=g) for k, v in disk.items() if k.startswith("mlp1.")}
    assert mlp1
    # What InternVL_V1_5.state_dict() holds after a LoRA finetune (peft drops the adapter name).
    lm_mod = lin.removeprefix("language_model.").removesuffix(".weight")
    trained = {f"model.{k}": v for k, v in mlp1.items()} | {
        f"model.language_model.base_model.model.{lm_mod}.lora_A.weight": a,
        f"model.language_model.base_model.model.{lm_mod}.lora_B.weight": b,
    }
    ckpt = tmp_path / "iter_9.pth" / "mp_rank_00_model_states.pt"  # a DeepSpeed dir
    ckpt.parent.mkdir()
    torch.save({"module": trained, "global_steps": 9}, ckpt)
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "xtuner_cfgs.to_hf", "internvl", str(tiny_internvl)]
        + [str(ckpt.parent), str(out), "--lora-alpha", "16"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(json.loads(done.stdout)["changed"]) == sorted([*mlp1, lin])

    assert detect_layout(out) == "original"
    assert {p.name for p in tiny_internvl.iterdir()} <= {p.name for p in out.iterdir()}
    new = read_weights(out)
    assert new.keys() == disk.keys()
    for k, v in mlp1.items():
        assert torch.equal(new[k], v)
    expected = disk[lin] + (b @ a) * (16 / 8)
    assert torch.allclose(new[lin], expected, atol=1e-6)
    assert all(torch.equal(new[k], disk[k]) for k in disk if k not in mlp1 and k != lin)

    # Logits change exactly as the merged weight says: the base model with that one weight set
    # by hand gives the converted model's logits, and they differ from the base's.
    base, got = load_model(tiny_internvl).eval(), load_model(out).eval()
    for k, v in mlp1.items():
        assert torch.equal(got.state_dict()[k], v)
    ids = torch.tensor([[1, 5, 9, 17, 33, 2]])
    before = _logits(base, ids)
    with torch.no_grad():
        base.get_parameter(loaded_lin).copy_(expected)
    assert torch.allclose(_logits(got, ids), _logits(base, ids), atol=1e-5)
    assert not torch.allclose(_logits(got, ids), before, atol=1e-3)


def test_internvl_export_lists_every_problem(tiny_internvl: Path, tmp_path: Path):
    trained = {
        "model.mlp1.0.weight": torch.zeros(3),  # wrong shape
        "model.language_model.no.such.weight": torch.zeros(1),
        "model.language_model.base_model.model.x.lora_A.weight": torch.zeros(2, 2),
    }
    with pytest.raises(ConversionError) as e:
        internvl_to_official(tiny_internvl, trained, tmp_path / "out")
    msg = str(e.value)
    for part in ("mlp1.0.weight: trained shape (3,)", "'language_model.no.such.weight'", "lora_A"):
        assert part in msg, msg
    assert "--lora-alpha" in msg
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConversionError, match="keys without 'model.'"):
        internvl_to_official(tiny_internvl, {"mlp1.0.weight": torch.zeros(1)}, tmp_path / "o")


def test_apply_trained_merges_peft_keys_with_adapter_names():
    base = {"l.weight": torch.eye(2), "l.bias": torch.zeros(2)}
    a, b = torch.ones(1, 2), torch.full((2, 1), 0.5)
    trained = {
        "base_model.model.l.lora_A.default.weight": a,
        "base_model.model.l.lora_B.default.weight": b,
        "base_model.model.l.base_layer.bias": torch.ones(2),
    }
    out, changed = apply_trained(base, trained, lora_alpha=4.0)
    assert torch.equal(out["l.weight"], torch.eye(2) + 4.0 * (b @ a))
    assert torch.equal(out["l.bias"], torch.ones(2))
    assert sorted(changed) == ["l.bias", "l.weight"]


@pytest.mark.xtuner
def test_seed_003_run_ends_in_the_official_layout(tiny_internvl: Path, tmp_path: Path):
    """finalize() of an XTuner InternVL run (seed 003 recipe, rendered by the launcher) writes
    RUN_DIR/output/hf in the official layout: base from the config's model_path, trained mlp1
    from the checkpoint. The checkpoint is synthetic: XTuner's InternVL needs flash-attn/GPU."""
    need_xtuner_env()
    from internvl_chat.model import detect_layout
    from internvl_chat.model.checkpoint import read_weights
    from launcher.contract import Plan
    from launcher.engines.xtuner import XTunerEngine
    from launcher.rundir import RunDir

    data = tmp_path / "data.json"
    data.write_text("[]")
    (tmp_path / "images").mkdir()
    run_dir = tmp_path / "run"
    r = launch(
        "model=internvl2_2b",
        "model.engine=xtuner",
        "model.xtuner_base=tiny_internvl_v2_finetune",
        f"model.path={tiny_internvl}",
        *TINY_PARAMS,  # the tiny checkpoint's sizes (a 2B does not fit hw=cpu)
        "model.dims.llm.hidden=64",
        "model.dims.llm.layers=2",
        "seq_len=512",
        "data=llava_pretrain",
        f"data.json_path={data}",
        f"data.image_folder={tmp_path / 'images'}",
        "hw=cpu",
        "cluster=local",
        "check_data=false",
        "dry_run=true",
        f"run_dir={run_dir}",
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    disk = read_weights(tiny_internvl)
    g = torch.Generator().manual_seed(1)
    mlp1 = {k: torch.randn(v.shape, generator=g) for k, v in disk.items() if k.startswith("mlp1.")}
    ckpt = run_dir / "output" / "iter_3.pth"
    ckpt.parent.mkdir()
    torch.save({"state_dict": {f"model.{k}": v for k, v in mlp1.items()}}, ckpt)
    (run_dir / "output" / "last_checkpoint").write_text(str(ckpt))

    XTunerEngine().finalize(Plan.load(run_dir), RunDir(run_dir))

    out = run_dir / "output" / "hf"
    assert detect_layout(out) == "original"
    new = read_weights(out)
    assert new.keys() == disk.keys()
    assert all(torch.equal(new[k], v) for k, v in mlp1.items())
    assert all(torch.equal(new[k], disk[k]) for k in disk if k not in mlp1)
