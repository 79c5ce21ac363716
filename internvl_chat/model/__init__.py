"""The InternVL chat model, its checkpoint layouts, and what trains (freeze / LoRA)."""

from internvl_chat.model.checkpoint import (
    LAYOUTS,
    attach_tokenizer,
    detect_layout,
    load_model,
    save_model,
)
from internvl_chat.model.internvl import InternVLChatConfig, InternVLChatModel, pixel_shuffle
from internvl_chat.model.lora import merge_lora_state
from internvl_chat.model.trainable import configure_trainable
from internvl_chat.model.vit import InternVisionConfig, InternVisionModel

__all__ = [
    "LAYOUTS",
    "InternVLChatConfig",
    "InternVLChatModel",
    "InternVisionConfig",
    "InternVisionModel",
    "attach_tokenizer",
    "configure_trainable",
    "detect_layout",
    "load_model",
    "merge_lora_state",
    "pixel_shuffle",
    "save_model",
]
