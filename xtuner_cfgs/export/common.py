"""XTuner checkpoints and LoRA pairs: what every export reads (see xtuner_cfgs/to_hf.py)."""

from __future__ import annotations

import pickle
import types
from pathlib import Path

IMAGE_TOKEN = "<image>"
PEFT_PREFIX = "base_model.model."
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


class ConversionError(ValueError):
    """The inputs cannot be converted; the message lists every reason."""


class _AnyAttr(type):
    def __getattr__(cls, name):
        return cls


class _Unknown(dict, metaclass=_AnyAttr):
    """Stands in for a class the checkpoint names but this env lacks (mmengine's ConfigDict,
    MessageHub state in a DeepSpeed checkpoint): only the tensors are wanted."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


class _LenientUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            return _Unknown


_lenient_pickle = types.SimpleNamespace(
    Unpickler=_LenientUnpickler, load=pickle.load, __name__="pickle"
)


def load_xtuner_state(ckpt: str | Path) -> dict:
    """The model state dict of an XTuner checkpoint: a .pth file or a DeepSpeed checkpoint dir.

    A DeepSpeed dir's `mp_rank_00_model_states.pt` holds the model under `module`; an
    mmengine .pth under `state_dict`; a bare state dict is taken as is."""
    import torch

    path = Path(ckpt)
    if path.is_dir():
        path = path / "mp_rank_00_model_states.pt"
    if not path.is_file():
        raise ConversionError(f"{ckpt}: no checkpoint file (nor mp_rank_00_model_states.pt)")
    obj = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_lenient_pickle)
    for key in ("module", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if any(v.numel() == 0 for v in obj.values()):
        # ZeRO-3 keeps only placeholders in the module state: gather from the partitions.
        from deepspeed.utils.zero_to_fp32 import (
            get_fp32_state_dict_from_zero_checkpoint,
        )

        return get_fp32_state_dict_from_zero_checkpoint(str(path.parent.parent), path.parent.name)
    return obj


def _lora_key(key: str) -> tuple[str, str] | None:
    """'a.b.lora_A.default.weight' -> ('a.b', 'A'); None for other keys."""
    for part in ("A", "B"):
        for tag in (f".lora_{part}.default.weight", f".lora_{part}.weight"):
            if key.endswith(tag):
                return key[: -len(tag)], part
    return None


def apply_trained(
    base: dict, trained: dict, *, lora_alpha: float | None, where: str = "base"
) -> tuple[dict, list[str]]:
    """`base` with `trained` laid over it: plain tensors replace, LoRA pairs are merged.

    Both use the base's names (peft's `base_model.model.` and `.base_layer` are dropped). The
    merge is W += B @ A * lora_alpha / r with r = A.shape[0], in fp32, cast back to W's dtype.
    Returns (new state dict, names changed). Raises ConversionError listing every problem.
    """
    out = dict(base)
    problems, changed = [], []
    pairs: dict[str, dict[str, object]] = {}
    for key, value in trained.items():
        key = key.replace(PEFT_PREFIX, "").replace(".base_layer.", ".")
        lora = _lora_key(key)
        if lora:
            pairs.setdefault(lora[0], {})[lora[1]] = value
        elif key not in base:
            problems.append(f"trained tensor {key!r} has no counterpart in the {where}")
        elif tuple(value.shape) != tuple(base[key].shape):
            problems.append(
                f"{key}: trained shape {tuple(value.shape)} != {where} {tuple(base[key].shape)}"
            )
        else:
            out[key] = value.to(base[key].dtype)
            changed.append(key)
    if pairs and lora_alpha is None:
        problems.append("the checkpoint has LoRA pairs but no lora_alpha is known (--lora-alpha)")
    for mod, ab in sorted(pairs.items()):
        target = f"{mod}.weight"
        if set(ab) != {"A", "B"}:
            problems.append(f"{mod}: LoRA has only lora_{''.join(ab)}")
        elif target not in out:
            problems.append(f"LoRA on {mod!r}, but the {where} has no {target!r}")
        elif lora_alpha is not None:
            a, b, w = ab["A"].float(), ab["B"].float(), out[target]
            out[target] = (w.float() + (b @ a) * (lora_alpha / a.shape[0])).to(w.dtype)
            changed.append(target)
    if problems:
        raise ConversionError("cannot apply the trained weights:\n  - " + "\n  - ".join(problems))
    return out, changed


def _lora_alpha(lora_cfg) -> float | None:
    return None if not lora_cfg else float(lora_cfg.get("lora_alpha"))
