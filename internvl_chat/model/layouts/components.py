"""``components``: separate checkpoints for each part (seed 000: InternViT-6B + internlm2-chat-20b).

``vision/`` (an InternViT checkpoint), ``llm/`` (an LLM checkpoint with its tokenizer) and an
optional ``mlp1.pth`` projector state dict; ``model_name_or_path`` may be null with
``vision_path`` / ``llm_path`` / ``mlp_path`` set instead. Neither part can hold adapters, so
LoRA is merged when saved.
"""

from __future__ import annotations

from pathlib import Path

import torch

from internvl_chat.model.internvl import InternVLChatConfig
from internvl_chat.model.layouts import Loaded, Parts
from internvl_chat.model.vit import InternVisionConfig
from internvl_chat.model.weights import (
    load_bin,
    prefixed,
    read_json,
    read_weights,
    save_tokenizer,
    write_json,
    write_weights,
)

VIT_LORA = False
LLM_LORA = False
LLM_NATIVE = False


def paths(root: Path) -> tuple[Path, Path, Path | None]:
    """``(vision_path, llm_path, mlp_path)`` of a components folder."""
    return (
        root / "vision",
        root / "llm",
        root / "mlp1.pth" if (root / "mlp1.pth").exists() else None,
    )


def read(vision_path: Path, llm_path: Path, mlp_path: Path | None) -> Loaded:
    vision_cfg = InternVisionConfig.from_dict(read_json(Path(vision_path) / "config.json"))
    llm_config = read_json(Path(llm_path) / "config.json")
    cfg = InternVLChatConfig(vision_config=vision_cfg, llm_config=llm_config, ps_version="v2")
    sd = prefixed("vision_model.", read_weights(Path(vision_path)))
    sd.update(prefixed("language_model.", read_weights(Path(llm_path))))
    if mlp_path is not None:
        sd.update(prefixed("mlp1.", load_bin(str(mlp_path))))
    return Loaded(cfg, sd, tokenizer_dir=Path(llm_path), mlp_optional=mlp_path is None)


def write(out: Path, cfg: InternVLChatConfig, parts: Parts, model, tokenizer) -> None:
    (out / "vision").mkdir(exist_ok=True)
    (out / "llm").mkdir(exist_ok=True)
    write_weights(out / "vision", parts.vit)
    write_json(out / "vision" / "config.json", cfg.vision_config.to_dict())
    write_weights(out / "llm", parts.llm)
    write_json(out / "llm" / "config.json", cfg.llm_config)
    torch.save({k: v.detach().cpu().clone() for k, v in parts.mlp.items()}, out / "mlp1.pth")
    save_tokenizer(model, out / "llm", tokenizer)
