"""Checkpoint files: config JSON, weight files (safetensors or .bin, single or sharded), tokenizer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

TOKENIZER_FILES = (
    "tokenizer.model",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "generation_config.json",
)


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: missing (expected a checkpoint config)") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: invalid JSON: {e.msg}") from None


def write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint folder: safetensors (single or sharded) or pytorch .bin."""
    from safetensors.torch import load_file

    folder = Path(folder)
    for index_name, loader in (
        ("model.safetensors.index.json", load_file),
        ("pytorch_model.bin.index.json", load_bin),
    ):
        index = folder / index_name
        if index.exists():
            shards = sorted(set(read_json(index)["weight_map"].values()))
            sd: dict[str, torch.Tensor] = {}
            for shard in shards:
                sd.update(loader(str(folder / shard)))
            return sd
    if (folder / "model.safetensors").exists():
        return load_file(str(folder / "model.safetensors"))
    if (folder / "pytorch_model.bin").exists():
        return load_bin(str(folder / "pytorch_model.bin"))
    raise FileNotFoundError(
        f"{folder}: no model.safetensors, pytorch_model.bin or sharded index found"
    )


def load_bin(path: str) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


def write_weights(folder: Path, sd: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    # safetensors refuses shared storage (tied embeddings); contiguous copies are fine.
    save_file(
        {k: v.detach().cpu().contiguous().clone() for k, v in sd.items()},
        str(folder / "model.safetensors"),
        metadata={"format": "pt"},
    )


def split(sd: dict, prefix: str) -> dict:
    """The entries under ``prefix``, with the prefix removed."""
    return {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}


def prefixed(prefix: str, sd: dict) -> dict:
    return {f"{prefix}{k}": v for k, v in sd.items()}


def save_tokenizer(model, out: Path, tokenizer) -> None:
    """Copy the source checkpoint's tokenizer files (or save ``tokenizer`` if it gained tokens)."""
    src = getattr(model, "tokenizer_dir", None)
    if tokenizer is not None and (src is None or getattr(model, "tokens_added", 0)):
        tokenizer.save_pretrained(str(out))
        return
    if src is None:
        return
    for name in TOKENIZER_FILES:
        f = Path(src) / name
        if f.exists() and f.resolve() != (out / name).resolve():
            shutil.copy(f, out / name)
