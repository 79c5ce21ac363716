"""python -m bench.memory_table

Prints, for the shipped model configs (conf/model/*.yaml), model FLOPs per sample at their
seq_len and the memory pre-flight per device for ZeRO 1/2/3 at per-device batch 1/2/4 on
4 x 8 devices, so the numbers behind sweep pruning and MFU can be eyeballed.
"""

from pathlib import Path

from omegaconf import OmegaConf

from launcher.config.convert import lenient
from launcher.config.spec import ModelSpec
from launcher.flops import check_countable, sample_flops
from launcher.plan.memory import estimate

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    for path in sorted((ROOT / "conf/model").glob("*.yaml")):
        raw = OmegaConf.to_container(OmegaConf.load(path))
        raw.pop("defaults", None)
        model = lenient(ModelSpec, raw, "model")  # the settings a file leaves out: defaults
        try:
            dims = check_countable(model.flops_dims)
        except ValueError as e:
            print(f"{path.stem}: {e}")
            continue
        tr, seq, per_tile = model.trainable, model.seq_len, model.tile.llm_tokens
        img = min((model.max_dynamic_patch + 1) * per_tile, seq // 2)
        f = sample_flops(dims, llm_tokens=seq, image_tokens=img, trainable=tr)
        print(f"\n{path.stem}: seq {seq}, {img} image tokens: {f / 1e12:.1f} TFLOPs per sample")
        for zero in (1, 2, 3):
            cells = []
            for b in (1, 2, 4):
                est = estimate(
                    dims, trainable=tr, zero_stage=zero, gpus_per_node=8, nodes=4,
                    per_device_batch=b, seq_len=seq, tiles_per_sample=img / per_tile,
                    grad_checkpoint=model.grad_checkpoint,
                )  # fmt: skip
                cells.append(f"b{b} {est.total_gb:7.1f} GiB")
            print(f"  zero{zero}: " + "  ".join(cells))


if __name__ == "__main__":
    main()
