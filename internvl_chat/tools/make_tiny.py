"""Write a tiny random InternVL checkpoint (a few MB) in a real on-disk layout.

`python -m internvl_chat.tools.make_tiny OUT --layout original|components|hf --llm internlm2|qwen2|phi3|qwen3|internlm3`

``--layout original`` is the GitHub (remote-code) format, ``hf`` the transformers-native -HF one.
The newer backbones borrow a tokenizer of their lineage: qwen3 (InternVL3.5) Qwen2's, internlm3
(InternVL3-9B) InternLM2's; both train with the ``internvl2_5`` template as the official scripts.

Tiles are 56 px with 14 px patches: 16 patches -> 4 image tokens per tile after pixel shuffle
(``num_image_token = (56 // 14)^2 * 0.5^2``), so a CPU step stays cheap. The tokenizer comes
from ``internvl_chat.tokenizer`` (InternVL's special tokens included). Same seed, same bytes.
The folder is written next to OUT and renamed into place, so OUT is either complete or absent.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

IMAGE_SIZE = 56
PATCH = 14
# InternViT-300M style: LayerNorm, no qk-normalisation, qkv bias.
VIT_300M = {"qkv_bias": True, "qk_normalization": False, "norm_type": "layer_norm"}
LLMS = ("internlm2", "qwen2", "phi3", "qwen3", "internlm3")
# the tiny tokenizer each family uses (internvl_chat.tokenizer.FAMILIES)
TOKENIZER_OF = {"qwen3": "qwen2", "internlm3": "internlm2"}


def tiny_configs(llm: str, vocab_size: int, bos: int | None, eos: int) -> tuple[dict, dict, dict]:
    """(vision_config, llm_config, chat settings) for a tiny model of family ``llm``."""
    if llm == "internlm2":
        # InternViT-6B style: RMSNorm, qk-normalisation, no qkv bias.
        vision = {"qkv_bias": False, "qk_normalization": True, "norm_type": "rms_norm"}
        llm_config = {
            "architectures": ["InternLM2ForCausalLM"],
            "model_type": "internlm2",
            "auto_map": {
                "AutoConfig": "configuration_internlm2.InternLM2Config",
                "AutoModel": "modeling_internlm2.InternLM2ForCausalLM",
                "AutoModelForCausalLM": "modeling_internlm2.InternLM2ForCausalLM",
            },
            "attn_implementation": "eager",
            "bias": False,
            "rope_scaling": None,
            "rope_theta": 1000000,
            "rms_norm_eps": 1e-5,
            "pad_token_id": eos,
        }
        template = "internlm2-chat"
    elif llm == "qwen2":
        vision = dict(VIT_300M)
        llm_config = {
            "architectures": ["Qwen2ForCausalLM"],
            "model_type": "qwen2",
            "rope_theta": 1000000.0,
            "rms_norm_eps": 1e-6,
            "use_sliding_window": False,
            "max_window_layers": 2,
        }
        template = "Hermes-2"
    elif llm == "phi3":
        # Mini-InternVL-Chat-4B-V1-5 style: InternViT-300M + Phi-3-mini, phi3-chat template.
        vision = dict(VIT_300M)
        llm_config = {"architectures": ["Phi3ForCausalLM"], "model_type": "phi3",
                      "rope_theta": 10000.0, "rms_norm_eps": 1e-5, "pad_token_id": eos,
                      "original_max_position_embeddings": 2048}  # fmt: skip
        template = "phi3-chat"
    elif llm == "qwen3":
        # InternVL3.5 style: Qwen3 with q/k RMSNorm per head and head_dim != hidden / heads.
        vision = dict(VIT_300M)
        llm_config = {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3",
                      "head_dim": 48, "attention_bias": False, "rope_theta": 1000000.0,
                      "rms_norm_eps": 1e-6, "use_sliding_window": False,
                      "max_window_layers": 2}  # fmt: skip
        template = "internvl2_5"
    elif llm == "internlm3":
        # InternVL3-9B style: InternLM3 remote-code config (Llama names, head_dim, dynamic RoPE).
        vision = dict(VIT_300M)
        llm_config = {
            "architectures": ["InternLM3ForCausalLM"],
            "model_type": "internlm3",
            "auto_map": {
                "AutoConfig": "configuration_internlm3.InternLM3Config",
                "AutoModel": "modeling_internlm3.InternLM3Model",
                "AutoModelForCausalLM": "modeling_internlm3.InternLM3ForCausalLM",
            },
            "head_dim": 48,
            "bias": False,
            "qkv_bias": False,
            "rope_scaling": {"factor": 6.0, "rope_type": "dynamic"},
            "rope_theta": 50000000,
            "rms_norm_eps": 1e-5,
            "pad_token_id": eos,
        }
        template = "internvl2_5"
    else:
        raise ValueError(f"--llm {llm!r}: expected one of {', '.join(LLMS)}")
    vision.update(
        {
            "hidden_size": 64,
            "num_attention_heads": 4,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "image_size": IMAGE_SIZE,
            "patch_size": PATCH,
            "layer_norm_eps": 1e-6,
            "initializer_factor": 0.1,
            "use_flash_attn": False,
        }
    )
    llm_config.update(
        {
            "hidden_size": 128,
            "intermediate_size": 256,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "num_hidden_layers": 2,
            "hidden_act": "silu",
            "initializer_range": 0.02,
            "max_position_embeddings": 2048,
            "vocab_size": vocab_size,
            "bos_token_id": bos,
            "eos_token_id": eos,
            "tie_word_embeddings": False,
            "use_cache": True,
            "torch_dtype": "float32",
        }
    )
    chat = {
        "template": template,
        "force_image_size": IMAGE_SIZE,
        "downsample_ratio": 0.5,
        "ps_version": "v2",
        "select_layer": -1,
        "dynamic_image_size": True,
        "use_thumbnail": True,
        "min_dynamic_patch": 1,
        "max_dynamic_patch": 6,
    }
    return vision, llm_config, chat


def make_tiny(
    out: str | Path,
    layout: str = "original",
    llm: str = "internlm2",
    seed: int = 0,
    shape: dict | None = None,
    internvl_root: str | Path | None = None,
):
    """Build and write the checkpoint; returns the final path.

    ``shape`` overrides the tiny sizes: ``{"vision": {...}, "llm": {...}, "chat": {...}}``
    with vision_config / llm_config / chat-config keys (bench/bench_vs_hf.py builds its
    192x4 ViT + 512x8 LLM at 224 px this way). ``llm.vocab_size`` may exceed the tokenizer.
    ``internvl_root`` (an InternVL checkout): the original layout also gets the InternLM2
    tokenizer's remote code from it (tiny_original), so the official code loads it as is.
    """
    import torch

    from internvl_chat.model import InternVisionConfig, InternVLChatConfig, InternVLChatModel
    from internvl_chat.model.checkpoint import LAYOUTS, attach_tokenizer, save_model
    from internvl_chat.tokenizer import load_tokenizer, save_tiny_tokenizer
    from internvl_chat.tools.tiny_original import add_original_files

    if layout not in LAYOUTS:
        raise ValueError(f"--layout {layout!r}: expected one of {', '.join(LAYOUTS)}")
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists; remove it or choose another OUT")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.tmp-") as tmp:
        tok_dir = Path(tmp) / "tokenizer"
        save_tiny_tokenizer(tok_dir, TOKENIZER_OF.get(llm, llm))
        tok = load_tokenizer(tok_dir)
        chatml_eos = llm in ("qwen2", "qwen3")
        eos = tok.convert_tokens_to_ids("<|im_end|>") if chatml_eos else tok.eos_token_id
        vision, llm_config, chat = tiny_configs(llm, len(tok), tok.bos_token_id, eos)
        shape = shape or {}
        vision.update(shape.get("vision", {}))
        llm_config.update(shape.get("llm", {}))
        chat.update(shape.get("chat", {}))
        if llm_config["vocab_size"] < len(tok):
            raise ValueError(f"llm vocab_size {llm_config['vocab_size']} < tokenizer {len(tok)}")
        cfg = InternVLChatConfig(
            vision_config=InternVisionConfig(**vision), llm_config=llm_config, **chat
        )
        torch.manual_seed(seed)
        model = InternVLChatModel(cfg, attn_implementation="sdpa")
        model.tokenizer_dir = tok_dir
        attach_tokenizer(model, tok)
        staged = Path(tmp) / "model"
        save_model(model, staged, layout=layout)
        if layout == "original":
            add_original_files(staged, llm, internvl_root)
        staged.rename(out)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--layout", default="original", choices=["original", "components", "hf"])
    p.add_argument("--llm", default="internlm2", choices=LLMS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--internvl-root", help="InternVL checkout: InternLM2 remote-code tokenizer")
    a = p.parse_args(argv)
    try:
        path = make_tiny(a.out, a.layout, a.llm, a.seed, internvl_root=a.internvl_root)
    except (ValueError, FileExistsError) as e:
        print(f"make_tiny: {e}", file=sys.stderr)
        return 2
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    print(f"wrote {path} ({a.layout}, {a.llm}, {size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
