"""python -m bench.memory_table

Prints, for the shipped model configs (conf/model/*.yaml), model FLOPs per sample at their
seq_len and the memory pre-flight per device for ZeRO 1/2/3 at per-device batch 1/2/4 on
4 x 8 devices, so the numbers behind sweep pruning and MFU can be eyeballed.
"""

from pathlib import Path

import yaml

from launcher.config.defaults import base_config
from launcher.flops import dims_from_config, sample_flops, trainable_from_config
from launcher.plan.memory import estimate

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    base = base_config("model")
    for path in sorted((ROOT / "conf/model").glob("*.yaml")):
        model = {**base, **(yaml.safe_load(path.read_text()) or {})}
        model.pop("defaults", None)
        try:
            dims = dims_from_config(model)
        except ValueError as e:
            print(f"{path.stem}: {e}")
            continue
        tr = trainable_from_config(model)
        seq = int(model.get("seq_len", 4096))
        tiles = int(model.get("max_dynamic_patch", 6)) + 1
        img = min(tiles * dims.image_tokens_per_tile, seq // 2)
        f = sample_flops(dims, llm_tokens=seq, image_tokens=img, trainable=tr)
        print(f"\n{path.stem}: seq {seq}, {img} image tokens: {f / 1e12:.1f} TFLOPs per sample")
        for zero in (1, 2, 3):
            cells = []
            for b in (1, 2, 4):
                est = estimate(
                    dims, trainable=tr, zero_stage=zero, gpus_per_node=8, nodes=4,
                    per_device_batch=b, seq_len=seq, tiles_per_sample=img / dims.image_tokens_per_tile,
                    grad_checkpoint=bool(model.get("grad_checkpoint", True)),
                )  # fmt: skip
                cells.append(f"b{b} {est.total_gb:7.1f} GiB")
            print(f"  zero{zero}: " + "  ".join(cells))


if __name__ == "__main__":
    main()
