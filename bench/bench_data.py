"""Image pipeline speed per core at 448 px with dynamic tiling, ours beside the official code.

`python bench/bench_data.py [--internvl-root PATH] [--seconds 5] [--quick]`

Generates two JPEGs (1000x750 -> 4x3 grid, 12 tiles + thumbnail; 1920x1080 -> 4x2 grid,
8 tiles + thumbnail at max_dynamic_patch 12) and measures, in this process with one torch
thread (so the figures are per core):

- ours: ``SupervisedDataset``'s image path (decode, ``tile_image`` / the fused grid path,
  per-tile normalise into one [tiles, 3, 448, 448] tensor), and a whole ``__getitem__`` of a
  one-image sample (tokenisation included);
- official: ``dynamic_preprocess`` + ``build_transform`` read from
  ``INTERNVL_ROOT/internvl_chat/internvl/train/dataset.py`` (the functions' source only, so
  cv2/decord need not be installed). It needs torchvision; without it, or without the
  checkout, that row is skipped with the reason.

Prints tiles/s and samples/s per core for each; the last line is JSON.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SIZES = ((1000, 750), (1920, 1080))
TILE, MAX_TILES = 448, 12


def make_jpeg(path: Path, size: tuple[int, int]) -> Path:
    """A photo-like JPEG: smooth gradients plus noise (so decoding costs what photos cost)."""
    import numpy as np
    from PIL import Image

    w, h = size
    rng = np.random.default_rng(w * h)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([x / w, y / h, (x + y) / (w + h)], -1) * 200
    img = np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(img).save(path, quality=90)
    return path


def timed(fn, seconds: float) -> tuple[float, int]:
    """(calls per second, tiles of the last call) over about ``seconds``."""
    fn()  # warm-up
    n, t0 = 0, time.perf_counter()
    while True:
        out = fn()
        n += 1
        el = time.perf_counter() - t0
        if el >= seconds:
            return n / el, int(out.shape[0])


def ours_fn(path: Path):
    from PIL import Image

    from internvl_chat.data.dataset import Transform, image_tiles
    from internvl_chat.data.tiling import find_grid

    transform = Transform(False, TILE, False, "imagenet")

    def run():
        with Image.open(path) as im:
            image = im.convert("RGB")
        grid = find_grid(image.width, image.height, 1, MAX_TILES, TILE)
        return image_tiles(image, grid, transform, use_thumbnail=True, rng=None)

    return run


def official_fns(root: Path | None):
    """(dynamic_preprocess, build_transform) from an InternVL checkout, or a skip reason."""
    if root is None:
        return None, "no --internvl-root given (or $INTERNVL_ROOT)"
    src = root / "internvl_chat" / "internvl" / "train" / "dataset.py"
    consts = root / "internvl_chat" / "internvl" / "train" / "constants.py"
    if not src.exists():
        return None, f"{src} not found"
    try:
        import torchvision  # noqa: F401
    except ImportError:
        return (
            None,
            "torchvision is not installed in this environment (the official transform needs it)",
        )
    tree = ast.parse(src.read_text())
    want = {"find_closest_aspect_ratio", "dynamic_preprocess", "build_transform",
            "simulate_jpeg_degradation", "expand2square"}  # fmt: skip
    body = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in want]
    ns: dict = {}
    exec(consts.read_text(), ns)  # noqa: S102 - the official constants (mean/std)
    exec(  # noqa: S102 - prelude the official module has at its top
        "import io\nimport torchvision.transforms as T\nfrom PIL import Image\n"
        "from torchvision.transforms.functional import InterpolationMode\n",
        ns,
    )
    exec(compile(ast.Module(body=body, type_ignores=[]), str(src), "exec"), ns)  # noqa: S102
    return (ns["dynamic_preprocess"], ns["build_transform"]), None


def official_fn(path: Path, fns):
    import torch
    from PIL import Image

    dynamic_preprocess, build_transform = fns
    transform = build_transform(is_train=False, input_size=TILE, pad2square=False,
                                normalize_type="imagenet")  # fmt: skip

    def run():
        image = Image.open(path).convert("RGB")
        tiles = dynamic_preprocess(image, min_num=1, max_num=MAX_TILES, image_size=TILE,
                                   use_thumbnail=True)  # fmt: skip
        return torch.stack([transform(t) for t in tiles])

    return run


def getitem_fn(tmp: Path, path: Path):
    """A whole dataset item (tokenisation + image) of a one-image sample."""
    from internvl_chat.data import build_train_dataset
    from internvl_chat.tokenizer import load_tokenizer, save_tiny_tokenizer

    tok = load_tokenizer(save_tiny_tokenizer(tmp / "tok", "qwen2"))
    ann = tmp / f"{path.stem}.jsonl"
    row = {"id": 0, "image": str(path), "conversations": [
        {"from": "human", "value": "<image>\nDescribe the picture."},
        {"from": "gpt", "value": "The quick brown fox jumps over the lazy dog."}]}  # fmt: skip
    ann.write_text(json.dumps(row) + "\n")
    meta = tmp / f"{path.stem}.meta.json"
    meta.write_text(json.dumps({"d": {"root": str(tmp), "annotation": str(ann),
                                      "data_augment": False, "repeat_time": 1}}))  # fmt: skip
    cfg = {"conv_style": "Hermes-2", "force_image_size": TILE, "max_dynamic_patch": MAX_TILES,
           "dynamic_image_size": True, "use_thumbnail": True, "max_seq_length": 8192}  # fmt: skip
    ds = build_train_dataset(meta, tok, cfg)
    return lambda: ds[0]["pixel_values"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--internvl-root", default=os.environ.get("INTERNVL_ROOT"))
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--quick", action="store_true", help="0.3 s per measurement (tests)")
    a = p.parse_args()
    import torch

    torch.set_num_threads(1)  # per core
    seconds = 0.3 if a.quick else a.seconds
    fns, why = official_fns(Path(a.internvl_root) if a.internvl_root else None)
    result: dict = {"tile": TILE, "max_tiles": MAX_TILES, "load": list(os.getloadavg())}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for size in SIZES:
            path = make_jpeg(tmp / f"{size[0]}x{size[1]}.jpg", size)
            rows = {"ours": ours_fn(path), "ours __getitem__": getitem_fn(tmp, path)}
            if fns:
                rows["official"] = official_fn(path, fns)
            key = f"{size[0]}x{size[1]}"
            result[key] = {}
            for name, fn in rows.items():
                per_s, tiles = timed(fn, seconds)
                result[key][name] = {"samples_per_s": round(per_s, 2),
                                     "tiles_per_s": round(per_s * tiles, 1), "tiles": tiles}  # fmt: skip
                print(f"{key:>9} {name:<17} {tiles:2d} tiles  {per_s:7.2f} samples/s/core  "
                      f"{per_s * tiles:7.1f} tiles/s/core", flush=True)  # fmt: skip
            if fns:
                r = result[key]["ours"]["samples_per_s"] / result[key]["official"]["samples_per_s"]
                result[key]["ours_vs_official"] = round(r, 2)
                print(f"{key:>9} ours / official: {r:.2f}x")
    if not fns:
        print(f"official InternVL transform: skipped: {why}")
        result["official_skipped"] = why
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
