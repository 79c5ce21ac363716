"""InternVL-format data: meta JSON + jsonl -> tiles, tokens and loss masks.

`from internvl_chat.data import build_train_dataset, collate, LengthGroupedSampler, DataConfig`

Torch-free parts (tiling, templates, meta scan) import eagerly; the torch-side names load on
first use, so `internvl_chat.tools.validate_data` stays light.
"""

from internvl_chat.data.config import DataConfig
from internvl_chat.data.tiling import find_grid, num_image_token, tile_image

_TORCH_SIDE = {
    "build_train_dataset": "internvl_chat.data.dataset",
    "collate": "internvl_chat.data.dataset",
    "block_causal_mask": "internvl_chat.data.dataset",
    "TrainDataset": "internvl_chat.data.dataset",
    "PackedDataset": "internvl_chat.data.dataset",
    "LengthGroupedSampler": "internvl_chat.data.sampler",
    "ResumableSampler": "internvl_chat.data.sampler",
}

__all__ = ["DataConfig", "find_grid", "num_image_token", "tile_image", *_TORCH_SIDE]


def __getattr__(name):
    if name in _TORCH_SIDE:
        import importlib

        return getattr(importlib.import_module(_TORCH_SIDE[name]), name)
    raise AttributeError(f"module 'internvl_chat.data' has no attribute {name!r}")
