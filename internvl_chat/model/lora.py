"""LoRA: wrapping model parts with peft adapters, and folding adapters into base weights.

Adapters use lora_alpha = 2 r (spec §4.5) and carry peft's names (``base_model.model.``,
``base_layer``, ``lora_A.default``) exactly as the official code saves them.
"""

from __future__ import annotations

import torch

from internvl_chat.model.llm import LORA_TARGETS

LORA_SCALING = 2.0  # lora_alpha / r
BACKBONE_LORA_TARGETS = ["attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"]
_PEFT_PREFIX = "base_model.model."


def wrap_backbone_lora(model, r: int) -> None:
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.05, target_modules=BACKBONE_LORA_TARGETS)
    model.vision_model = get_peft_model(model.vision_model, cfg)
    model.config.use_backbone_lora = r


def wrap_llm_lora(model, r: int) -> None:
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(
        r=r,
        lora_alpha=2 * r,
        lora_dropout=0.05,
        target_modules=LORA_TARGETS[model.config.family],
        task_type="CAUSAL_LM",
    )
    model.language_model = get_peft_model(model.language_model, cfg)
    model.language_model.enable_input_require_grads()
    model.config.use_llm_lora = r


def merge_lora_state(sd: dict[str, torch.Tensor], scaling: float = LORA_SCALING) -> dict:
    """Fold every peft LoRA pair into its base weight and drop peft's prefixes.

    ``W = W_base + scaling * B @ A`` (dropout is inactive at inference).
    """
    out: dict[str, torch.Tensor] = {}
    for key, w in sd.items():
        if ".lora_A." in key or ".lora_B." in key or ".lora_embedding_" in key:
            continue
        if ".base_layer." in key:
            mod, suffix = key.split(".base_layer.")
            if suffix == "weight" and f"{mod}.lora_A.default.weight" in sd:
                a = sd[f"{mod}.lora_A.default.weight"].float()
                b = sd[f"{mod}.lora_B.default.weight"].float()
                w = (w.float() + scaling * (b @ a)).to(w.dtype)
            key = f"{mod}.{suffix}"
        out[key.replace(_PEFT_PREFIX, "")] = w
    return out


def has_lora(sd: dict) -> bool:
    return any(".lora_A." in k for k in sd)
