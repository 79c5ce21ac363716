"""`python -m internvl_chat.tools.make_synthetic OUT_DIR [--num-samples N --num-eval M --seed S]`

Writes a small InternVL-format data set a tiny model can learn: PNG images of one coloured
shape (varied sizes and aspect ratios, so dynamic tiling picks different grids) with the
questions "What colour is the shape?" / "What shape is this?", plus a few multi-image and
text-only samples. Layout::

    OUT_DIR/meta.json          {"synthetic_shapes": {root, annotation, data_augment, repeat_time, length}}
    OUT_DIR/meta_eval.json     the same for the eval split
    OUT_DIR/train.jsonl  OUT_DIR/eval.jsonl  OUT_DIR/images/*.png

Paths in the meta files are absolute, so the meta file can be copied (the launcher does).
Deterministic for a given seed; built in a temporary folder and renamed into place.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import sys
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw

from internvl_chat.tokenizer import COLOURS, SHAPES

RGB = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 60, 220),
    "yellow": (240, 220, 20),
    "purple": (140, 40, 170),
    "orange": (250, 140, 20),
    "black": (10, 10, 10),
    "white": (255, 255, 255),
}
# (width, height): square, wide, tall, 4:3, extreme strips; small enough for CPU tests.
SIZES = ((96, 96), (160, 80), (80, 160), (128, 96), (240, 60), (60, 240), (200, 200), (64, 48))
Q_COLOUR = "What colour is the shape?"
Q_SHAPE = "What shape is this?"


def draw_shape(shape: str, colour: str, size: tuple[int, int], rng: random.Random) -> Image.Image:
    """One shape of ``colour`` on a plain background (grey when the shape is white)."""
    w, h = size
    bg = (128, 128, 128) if colour == "white" else (255, 255, 255)
    img = Image.new("RGB", size, bg)
    d = ImageDraw.Draw(img)
    side = int(min(w, h) * rng.uniform(0.5, 0.8))
    x0 = rng.randint(0, w - side)
    y0 = rng.randint(0, h - side)
    x1, y1 = x0 + side, y0 + side
    fill = RGB[colour]
    if shape == "circle":
        d.ellipse((x0, y0, x1, y1), fill=fill)
    elif shape == "square":
        d.rectangle((x0, y0, x1, y1), fill=fill)
    elif shape == "rectangle":
        d.rectangle((x0, y0 + side // 4, x1, y1 - side // 4), fill=fill)
    elif shape == "triangle":
        d.polygon(((x0 + side // 2, y0), (x0, y1), (x1, y1)), fill=fill)
    elif shape == "star":
        cx, cy, r = x0 + side / 2, y0 + side / 2, side / 2
        pts = []
        for k in range(10):
            rad = r if k % 2 == 0 else r * 0.45
            ang = math.pi / 2 + k * math.pi / 5
            pts.append((cx + rad * math.cos(ang), cy - rad * math.sin(ang)))
        d.polygon(pts, fill=fill)
    elif shape == "cross":
        t = side // 3
        d.rectangle((x0 + t, y0, x1 - t, y1), fill=fill)
        d.rectangle((x0, y0 + t, x1, y1 - t), fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return img


def _samples(
    n: int, rng: random.Random, images: Path, prefix: str, single_image: bool = False
) -> list[dict]:
    out = []
    for i in range(n):
        kind = rng.random()
        sid = f"{prefix}{i:05d}"
        if kind < 0.08:  # text-only
            colour = rng.choice(COLOURS)
            conv = [
                {"from": "human", "value": f"Answer with a single word: say {colour}."},
                {"from": "gpt", "value": colour},
            ]
            out.append({"id": sid, "conversations": conv})
            continue
        if kind < 0.16 and not single_image:  # multi-image: which colour is the second shape
            names, colours = [], []
            for k in range(2):
                colour, shape = rng.choice(COLOURS), rng.choice(SHAPES)
                name = f"{sid}_{k}.png"
                draw_shape(shape, colour, rng.choice(SIZES), rng).save(images / name)
                names.append(f"images/{name}")
                colours.append(colour)
            conv = [
                {
                    "from": "human",
                    "value": "Image-1: <image>\nImage-2: <image>\nWhat colour is the second shape?",
                },
                {"from": "gpt", "value": colours[1]},
            ]
            out.append({"id": sid, "image": names, "conversations": conv})
            continue
        colour, shape = rng.choice(COLOURS), rng.choice(SHAPES)
        size = rng.choice(SIZES)
        name = f"{sid}.png"
        draw_shape(shape, colour, size, rng).save(images / name)
        turns = [(Q_COLOUR, colour), (Q_SHAPE, shape)]
        if kind < 0.4:
            rng.shuffle(turns)  # two-turn conversation
        else:
            turns = [rng.choice(turns)]
        conv = []
        for k, (q, a) in enumerate(turns):
            conv.append({"from": "human", "value": f"<image>\n{q}" if k == 0 else q})
            conv.append({"from": "gpt", "value": a})
        out.append(
            {
                "id": sid,
                "image": f"images/{name}",
                "width": size[0],
                "height": size[1],
                "conversations": conv,
            }
        )
    return out


def make_synthetic(
    out_dir: str | Path,
    num_samples: int = 200,
    num_eval: int = 32,
    seed: int = 0,
    single_image: bool = False,
):
    """Build the data set in ``out_dir`` (replaced if it exists). Returns the meta.json path.

    ``single_image``: no multi-image samples (the pinned official InternVL code, 764fdc9,
    reads one image per sample)."""
    out = Path(out_dir).resolve()
    rng = random.Random(seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        (tmp / "images").mkdir()
        for split, n, prefix, meta_name in (
            ("train", num_samples, "s", "meta.json"),
            ("eval", num_eval, "e", "meta_eval.json"),
        ):
            rows = _samples(n, rng, tmp / "images", prefix, single_image)
            with open(tmp / f"{split}.jsonl", "w", encoding="utf-8") as f:
                for row in rows:
                    f.write(json.dumps(row) + "\n")
            meta = {
                f"synthetic_shapes_{split}": {
                    "root": str(out),
                    "annotation": str(out / f"{split}.jsonl"),
                    "data_augment": split == "train",
                    "repeat_time": 1,
                    "length": len(rows),
                }
            }
            (tmp / meta_name).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out / "meta.json"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m internvl_chat.tools.make_synthetic")
    p.add_argument("out_dir")
    p.add_argument("--num-samples", type=int, default=200)
    p.add_argument("--num-eval", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--single-image", action="store_true", help="no multi-image samples")
    a = p.parse_args(argv)
    if a.num_samples < 1 or a.num_eval < 0:
        p.error("--num-samples must be >= 1 and --num-eval >= 0")
    meta = make_synthetic(a.out_dir, a.num_samples, a.num_eval, a.seed, a.single_image)
    print(meta)
    return 0


if __name__ == "__main__":
    sys.exit(main())
