"""Convert an InternVL checkpoint between the GitHub (remote-code) and the transformers-native
-HF formats, tensor for tensor.

`python -m internvl_chat.tools.convert IN OUT --to hf|github`

IN is either format (or separate vision/LLM components). No model is built: the weights are
renamed and, for InternLM2's fused ``wqkv``, reshaped, never cast, so IN -> OUT -> IN gives
back the same tensors, bit for bit, in the same dtype. The GitHub format's ``llm_config`` and
its other keys ride along in the -HF ``config.json`` (under ``internvl_chat``, which
transformers ignores), so converting back also restores the config. An official -HF checkpoint
without them converts to the GitHub format with the -HF LLM config (InternLM2 as Llama).
Adapters must be merged first (``internvl_chat.tools.merge_lora``). OUT is written next to
itself and renamed into place.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

from internvl_chat.model.checkpoint import FORMATS


def convert(src: str | Path, dst: str | Path, to: str) -> Path:
    from internvl_chat.model.checkpoint import _IO, _read
    from internvl_chat.model.layouts import Parts
    from internvl_chat.model.llm import from_native_state, to_native_state
    from internvl_chat.model.lora import has_lora
    from internvl_chat.model.weights import split

    if to not in FORMATS:
        raise ValueError(f"--to {to!r}: expected {' or '.join(FORMATS)}")
    dst = Path(dst)
    if dst.exists():
        raise FileExistsError(f"{dst} exists; remove it or choose another OUT")
    layout, loaded = _read(src, None, None, None)
    cfg, sd = loaded.cfg, loaded.sd
    if has_lora(sd) or cfg.use_llm_lora or cfg.use_backbone_lora:
        raise ValueError(f"{src}: holds LoRA adapters; merge them first (tools.merge_lora)")
    vit, mlp, llm = split(sd, "vision_model."), split(sd, "mlp1."), split(sd, "language_model.")
    target = FORMATS[to]
    # Readers give the LLM in the names the source stores: its family's (GitHub) or native (-HF).
    if layout == "hf" and target == "original":
        llm = from_native_state(llm, cfg.llm_config)
    elif layout != "hf" and target == "hf":
        llm = to_native_state(llm, cfg.llm_config)
    image_token_id = loaded.image_token_id
    if image_token_id is None:
        from internvl_chat.tokenizer import IMG_CONTEXT, load_tokenizer

        image_token_id = load_tokenizer(loaded.tokenizer_dir).convert_tokens_to_ids(IMG_CONTEXT)
    # What the writers ask of a model: where its tokenizer files are, its image token.
    model = SimpleNamespace(tokenizer_dir=loaded.tokenizer_dir, img_context_token_id=image_token_id)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dst.parent, prefix=f".{dst.name}.tmp-") as tmp:
        staged = Path(tmp) / "model"
        staged.mkdir()
        _IO[target].write(staged, cfg, Parts(vit, mlp, llm), model, None)
        staged.rename(dst)
    return dst


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--to", required=True, choices=sorted(FORMATS))
    a = p.parse_args(argv)
    try:
        out = convert(a.input, a.output, a.to)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"convert: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out} ({a.to} format)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
