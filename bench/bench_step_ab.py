"""One training step's forward+backward, ours vs transformers' native InternVL, in one process.

`python bench/bench_step_ab.py [--rounds 3] [--samples 4]`

The model-level half of bench_vs_hf.py for a machine too loaded to run whole trainers:
the same bench shape and weights (ViT 192x4 at 224 px, Qwen2-style 512x8 LLM, vocab 8192),
the same ``--samples`` samples as (a) one padded batch for HF's
``InternVLForConditionalGeneration`` and for ours, and (b) one packed row for ours.
Alternates HF / ours padded / ours packed for ``--rounds`` rounds (so load drift hits all
three alike) after one untimed warm-up round, times forward+backward, and checks the three losses agree (same tokens, same
weights). Prints real tokens/s per variant (median over rounds) and the ratios; last line JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--quick", action="store_true", help="tiny shape, 1 round (tests)")
    a = p.parse_args()
    import bench_vs_hf as B
    import torch
    from transformers import InternVLForConditionalGeneration

    from internvl_chat.data import DataConfig, build_train_dataset
    from internvl_chat.model import attach_tokenizer, load_model
    from internvl_chat.tokenizer import load_tokenizer
    from internvl_chat.tools.make_tiny import make_tiny

    shape, text = (B.QUICK_SHAPE, B.QUICK_TEXT_TOKENS) if a.quick else (B.SHAPE, B.TEXT_TOKENS)
    rounds = 1 if a.quick else a.rounds
    load = [list(os.getloadavg())]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        om = make_tiny(tmp / "original", "original", "qwen2", 0, shape)
        hm = make_tiny(tmp / "hf", "hf", "qwen2", 0, shape)
        tok = load_tokenizer(om)
        meta = B.make_data(tmp / "data", 4 * a.samples, tok, text)
        cfg = DataConfig.from_any(B.data_args(meta, text[1] + 128), patch_size=14, seed=0)
        ds = build_train_dataset(meta, tok, cfg)
        items = [ds[i] for i in range(a.samples)]
        padded = ds.collate(items)
        row = {k: torch.cat([x[k] for x in items]) for k in items[0]}
        packed = ds.collate([{**row, "sample_lengths": [len(x["input_ids"]) for x in items]}])
        ours = load_model(om)
        attach_tokenizer(ours, tok)
        hf = InternVLForConditionalGeneration.from_pretrained(hm, attn_implementation="sdpa")
        ours.train(), hf.train()
        hf_batch = {k: padded[k] for k in ("input_ids", "labels", "attention_mask", "pixel_values")}
        variants = {
            "HF padded": lambda: hf(**hf_batch).loss,
            "ours padded": lambda: ours(**padded)["loss"],
            "ours packed": lambda: ours(**packed)["loss"],
        }
        real = int(padded["attention_mask"].sum())
        times: dict[str, list[float]] = {k: [] for k in variants}
        losses: dict[str, float] = {}
        for r in range(rounds + (0 if a.quick else 1)):  # round 0: untimed warm-up
            for name, fn in variants.items():
                t0 = time.perf_counter()
                loss = fn()
                loss.backward()
                if r or a.quick:
                    times[name].append(time.perf_counter() - t0)
                losses[name] = float(loss.detach())
                (hf if name.startswith("HF") else ours).zero_grad()
            load.append(list(os.getloadavg()))
    print(f"{a.samples} samples, {real} real tokens; padded batch {tuple(padded['input_ids'].shape)}, "
          f"packed row {tuple(packed['input_ids'].shape)}; {rounds} rounds, "
          f"{torch.get_num_threads()} threads")  # fmt: skip
    tps = {k: real / statistics.median(v) for k, v in times.items()}
    for k in variants:
        print(f"{k:<12} fwd+bwd p50 {statistics.median(times[k]):7.2f} s  "
              f"{tps[k]:8.1f} real tok/s  loss {losses[k]:.5f}")  # fmt: skip
    spread = max(losses.values()) - min(losses.values())
    print(f"loss spread across variants: {spread:.2e} (same tokens, same weights)")
    out = {"tokens_per_s": {k: round(v, 2) for k, v in tps.items()},
           "ratio_packed_vs_hf": round(tps["ours packed"] / tps["HF padded"], 3),
           "ratio_padded_vs_hf": round(tps["ours padded"] / tps["HF padded"], 3),
           "loss_spread": spread, "load": load}  # fmt: skip
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
