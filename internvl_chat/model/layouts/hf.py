"""``hf``: transformers-native InternVL (model_type ``internvl``).

Weights ``vision_tower.*``, ``multi_modal_projector.*``, ``language_model.model.*``,
``language_model.lm_head.*``; the ViT with split q/k/v (so backbone LoRA is merged when saved)
and the LLM in transformers' names. Our chat settings ride along under ``internvl_chat`` in
``config.json`` (ignored by transformers).
"""

from __future__ import annotations

from pathlib import Path

import torch

from internvl_chat.model.internvl import InternVLChatConfig
from internvl_chat.model.layouts import Loaded, Parts
from internvl_chat.model.llm import native_config
from internvl_chat.model.vit import InternVisionConfig
from internvl_chat.model.weights import (
    prefixed,
    read_json,
    read_weights,
    save_tokenizer,
    split,
    write_json,
    write_weights,
)

VIT_LORA = False
LLM_LORA = True
LLM_NATIVE = True

_VIT_RENAMES = (
    ("embeddings.class_embedding", "embeddings.cls_token"),
    ("embeddings.patch_embedding.", "embeddings.patch_embeddings.projection."),
    ("embeddings.position_embedding", "embeddings.position_embeddings"),
    ("encoder.layers.", "encoder.layer."),
    (".attn.proj.", ".attention.projection_layer."),
    (".attn.q_norm.", ".attention.q_norm."),
    (".attn.k_norm.", ".attention.k_norm."),
    (".norm1.", ".layernorm_before."),
    (".norm2.", ".layernorm_after."),
    (".ls1", ".lambda_1"),
    (".ls2", ".lambda_2"),
)
_MLP = {"0": "layer_norm", "1": "linear_1", "3": "linear_2"}
_ARCH_OF_TYPE = {
    "qwen2": "Qwen2ForCausalLM",
    "llama": "LlamaForCausalLM",
    "phi3": "Phi3ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "internlm3": "InternLM3ForCausalLM",
}
_CHAT_KEYS = ("template", "dynamic_image_size", "use_thumbnail", "min_dynamic_patch",
              "max_dynamic_patch", "pad2square", "use_llm_lora")  # fmt: skip


def _rename(key: str, table, reverse: bool = False) -> str:
    for a, b in table:
        key = key.replace(b, a) if reverse else key.replace(a, b)
    return key


def vit_to_hf(sd: dict) -> dict:
    out = {}
    for key, w in sd.items():
        if ".attn.qkv." in key:
            base, suffix = key.split(".attn.qkv.")
            base = _rename(base + ".", _VIT_RENAMES).rstrip(".")
            for name, part in zip(("q_proj", "k_proj", "v_proj"), w.chunk(3, dim=0), strict=True):
                out[f"{base}.attention.{name}.{suffix}"] = part
            continue
        out[_rename(key, _VIT_RENAMES)] = w
    return out


def vit_from_hf(sd: dict) -> dict:
    out = {}
    for key, w in sd.items():
        if ".attention.q_proj." in key:
            base, suffix = key.split(".attention.q_proj.")
            parts = [sd[f"{base}.attention.{n}_proj.{suffix}"] for n in "qkv"]
            out[_rename(f"{base}.attn.qkv.{suffix}", _VIT_RENAMES, reverse=True)] = torch.cat(
                parts, 0
            )
            continue
        if ".attention.k_proj." in key or ".attention.v_proj." in key:
            continue
        out[_rename(key, _VIT_RENAMES, reverse=True)] = w
    return out


