"""``original``: the OpenGVLab/InternVL2-* layout.

``config.json`` with model_type ``internvl_chat`` (vision_config + llm_config), weights
``vision_model.*``, ``mlp1.*``, ``language_model.*`` (the LLM in its own naming, e.g.
InternLM2's fused ``wqkv``), tokenizer files beside them.
"""

from __future__ import annotations

from pathlib import Path

from internvl_chat.model.internvl import InternVLChatConfig
from internvl_chat.model.layouts import Loaded, Parts
from internvl_chat.model.weights import (
    prefixed,
    read_json,
    read_weights,
    save_tokenizer,
    write_json,
    write_weights,
)

VIT_LORA = True
LLM_LORA = True
LLM_NATIVE = False


def read(root: Path) -> Loaded:
    cfg = InternVLChatConfig.from_dict(read_json(root / "config.json"))
    return Loaded(cfg, read_weights(root), tokenizer_dir=root)


def write(out: Path, cfg: InternVLChatConfig, parts: Parts, model, tokenizer) -> None:
    weights = prefixed("vision_model.", parts.vit)
    weights.update(prefixed("mlp1.", parts.mlp))
    weights.update(prefixed("language_model.", parts.llm))
    write_weights(out, weights)
    write_json(out / "config.json", cfg.to_dict())
    save_tokenizer(model, out, tokenizer)
