"""`--mm-data` (RUN_DIR/mindspeed/data.json) for MindSpeed-MM v2.2.0: dataset_param +
dataloader_param, the tokenizer from the *unconverted* HF dir as MindSpeed-MM's README
requires (shared/specs/mindspeed_mm.md). Pure."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from launcher.config.spec import JobSpec

NORMALIZE = {
    "imagenet": ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    "clip": ([0.4814546, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]),
    "siglip": ([0.5, 0.5, 0.5], [0.5, 0.5, 0.5]),
}


def dataset_paths(
    spec: JobSpec, entries: Mapping[str, Any] | None, eval_text: str | None = None
) -> tuple[list[tuple[str, str, float]], str | None]:
    """[(data_path, data_folder, repeat_time)] of `entries` (the meta JSON as the check stage
    read it) and the validation annotation of `eval_text` (data.eval_meta_file's), if any."""
    d = spec.data
    if d.generate == "synthetic":
        root = str(Path(d.dir))
        return [(f"{root}/train.jsonl", root, 1)], None
    found = (entries or {}).values()
    train = [(e["annotation"], e["root"], e.get("repeat_time", 1)) for e in found]
    val = None
    if eval_text is not None:
        evals = list(json.loads(eval_text).values())
        val = evals[0]["annotation"] if evals else None
    return train, val


def data_json(
    spec: JobSpec, entries: Mapping[str, Any] | None, eval_text: str | None = None
) -> dict[str, Any]:
    m, d = spec.model, spec.data
    train, val = dataset_paths(spec, entries, eval_text)
    data_path, data_folder, repeat = train[0] if train else ("", "", 1)
    repeat = int(repeat) if float(repeat).is_integer() else repeat
    basic: dict[str, Any] = {
        "data_path": data_path,
        "data_folder": data_folder,
        "repeat_time": repeat,
    }
    if val:
        basic["val_dataset"] = val
    mean, std = NORMALIZE[m.normalize_type]
    size = m.force_image_size
    return {
        "dataset_param": {
            "dataset_type": "multimodal",
            "basic_parameters": basic,
            "preprocess_parameters": {
                "image_reader_type": "torchvision",
                "train_pipeline": {
                    "image": [
                        {
                            "trans_type": "Resize",
                            "param": {
                                "size": [size, size],
                                "interpolation": "BICUBIC",
                                "antialias": None,
                            },
                        },
                        {"trans_type": "ToTensor"},
                        {"trans_type": "norm_fun", "param": {"mean": mean, "std": std}},
                    ]
                },
            },
            "tokenizer_config": {
                "hub_backend": "hf",
                "autotokenizer_name": "AutoTokenizer",
                "from_pretrained": m.path,
                "add_eos_token": False,
                "use_fast": False,
            },
            "use_text_processer": True,
            "template_name": m.mindspeed.template or m.template,
            "patch_size": m.patch_size,
            "image_size": size,
            "down_sample_ratio": m.downsample_ratio,
            "group_by_length": d.group_by_length,
            "dynamic_image_size": m.dynamic_image_size,
            "use_thumbnail": m.use_thumbnail,
            "min_dynamic_patch": m.min_dynamic_patch,
            "max_dynamic_patch": m.max_dynamic_patch,
            "min_num_frame": 4,
            "max_num_frame": 12,
            "sampling_method": "rand",
        },
        "dataloader_param": {
            "dataloader_mode": "sampler",
            "shuffle": True,
            "drop_last": True,
            "pin_memory": True,
            "sampler_type": "BaseRandomBatchSampler",
            "collate_param": {"model_name": "internvl", "pad_id": m.mindspeed.pad_id},
        },
    }
