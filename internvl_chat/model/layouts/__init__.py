"""One reader/writer per on-disk checkpoint layout (see ``internvl_chat.model.checkpoint``).

Each layout module offers ``read(...) -> Loaded`` (weights in the model's in-memory names, the
LLM still in its family's naming) and ``write(out, cfg, parts, model, tokenizer)``, plus what
it can hold unconverted: ``VIT_LORA`` / ``LLM_LORA`` (unmerged adapters) and ``LLM_NATIVE``
(transformers names for the LLM instead of its family's own).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class Loaded:
    cfg: object  # InternVLChatConfig
    sd: dict
    tokenizer_dir: Path
    mlp_optional: bool = False  # components without mlp1.pth: the projector starts fresh
    image_token_id: int | None = None


@dataclass
class Parts:
    """A model's weights split by part, in the names the target layout stores."""

    vit: dict
    mlp: dict
    llm: dict