def hf_config(cfg: InternVLChatConfig, img_context_token_id: int | None) -> dict:
    from transformers import InternVLConfig

    if cfg.ps_version != "v2":
        raise ValueError("the transformers-native layout only supports ps_version v2")
    v = cfg.vision_config
    text = native_config(cfg.llm_config).to_dict()
    for k in ("_attn_implementation", "_attn_implementation_internal"):
        text.pop(k, None)
    hf = InternVLConfig(
        vision_config={
            "hidden_size": v.hidden_size,
            "num_hidden_layers": v.num_hidden_layers,
            "num_attention_heads": v.num_attention_heads,
            "intermediate_size": v.intermediate_size,
            "attention_bias": v.qkv_bias,
            "use_qk_norm": v.qk_normalization,
            "norm_type": v.norm_type,
            "layer_norm_eps": v.layer_norm_eps,
            "image_size": [cfg.image_size, cfg.image_size],
            "patch_size": [v.patch_size, v.patch_size],
            "num_channels": v.num_channels,
            "layer_scale_init_value": v.initializer_factor,
            "use_mean_pooling": True,  # no final norm, as InternViT
            "hidden_act": v.hidden_act,
        },
        text_config=text,
        image_token_id=img_context_token_id,
        image_seq_length=cfg.num_image_token,
        downsample_ratio=cfg.downsample_ratio,
        vision_feature_layer=cfg.select_layer,
        vision_feature_select_strategy="default",
        tie_word_embeddings=bool(text.get("tie_word_embeddings", False)),
    ).to_dict()
    hf["architectures"] = ["InternVLForConditionalGeneration"]
    # Our settings that native InternVL keeps in its processor, and the GitHub format's own
    # llm_config and extra keys (remote-code names, InternLM2's family), so that converting
    # back gives the same config.json; ignored by transformers.
    hf["internvl_chat"] = {k: getattr(cfg, k) for k in _CHAT_KEYS}
    hf["internvl_chat"].update(
        llm_config=cfg.llm_config, vision_config=v.to_dict(), extra=cfg.extra
    )
    return hf


def config_from_hf(d: dict) -> InternVLChatConfig:
    v, kept = d["vision_config"], d.get("internvl_chat", {})
    if not v.get("use_mean_pooling", True):
        raise ValueError(
            "config.json vision_config.use_mean_pooling false (final norm) is unsupported"
        )
    size = v.get("image_size", [448, 448])
    patch = v.get("patch_size", [14, 14])
    size = size[0] if isinstance(size, list) else size
    patch = patch[0] if isinstance(patch, list) else patch
    vision = (
        InternVisionConfig.from_dict(kept["vision_config"])
        if "vision_config" in kept
        else InternVisionConfig(
            hidden_size=v["hidden_size"],
            num_hidden_layers=v["num_hidden_layers"],
            num_attention_heads=v["num_attention_heads"],
            intermediate_size=v["intermediate_size"],
            qkv_bias=v.get("attention_bias", False),
            qk_normalization=v.get("use_qk_norm", False),
            norm_type=v.get("norm_type", "layer_norm"),
            layer_norm_eps=v.get("layer_norm_eps", 1e-6),
            image_size=size,
            patch_size=patch,
            num_channels=v.get("num_channels", 3),
            initializer_factor=v.get("layer_scale_init_value", 0.1),
            hidden_act=v.get("hidden_act", "gelu"),
        )
    )
    extra = kept
    text = dict(extra.get("llm_config") or d["text_config"])
    text.setdefault("architectures", [_ARCH_OF_TYPE.get(text.get("model_type"), "")])
    archs = text["architectures"]
    if "llm_config" not in extra and (not archs or archs[0] not in _ARCH_OF_TYPE.values()):
        text["architectures"] = [_ARCH_OF_TYPE.get(text.get("model_type"), "?")]
    chat = {k: v for k, v in extra.items() if k in _CHAT_KEYS and k != "use_llm_lora"}
    return InternVLChatConfig(
        vision_config=vision,
        llm_config=text,
        select_layer=d.get("vision_feature_layer", -1),
        force_image_size=size,
        downsample_ratio=d.get("downsample_ratio", 0.5),
        ps_version="v2",
        **chat,
        use_llm_lora=extra.get("use_llm_lora", 0),
        extra=dict(extra.get("extra") or {}),
    )


def read(root: Path) -> Loaded:
    config = read_json(root / "config.json")
    raw = read_weights(root)
    sd = prefixed("vision_model.", vit_from_hf(split(raw, "vision_tower.")))
    index_of = {n: i for i, n in _MLP.items()}
    for k, v in split(raw, "multi_modal_projector.").items():
        name, rest = k.split(".", 1)
        sd[f"mlp1.{index_of[name]}.{rest}"] = v
    sd.update({k: v for k, v in raw.items() if k.startswith("language_model.")})
    return Loaded(config_from_hf(config), sd, tokenizer_dir=root,
                  image_token_id=config.get("image_token_id"))  # fmt: skip


def write(out: Path, cfg: InternVLChatConfig, parts: Parts, model, tokenizer) -> None:
    weights = prefixed("vision_tower.", vit_to_hf(parts.vit))
    for k, v in parts.mlp.items():
        idx, rest = k.split(".", 1)
        weights[f"multi_modal_projector.{_MLP[idx]}.{rest}"] = v
    weights.update(prefixed("language_model.", parts.llm))
    write_weights(out, weights)
    write_json(out / "config.json", hf_config(cfg, model.img_context_token_id))
    save_tokenizer(model, out, tokenizer)
