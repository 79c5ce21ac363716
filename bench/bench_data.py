"""`PYTHONPATH=. python bench/bench_data.py [--num-samples N --image-size S --items K]`

Prints data-pipeline speed on synthetic data: the up-front scan (samples/s), __getitem__
(samples/s, tiles/s) and collate, for plain and packed datasets, with the qwen2 tiny tokenizer.
"""

import argparse
import tempfile
import time
from pathlib import Path

from internvl_chat.data import build_train_dataset
from internvl_chat.tokenizer import load_tokenizer, save_tiny_tokenizer
from internvl_chat.tools.make_synthetic import make_synthetic


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--num-samples", type=int, default=1000)
    p.add_argument("--image-size", type=int, default=448)
    p.add_argument("--items", type=int, default=100)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tok = load_tokenizer(save_tiny_tokenizer(Path(tmp) / "tok", "qwen2"))
        meta = make_synthetic(Path(tmp) / "data", num_samples=a.num_samples, num_eval=0)
        cfg = {"conv_style": "internvl2_5", "force_image_size": a.image_size,
               "max_dynamic_patch": 6, "max_seq_length": 8192}  # fmt: skip
        for packed in (False, True):
            t0 = time.perf_counter()
            ds = build_train_dataset(meta, tok, {**cfg, "packed": packed})
            scan = time.perf_counter() - t0
            n = min(a.items, len(ds))
            t0 = time.perf_counter()
            items = [ds[i] for i in range(n)]
            get = time.perf_counter() - t0
            tiles = sum(len(x["image_flags"]) for x in items)
            t0 = time.perf_counter()
            for k in range(0, n, 4):
                ds.collate(items[k : k + 4])
            col = time.perf_counter() - t0
            print(
                f"packed={packed} tile={a.image_size}: scan {a.num_samples / scan:.0f} samples/s, "
                f"getitem {n / get:.1f} items/s ({tiles / get:.0f} tiles/s), "
                f"collate {n / col:.0f} items/s, {len(ds)} rows"
            )


if __name__ == "__main__":
    main()
