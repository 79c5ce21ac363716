"""LoRA: wrapping model parts with peft adapters, and folding adapters into base weights.

Adapters use lora_alpha = 2 r (spec §4.5) and carry peft's names (``base_model.model.``,
``base_layer``, ``lora_A.default``) exactly as the official code saves them.
"""

from __future__ import annotations

import math
import zlib

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


def parity_init(module, seed: int) -> int:
    """For a loss-parity check against the official trainer (``lora_parity_init``): each LoRA
    adapter's A drawn from its own generator, seeded by ``seed`` and the module's name from
    ``layers.`` on, and no LoRA dropout. Two programs that used their global RNGs differently
    before wrapping (the official InternViT draws its embeddings even when loading) then start
    from the same adapters and draw no masks; the launcher's edit P1 does the same to the
    official code. Returns how many adapters it set."""
    done = 0
    for name, m in module.named_modules():
        lora_a = getattr(m, "lora_A", None)
        if lora_a is None or "default" not in lora_a or "layers." not in name:
            continue
        key = name[name.index("layers.") :].encode()
        gen = torch.Generator().manual_seed(seed + zlib.crc32(key))
        torch.nn.init.kaiming_uniform_(lora_a["default"].weight, a=math.sqrt(5), generator=gen)
        m.lora_dropout["default"] = torch.nn.Identity()
        done += 1
    return done


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
