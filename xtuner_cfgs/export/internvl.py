"""XTuner InternVL_V1_5 state dict -> the official (original) InternVL layout (to_hf.py `internvl`)."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from xtuner_cfgs.export.common import (
    WEIGHT_FILES,
    ConversionError,
    _lora_alpha,
    apply_trained,
    load_xtuner_state,
)


def read_weights(folder: Path) -> dict:
    """Every tensor of a HF-style folder: model.safetensors, pytorch_model.bin, or sharded."""
    import torch
    from safetensors.torch import load_file

    def load(path: Path) -> dict:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)

    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (folder / index).is_file():
            shards = sorted(set(json.loads((folder / index).read_text())["weight_map"].values()))
            return {k: v for shard in shards for k, v in load(folder / shard).items()}
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return load(folder / name)
    raise ConversionError(f"{folder}: no model.safetensors, pytorch_model.bin or shard index")


def internvl_to_official(
    base: str | Path, ckpt: str | Path | dict, out: str | Path, *, lora_alpha: float | None = None
) -> list[str]:
    """Write `out` = `base` (original InternVL layout) with the XTuner-trained tensors applied.

    `ckpt` is a path (see load_xtuner_state) or the state dict itself. Returns the changed
    weight names. `out` is written beside itself and renamed into place."""
    from safetensors.torch import save_file

    base, out = Path(base), Path(out)
    cfg_path = base / "config.json"
    if not cfg_path.is_file():
        raise ConversionError(f"{base}: no config.json: not an InternVL checkpoint folder")
    model_type = json.loads(cfg_path.read_text()).get("model_type")
    if model_type != "internvl_chat":
        raise ConversionError(
            f"{cfg_path}: model_type {model_type!r}; the official layout has internvl_chat"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    trained = ckpt if isinstance(ckpt, dict) else load_xtuner_state(ckpt)
    stray = sorted(k for k in trained if not k.startswith("model."))
    if stray:
        raise ConversionError(
            "not an XTuner InternVL_V1_5 state dict (keys without 'model.'): " + ", ".join(stray)
        )
    sd, changed = apply_trained(
        read_weights(base),
        {k.removeprefix("model."): v for k, v in trained.items()},
        lora_alpha=lora_alpha,
        where=f"base checkpoint {base}",
    )
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    tmp.chmod(0o755)
    for item in base.iterdir():
        if item.name in WEIGHT_FILES or item.suffix == ".safetensors":
            continue
        copy = shutil.copytree if item.is_dir() else shutil.copy2
        copy(item, tmp / item.name)
    save_file(
        {k: v.detach().contiguous().clone() for k, v in sd.items()},
        str(tmp / "model.safetensors"),
        metadata={"format": "pt"},
    )
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return changed


def internvl_run_to_official(config: str | Path, ckpt: str | Path, out: str | Path) -> dict:
    """A finished XTuner InternVL run -> the official layout: the base checkpoint is the
    config's `model.model_path`, the LoRA alpha its `model.llm_lora.lora_alpha` (if any).
    Runs in the XTuner environment (mmengine reads the config)."""
    from mmengine.config import Config

    model = Config.fromfile(str(config)).model
    base = model.get("model_path")
    if not base:
        raise ConversionError(f"{config}: model.model_path is not set")
    alpha = _lora_alpha(model.get("llm_lora")) or _lora_alpha(model.get("visual_encoder_lora"))
    changed = internvl_to_official(base, ckpt, out, lora_alpha=alpha)
    return {"out": str(out), "base": str(base), "changed": changed}
