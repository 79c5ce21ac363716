"""Fold LoRA adapters into the base weights and write a plain checkpoint.

`python -m internvl_chat.tools.merge_lora IN OUT`

IN is any checkpoint our loader reads whose config has ``use_llm_lora`` / ``use_backbone_lora``
set (LoRA is re-wrapped from the config so the adapter weights load, as the official tool
does). OUT has the same layout with the adapters merged and ``use_*_lora`` = 0, so it loads
with the same loader and, for the transformers-native layout, with ``AutoModel``. Written
next to OUT and renamed into place.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path


def merge_lora(src: str | Path, dst: str | Path) -> Path:
    from internvl_chat.model import attach_tokenizer, load_model, save_model
    from internvl_chat.tokenizer import load_tokenizer

    dst = Path(dst)
    if dst.exists():
        raise FileExistsError(f"{dst} exists; remove it or choose another OUT")
    model = load_model(src)
    tokenizer = load_tokenizer(model.tokenizer_dir)
    attach_tokenizer(model, tokenizer)
    merged = []
    if model.config.use_backbone_lora:
        model.vision_model = model.vision_model.merge_and_unload()
        model.config.use_backbone_lora = 0
        merged.append("vision_model")
    if model.config.use_llm_lora:
        model.language_model = model.language_model.merge_and_unload()
        model.config.use_llm_lora = 0
        merged.append("language_model")
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dst.parent, prefix=f".{dst.name}.tmp-") as tmp:
        staged = Path(tmp) / "model"
        save_model(model, staged, layout=model.layout)
        staged.rename(dst)
    print(f"merged LoRA of {', '.join(merged) or 'nothing (no adapters)'}: {src} -> {dst}")
    return dst


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("input")
    p.add_argument("output")
    a = p.parse_args(argv)
    try:
        merge_lora(a.input, a.output)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"merge_lora: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
