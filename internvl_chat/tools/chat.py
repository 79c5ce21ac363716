"""Greedy answer to one question about one image, preprocessed exactly as in training.

`python -m internvl_chat.tools.chat MODEL_DIR --image IMG --question Q [--max-new-tokens N]`

Tiling (dynamic grid + thumbnail), normalisation and the chat template come from the
checkpoint's config (override with --template); the prompt is the template's system turn,
the user turn ``<image>\\nQ`` and the assistant header; decoding stops at the end-of-turn token.
"""

from __future__ import annotations

import argparse
import sys


class Chat:
    """A loaded model + tokenizer that answers questions (importable; ``main`` is the CLI)."""

    def __init__(self, model_dir: str, template: str | None = None, normalize_type="imagenet"):
        import torch

        from internvl_chat.data.dataset import Transform
        from internvl_chat.data.templates import get_template
        from internvl_chat.model import attach_tokenizer, load_model
        from internvl_chat.tokenizer import load_tokenizer

        self.torch = torch
        self.model = load_model(model_dir)
        self.tokenizer = load_tokenizer(self.model.tokenizer_dir)
        attach_tokenizer(self.model, self.tokenizer)
        self.model.eval()
        cfg = self.model.config
        default = "internlm2-chat" if cfg.family == "internlm2" else "Hermes-2"
        self.template = get_template(template or cfg.template or default)
        self.transform = Transform(False, cfg.image_size, cfg.pad2square, normalize_type)

    def tiles(self, image):
        from internvl_chat.data.tiling import plan_tiles, tile_image

        cfg = self.model.config
        grid, _ = plan_tiles(
            image.size,
            dynamic=cfg.dynamic_image_size,
            min_num=cfg.min_dynamic_patch,
            max_num=cfg.max_dynamic_patch,
            image_size=cfg.image_size,
            use_thumbnail=cfg.use_thumbnail,
        )
        if not cfg.dynamic_image_size:
            return [image]
        return tile_image(image, grid, cfg.image_size, cfg.use_thumbnail)

    def prompt_ids(self, question: str, n_tiles: int) -> list[int]:
        from internvl_chat.data.templates import render
        from internvl_chat.tokenizer import IMG_CONTEXT, IMG_START

        t = self.template
        system = self.model.config.extra.get("system_message") or t.default_system("head")
        text = "".join(s for s, _ in render(t, system, [("human", "<image>\n" + question)]))
        ids = self.tokenizer(text + t.assistant_header, add_special_tokens=True)["input_ids"]
        start = self.tokenizer.convert_tokens_to_ids(IMG_START)
        ctx = self.tokenizer.convert_tokens_to_ids(IMG_CONTEXT)
        out = []
        for tok in ids:
            out.append(tok)
            if tok == start:
                out += [ctx] * (self.model.num_image_token * n_tiles)
        return out

    def ask(self, image, question: str, max_new_tokens: int = 32) -> str:
        import random

        torch = self.torch
        tiles = self.tiles(image.convert("RGB"))
        pixel_values = torch.stack([self.transform(t, random.Random(0)) for t in tiles])
        ids = torch.tensor([self.prompt_ids(question, len(tiles))])
        stop = {self.tokenizer.convert_tokens_to_ids(self.template.end)}
        if self.tokenizer.eos_token_id is not None:
            stop.add(self.tokenizer.eos_token_id)
        new = self.model.generate(pixel_values, ids, max_new_tokens, tuple(stop))
        return self.tokenizer.decode(new, skip_special_tokens=True).strip()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model_dir")
    p.add_argument("--image", required=True)
    p.add_argument("--question", required=True)
    p.add_argument("--template", default=None)
    p.add_argument("--max-new-tokens", type=int, default=32)
    a = p.parse_args(argv)
    from PIL import Image

    try:
        with Image.open(a.image) as im:
            image = im.convert("RGB")
    except OSError as e:
        print(f"chat: cannot read image {a.image}: {e}", file=sys.stderr)
        return 2
    print(Chat(a.model_dir, a.template).ask(image, a.question, a.max_new_tokens))
    return 0


if __name__ == "__main__":
    sys.exit(main())
