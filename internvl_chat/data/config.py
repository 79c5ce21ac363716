"""Data settings, named as the official DataTrainingArguments (spec §2.2). No torch."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from internvl_chat.data.tiling import num_image_token
from internvl_chat.prompts import REVISIONS, system_message

NORMALIZE = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "clip": ((0.4814546, 0.4578275, 0.40821073), (0.2686295, 0.2613025, 0.2757711)),
    "siglip": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    conv_style: str = "internlm2-chat"
    """Template name: internlm2-chat, Hermes-2, phi3-chat, internvl2_5."""
    max_seq_length: int = 8192
    """Truncation length; samples whose image tokens would be cut are dropped."""
    force_image_size: int = 448
    """Tile side in pixels."""
    patch_size: int = 14
    """ViT patch size (from the model's vision_config)."""
    down_sample_ratio: float = 0.5
    """Pixel-shuffle ratio; with the two above gives tokens per tile."""
    dynamic_image_size: bool = True
    use_thumbnail: bool = True
    min_dynamic_patch: int = 1
    max_dynamic_patch: int = 12
    """Default tile budget; a meta entry's max_dynamic_patch overrides it."""
    normalize_type: str = "imagenet"
    pad2square: bool = False
    internvl_revision: str = "head"
    """Official code revision whose behaviour is reproduced: ``pin`` (764fdc9, InternVL 1.5
    checkpoints, seed 000) or ``head``; picks the default system message and edge cases."""
    system_message: str | None = None
    """None: the template's default at ``internvl_revision`` (internvl_chat.prompts)."""
    group_by_length: bool = False
    use_packed_ds: bool = False
    """Packed rows: several samples per row, attention kept inside each sample."""
    max_packed_tokens: int | None = None
    """Row length in packed mode; None: max_seq_length."""
    num_images_expected: int = 40
    """Most tiles per packed row."""
    max_bad_sample_ratio: float = 0.05
    """Fail the build when a dataset's share of broken samples exceeds this."""
    seed: int = 42

    @property
    def num_image_token(self) -> int:
        return num_image_token(self.force_image_size, self.patch_size, self.down_sample_ratio)

    @property
    def effective_system_message(self) -> str:
        if self.system_message is not None:
            return self.system_message
        return system_message(self.conv_style, self.internvl_revision)

    @classmethod
    def from_any(cls, cfg=None, **overrides) -> DataConfig:
        """From a DataConfig, a dict (e.g. train_args.json, unknown keys ignored) or an object
        with attributes. ``packed`` is accepted as an alias of ``use_packed_ds``."""
        if isinstance(cfg, DataConfig):
            return dataclasses.replace(cfg, **overrides)
        names = {f.name for f in dataclasses.fields(cls)}
        if cfg is None:
            src = {}
        elif isinstance(cfg, dict):
            src = dict(cfg)
        else:
            src = {n: getattr(cfg, n) for n in names | {"packed"} if hasattr(cfg, n)}
        if "packed" in src:
            src.setdefault("use_packed_ds", src.pop("packed"))
        src.update(overrides)
        return cls(**{k: v for k, v in src.items() if k in names and v is not None})

    def problems(self) -> list[str]:
        out = []
        if self.normalize_type not in NORMALIZE:
            out.append(
                f"normalize_type {self.normalize_type!r} is not one of {', '.join(NORMALIZE)}"
            )
        if not 1 <= self.min_dynamic_patch <= self.max_dynamic_patch:
            out.append(
                f"need 1 <= min_dynamic_patch ({self.min_dynamic_patch}) <= max_dynamic_patch "
                f"({self.max_dynamic_patch})"
            )
        if self.force_image_size % self.patch_size:
            out.append(
                f"force_image_size {self.force_image_size} is not a multiple of patch {self.patch_size}"
            )
        if self.internvl_revision not in REVISIONS:
            out.append(
                f"internvl_revision {self.internvl_revision!r} is not one of {', '.join(REVISIONS)}"
            )
        else:
            try:
                system_message(self.conv_style, self.internvl_revision)
            except ValueError as e:
                out.append(str(e))
        if self.max_seq_length < 16:
            out.append(f"max_seq_length {self.max_seq_length} is too small")
        if not 0 <= self.max_bad_sample_ratio <= 1:
            out.append(f"max_bad_sample_ratio {self.max_bad_sample_ratio} must be within [0, 1]")
        return out


def model_data_settings(model_dir) -> dict:
    """Tiling/template settings stored in a checkpoint's config.json, as DataConfig keys.

    Original layout: force_image_size, downsample_ratio, max/min_dynamic_patch, use_thumbnail,
    template, dynamic_image_size at top level and vision_config.patch_size / image_size.
    transformers-native layout (model_type "internvl"): vision_config.image_size and
    patch_size as [h, w] lists, downsample_ratio at top level.
    """
    import json
    from pathlib import Path

    path = Path(model_dir) / "config.json"
    if not path.exists():
        return {}
    cfg = json.loads(path.read_text(encoding="utf-8"))
    vision = cfg.get("vision_config") or {}

    def first(v):
        return v[0] if isinstance(v, list | tuple) else v

    out = {
        "force_image_size": cfg.get("force_image_size") or first(vision.get("image_size")),
        "patch_size": first(vision.get("patch_size")),
        "down_sample_ratio": cfg.get("downsample_ratio"),
        "dynamic_image_size": cfg.get("dynamic_image_size"),
        "use_thumbnail": cfg.get("use_thumbnail"),
        "min_dynamic_patch": cfg.get("min_dynamic_patch"),
        "max_dynamic_patch": cfg.get("max_dynamic_patch"),
        "conv_style": cfg.get("template"),
    }
    if cfg.get("model_type") == "internvl":  # native processor: always tiles + thumbnail
        for key in ("dynamic_image_size", "use_thumbnail"):
            out[key] = True if out[key] is None else out[key]
    return {k: v for k, v in out.items() if v is not None}
