"""A stand-in for MindSpeed-MM's pretrain_internvl.py (the Ascend stack cannot be installed here).

    torchrun ... MINDSPEED_ROOT/pretrain_internvl.py --mm-data D --mm-model M --mm-tool T ...

It does what the launcher relies on, honestly and small:
- every rank joins a real torch.distributed (gloo) group at MASTER_ADDR:MASTER_PORT, so wrong
  ranks or addresses hang or fail as they would on NPUs;
- it checks what MindSpeed-MM checks at start: the --mm-* files exist, model.json's
  pipeline_num_layers has PP entries (VPP: VPP lists of PP), world % (TP*PP*CP) == 0,
  GBS % (MBS*DP) == 0, and --load holds a Megatron checkpoint (tracker + release/ or iter_N/)
  with one mp_rank folder per pipeline stage;
- it records argv, the environment and the JSONs it got in SAVE/fake_pretrain/rank{R}.json;
- the last rank prints Megatron's per-iteration line (MindSpeed-MM format, --log-tps);
  `tokens per sample` is the annotation's mean text length / 4 plus 256 per image;
- it saves iter_N/mp_rank_*/model_optim_rng.pt every --save-interval and at the end (optimizer
  and RNG flags recorded), updates latest_checkpointed_iteration.txt, and resumes from it;
- FAKE_PRETRAIN_DIE_AFTER=N (tests only) makes it die after iteration N, like a lost node.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime
from pathlib import Path

import torch.distributed as dist


def fail(msg: str) -> None:
    print(f"[fake pretrain_internvl] error: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


def stage_dir(root: Path, tp: int, pp: int, tp_rank: int, pp_rank: int) -> Path:
    return root / (f"mp_rank_{tp_rank:02d}" if pp == 1 else f"mp_rank_{tp_rank:02d}_{pp_rank:03d}")


def tokens_per_sample(data: dict) -> float:
    path = Path(data["dataset_param"]["basic_parameters"]["data_path"])
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    if not rows:
        fail(f"{path} has no samples")
    total = 0.0
    for r in rows:
        text = "".join(c.get("value", "") for c in r.get("conversations", []))
        total += len(text) / 4 + (256 if r.get("image") else 0)
    return total / len(rows)


def main() -> None:
    p = argparse.ArgumentParser()
    for name in ("--mm-data", "--mm-model", "--mm-tool", "--load", "--save"):
        p.add_argument(name, required=True)
    for name, default in (
        ("--tensor-model-parallel-size", 1), ("--pipeline-model-parallel-size", 1),
        ("--virtual-pipeline-model-parallel-size", None), ("--context-parallel-size", 1),
        ("--micro-batch-size", 1), ("--global-batch-size", 1), ("--train-iters", 1),
        ("--save-interval", 0), ("--log-interval", 1),
    ):  # fmt: skip
        p.add_argument(name, type=int, default=default)
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--log-tps", action="store_true")
    a, rest = p.parse_known_args()
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    dist.init_process_group("gloo", init_method="env://", rank=rank, world_size=world)

    tp, pp, cp, vpp = (
        a.tensor_model_parallel_size, a.pipeline_model_parallel_size,
        a.context_parallel_size, a.virtual_pipeline_model_parallel_size,
    )  # fmt: skip
    for f in (a.mm_data, a.mm_model, a.mm_tool):
        if not Path(f).is_file():
            fail(f"no such file: {f}")
    data, model = json.loads(Path(a.mm_data).read_text()), json.loads(Path(a.mm_model).read_text())
    if world % (tp * pp * cp):
        fail(f"world size {world} is not divisible by TP*PP*CP = {tp * pp * cp}")
    dp = world // (tp * pp * cp)
    if a.global_batch_size % (a.micro_batch_size * dp):
        fail(f"global batch {a.global_batch_size} is not a multiple of MBS*DP")
    for part in (model["text_decoder"], model["image_encoder"]["vision_encoder"]):
        layers = part.get("pipeline_num_layers")
        if pp > 1 and layers is None:
            fail("pipeline_num_layers is required with PP > 1")
        if layers is not None:
            shape = (len(layers), len(layers[0])) if vpp else (len(layers),)
            if (vpp and shape != (vpp, pp)) or (not vpp and shape != (pp,)):
                fail(f"pipeline_num_layers {layers} does not match PP={pp} VPP={vpp}")

    load = Path(a.load)
    tracker = load / "latest_checkpointed_iteration.txt"
    if not tracker.is_file():
        fail(f"{load} has no latest_checkpointed_iteration.txt")
    mark = tracker.read_text().strip()
    ckpt = load / ("release" if mark == "release" else f"iter_{int(mark):07d}")
    # Megatron's default rank order tp-cp-dp-pp: the pipeline stage is outermost
    tp_rank, pp_rank = rank % tp, rank // (world // pp)
    saves = (rank // tp) % (cp * dp) == 0  # cp rank 0 and data-parallel rank 0
    if not (stage_dir(ckpt, tp, pp, tp_rank, pp_rank) / "model_optim_rng.pt").is_file():
        fail(f"{ckpt} has no weights for tp rank {tp_rank}, pipeline stage {pp_rank}")
    start = 0 if mark == "release" else int(mark)
    if rank == 0:
        what = "release checkpoint" if mark == "release" else f"checkpoint at iteration {start}"
        print(f" loading {what} from {load}", flush=True)

    save = Path(a.save)
    records = save / "fake_pretrain"
    records.mkdir(parents=True, exist_ok=True)
    record = {
        "argv": sys.argv, "unknown_args": rest, "env": dict(os.environ), "data": data,
        "model": model, "hostname": os.uname().nodename, "start_iteration": start,
    }  # fmt: skip
    (records / f"rank{rank}.json").write_text(json.dumps(record, indent=1))

    tps = tokens_per_sample(data)
    last_rank = rank == world - 1
    if last_rank:
        print("training ...", flush=True)
    for it in range(start + 1, a.train_iters + 1):
        t0 = time.monotonic()
        time.sleep(0.02)
        dist.barrier()
        ms = (time.monotonic() - t0) * 1000
        loss = 2.0 / (1 + 0.05 * it)
        if last_rank and it % a.log_interval == 0:
            extra = f" tokens per sample: {tps:.1f} |" if a.log_tps else ""
            print(
                f" [{datetime.now():%Y-%m-%d %H:%M:%S}] iteration {it:8d}/{a.train_iters:8d} |"
                f" consumed samples: {it * a.global_batch_size:12d} |"
                f" elapsed time per iteration (ms): {ms:.1f} | learning rate: {a.lr:.6E} |"
                f" global batch size: {a.global_batch_size:5d} | loss: {loss:.6E} |"
                f" loss scale: 1.0 | grad norm: {1.0 / it:.3f} |{extra}"
                f" number of skipped iterations:   0 | number of nan iterations:   0 |",
                flush=True,
            )
        if (a.save_interval and it % a.save_interval == 0) or it == a.train_iters:
            out = stage_dir(save / f"iter_{it:07d}", tp, pp, tp_rank, pp_rank)
            if saves:
                out.mkdir(parents=True, exist_ok=True)
                saved = {"iteration": it, "optimizer": "--no-save-optim" not in sys.argv,
                         "rng": "--no-save-rng" not in sys.argv}  # fmt: skip
                (out / "model_optim_rng.pt").write_text(json.dumps(saved))
            dist.barrier()
            if rank == 0:
                (save / "latest_checkpointed_iteration.txt").write_text(f"{it}\n")
                print(f" successfully saved checkpoint at iteration {it:7d} to {save}", flush=True)
        if it == int(os.environ.get("FAKE_PRETRAIN_DIE_AFTER", 0)):
            fail(f"dying after iteration {it} (FAKE_PRETRAIN_DIE_AFTER)")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
