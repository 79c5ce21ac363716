"""Load and save InternVL checkpoints in any of the three on-disk layouts.

The layouts (``original``, ``components``, ``hf``) each have one reader/writer module under
``internvl_chat.model.layouts``; this module picks one and does what is common: building the
model, converting the LLM between its family's naming and transformers', and LoRA handling.

In memory the model always uses the original names for the ViT and ``mlp1`` and the
transformers names for the LLM; LoRA-wrapped parts carry peft's names exactly as the official
code saves them. A LoRA part that the layout can only hold in a converted form (the fused
InternLM2 ``wqkv``; the split q/k/v of the native ViT; the separate component checkpoints) is
merged into its base weights when saved.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from internvl_chat.model.internvl import InternVLChatConfig, InternVLChatModel
from internvl_chat.model.layouts import Loaded, Parts, components, hf, original
from internvl_chat.model.llm import family_of, from_native_state, to_native_state
from internvl_chat.model.lora import has_lora, merge_lora_state, wrap_backbone_lora, wrap_llm_lora
from internvl_chat.model.weights import prefixed, read_json, read_weights, split

LAYOUTS = ("original", "components", "hf")
# The two formats every released model ships in: GitHub (remote code) and transformers' -HF.
FORMATS = {"github": "original", "hf": "hf"}
_IO = {"original": original, "components": components, "hf": hf}

__all__ = ["LAYOUTS", "attach_tokenizer", "detect_layout", "load_model", "read_weights",
           "save_model"]  # fmt: skip


def detect_layout(path: str | os.PathLike) -> str:
    p = Path(path)
    if (p / "config.json").exists():
        mt = read_json(p / "config.json").get("model_type")
        if mt == "internvl_chat":
            return "original"
        if mt == "internvl":
            return "hf"
        raise ValueError(
            f"{p / 'config.json'}: model_type {mt!r} is neither internvl_chat (original layout) "
            "nor internvl (transformers-native); for separate vision/LLM checkpoints set "
            "vision_path and llm_path instead of model_name_or_path"
        )
    if (p / "vision").is_dir() and (p / "llm").is_dir():
        return "components"
    raise FileNotFoundError(f"{p}: no config.json and no vision/ + llm/ folders: not a checkpoint")


# ---------------------------------------------------------------- load


def default_attn_implementation() -> str:
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        return "sdpa"
    return "flash_attention_2" if torch.cuda.is_available() else "sdpa"


def _read(model_name_or_path, vision_path, llm_path, mlp_path) -> tuple[str, Loaded]:
    if model_name_or_path is not None:
        root = Path(model_name_or_path)
        layout = detect_layout(root)
        if layout != "components":
            return layout, _IO[layout].read(root)
        vision_path, llm_path, mlp_path = components.paths(root)
    elif vision_path is None or llm_path is None:
        raise ValueError(
            "model_name_or_path is not set, and vision_path + llm_path are not both set: "
            "nothing to load"
        )
    return "components", components.read(vision_path, llm_path, mlp_path)


def load_model(
    model_name_or_path: str | os.PathLike | None = None,
    *,
    vision_path: str | os.PathLike | None = None,
    llm_path: str | os.PathLike | None = None,
    mlp_path: str | os.PathLike | None = None,
    overrides: dict | None = None,
    attn_implementation: str | None = None,
    dtype: torch.dtype = torch.float32,
) -> InternVLChatModel:
    """Build the model from a checkpoint of any layout, with parameters in ``dtype``.

    ``overrides`` sets chat-config fields before the modules are built (the trainer passes
    ``template``, ``select_layer``, ``ps_version``, ``force_image_size``, ...). The result
    carries ``.layout`` and ``.tokenizer_dir`` (where its tokenizer files live).
    """
    attn = attn_implementation or default_attn_implementation()
    layout, loaded = _read(model_name_or_path, vision_path, llm_path, mlp_path)
    cfg, sd = loaded.cfg, loaded.sd
    for k, v in (overrides or {}).items():
        if not hasattr(cfg, k):
            raise ValueError(f"unknown model setting {k!r}")
        setattr(cfg, k, v)

    # The LLM part of a checkpoint is in its family's naming; the model runs native names.
    llm_sd = split(sd, "language_model.")
    if family_of(cfg.llm_config) == "internlm2" and has_lora(llm_sd):
        raise ValueError(
            "InternLM2 checkpoint with unmerged LoRA on the fused wqkv is not supported: "
            "merge it with the official tools first"
        )
    sd = {k: v for k, v in sd.items() if not k.startswith("language_model.")}
    sd.update(prefixed("language_model.", to_native_state(llm_sd, cfg.llm_config)))

    target_size = cfg.image_size
    vit_size = cfg.vision_config.image_size
    cfg.force_image_size = None  # build at the checkpoint's size; resized below
    # Built directly in the target dtype: a 20B model never exists in fp32 on the host.
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        model = InternVLChatModel(cfg, attn_implementation=attn)
    finally:
        torch.set_default_dtype(previous)
    if cfg.use_backbone_lora:
        wrap_backbone_lora(model, cfg.use_backbone_lora)
    if cfg.use_llm_lora:
        wrap_llm_lora(model, cfg.use_llm_lora)
    _load_state(model, sd, mlp_optional=loaded.mlp_optional)
    if target_size != vit_size:
        model.vision_model.resize_pos_embeddings(target_size)
    cfg.force_image_size = target_size
    model.layout = layout
    model.tokenizer_dir = loaded.tokenizer_dir
    if layout == "hf":
        model.img_context_token_id = loaded.image_token_id
    return model


def _load_state(model: InternVLChatModel, sd: dict, mlp_optional: bool) -> None:
    own = model.state_dict()
    lm = model.language_model
    tied = bool(getattr(lm.config, "tie_word_embeddings", False))
    missing = [k for k in own if k not in sd]
    if tied:
        missing = [k for k in missing if not k.endswith("lm_head.weight")]
    if mlp_optional:
        missing = [k for k in missing if not k.startswith("mlp1.")]
    if not has_lora(sd):
        # A checkpoint without adapters leaves freshly wrapped LoRA at its (zero-delta) init.
        missing = [k for k in missing if ".lora_" not in k]
    unexpected = [k for k in sd if k not in own]
    bad_shape = [
        f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sd
        if k in own and sd[k].shape != own[k].shape
    ]
    if missing or unexpected or bad_shape:
        lines = [f"missing: {k}" for k in missing[:20]] + [
            f"unexpected: {k}" for k in unexpected[:20]
        ]
        lines += bad_shape[:20]
        raise ValueError(
            f"checkpoint does not match the model ({len(missing)} missing, {len(unexpected)} "
            f"unexpected, {len(bad_shape)} wrong shape):\n  " + "\n  ".join(lines)
        )
    model.load_state_dict(sd, strict=False)
    if tied:
        lm.tie_weights()


def attach_tokenizer(model: InternVLChatModel, tokenizer) -> None:
    """Set ``img_context_token_id`` and grow the embeddings if the tokenizer added tokens (§3)."""
    from internvl_chat.tokenizer import IMG_CONTEXT

    lm = model.language_model
    old = lm.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > old:
        lm.resize_token_embeddings(len(tokenizer))
        out = lm.get_output_embeddings().weight
        with torch.no_grad():
            out[old:] = out[:old].mean(0, keepdim=True)
        model.config.llm_config["vocab_size"] = len(tokenizer)
        model.tokens_added = len(tokenizer) - old
    model.img_context_token_id = tokenizer.convert_tokens_to_ids(IMG_CONTEXT)


# ---------------------------------------------------------------- save


def save_model(
    model: InternVLChatModel,
    out_dir: str | os.PathLike,
    layout: str | None = None,
    state_dict: dict | None = None,
    tokenizer=None,
) -> Path:
    """Write ``model`` (or ``state_dict`` in the model's own names) to ``out_dir`` in ``layout``.

    ``state_dict`` lets a ZeRO-3 trainer pass gathered full weights. Tokenizer files are
    copied from the source checkpoint (or saved from ``tokenizer`` if it gained tokens).
    """
    layout = layout or getattr(model, "layout", "original")
    if layout not in LAYOUTS:
        raise ValueError(f"layout {layout!r}: expected one of {', '.join(LAYOUTS)}")
    io = _IO[layout]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sd = state_dict if state_dict is not None else model.state_dict()
    sd = {k: v for k, v in sd.items() if "rotary_emb" not in k}
    cfg = InternVLChatConfig.from_dict(model.config.to_dict())

    vit, mlp, llm = split(sd, "vision_model."), split(sd, "mlp1."), split(sd, "language_model.")
    if getattr(model.language_model.config, "tie_word_embeddings", False):
        llm.pop("lm_head.weight", None)
    if has_lora(vit) and not io.VIT_LORA:
        vit = merge_lora_state(vit)
        cfg.use_backbone_lora = 0
    # The fused InternLM2 wqkv cannot hold the per-projection adapters in any layout.
    if has_lora(llm) and (family_of(cfg.llm_config) == "internlm2" or not io.LLM_LORA):
        llm = merge_lora_state(llm)
        cfg.use_llm_lora = 0
    if not has_lora(llm) and not io.LLM_NATIVE:
        llm = from_native_state(llm, cfg.llm_config)
    io.write(out, cfg, Parts(vit, mlp, llm), model, tokenizer)
    return out
