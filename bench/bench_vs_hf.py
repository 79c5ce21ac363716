"""Our trainer beside HF Trainer on transformers' native InternVL, same model, same data.

`python bench/bench_vs_hf.py [--pairs 3] [--steps 40] [--quick] [--device cpu|cuda] [--dtype fp32|bf16]`

Builds one model shape twice from the same seed with ``make_tiny`` (our ``original`` layout
and transformers' ``hf`` layout: identical weights): a 192-hidden x 4-layer InternViT at
224 px (64 image tokens per image after pixel shuffle 0.5) and a Qwen2-style LLM of
512 hidden x 8 layers, 8 heads / 4 KV heads, vocab 8192. The data is one 224 px image plus
64-960 text tokens per sample (uniform), tokenised by our pipeline for both trainers.

Runs, each a child process of this one (same thread count, fp32 on CPU), alternating:
pair k = HF baseline, ours packed; ``ours padded`` and ``ours group_by_length`` run once
after the first pair. The baseline is ``transformers.Trainer`` on
``InternVLForConditionalGeneration`` with a padding collator (each sample a fresh batch
member, batch 4). Ours is ``python -m internvl_chat.train`` (DeepSpeed ZeRO-0 loop) with the
same optimizer settings; packed rows hold up to ``4 x mean sample length`` tokens at batch 1,
so a step sees about as many real tokens as the padded batch of 4.

Reported per run: real (non-padding) tokens/s over the steady steps (after the first 20%),
step time p50, last-step loss, model FLOPs/s (launcher.flops, ViT + projector + LLM, real
tokens only) as a share of this CPU's measured fp32 matmul peak. Loss check: at equal real
tokens (mean loss over the last quarter of the common token range) every ours run must be
within LOSS_TOL of the baseline, and every run must be learning (that loss below
LEARN_FRACTION of its first-step loss). The last line is JSON.

On ``--device cuda`` (bf16, flash attention when flash_attn imports) it prints TGS and MFU
against the GPU's dense bf16 peak; without a GPU it prints that it skipped and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

LOSS_TOL = 0.25  # nats, |ours - HF| of the mean loss over the last quarter at equal tokens
LEARN_FRACTION = 0.8  # "learning": that loss < 0.8 x the run's first-step loss
WARMUP_SHARE = 0.2  # steps left out of the throughput figures
BATCH = 4
TEXT_TOKENS = (64, 960)
SHAPE = {
    "vision": {"hidden_size": 192, "num_hidden_layers": 4, "num_attention_heads": 3,
               "intermediate_size": 768, "image_size": 224},
    "llm": {"hidden_size": 512, "num_hidden_layers": 8, "num_attention_heads": 8,
            "num_key_value_heads": 4, "intermediate_size": 1536, "vocab_size": 8192,
            "max_position_embeddings": 4096},
    "chat": {"force_image_size": 224, "dynamic_image_size": False, "use_thumbnail": False,
             "max_dynamic_patch": 1},
}  # fmt: skip
# --quick: a shape small enough for a unit test (checks that the bench runs, nothing more).
QUICK_SHAPE = {
    "vision": {**SHAPE["vision"], "hidden_size": 64, "num_hidden_layers": 1,
               "num_attention_heads": 2, "intermediate_size": 128},
    "llm": {**SHAPE["llm"], "hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4,
            "num_key_value_heads": 2, "intermediate_size": 128, "vocab_size": 1024},
    "chat": SHAPE["chat"],
}  # fmt: skip
QUICK_TEXT_TOKENS = (16, 64)
# Dense bf16 peaks (shared/specs/performance_and_reliability.md §A2), by device-name substring.
GPU_PEAKS = {"H200": 989e12, "H100": 989e12, "H800": 989e12, "A100": 312e12, "A800": 312e12,
             "H20": 148e12}  # fmt: skip
_TEXT = "the shape in the picture is a small red circle and the model learns to read images "
WORDS = tuple(
    (_TEXT + "and text together one two three four five six seven eight nine ten").split()
)


# ---------------------------------------------------------------- set-up


def make_data(root: Path, n: int, tokenizer, text_tokens=TEXT_TOKENS, seed: int = 0) -> Path:
    """n samples: one 224 px JPEG + a question + an answer; text tokens uniform in 64..960."""
    from internvl_chat.tools.make_synthetic import RGB, draw_shape

    rng = random.Random(seed)
    (root / "images").mkdir(parents=True)
    shapes = ("circle", "square", "triangle", "star", "cross", "rectangle")
    paths = []
    for k in range(16):
        img = draw_shape(shapes[k % 6], list(RGB)[k % 8], (224, 224), rng)
        paths.append(root / "images" / f"{k}.jpg")
        img.save(paths[-1], quality=90)
    per_word = len(tokenizer(" ".join(WORDS))["input_ids"]) / len(WORDS)
    rows = []
    for i in range(n):
        target = rng.randint(*text_tokens)
        start = rng.randrange(len(WORDS))
        words = [WORDS[(start + j) % len(WORDS)] for j in range(int(target / per_word))]
        rows.append({
            "id": i, "image": str(paths[i % len(paths)]),
            "conversations": [{"from": "human", "value": "<image>\nRead on."},
                              {"from": "gpt", "value": " ".join(words)}],
        })  # fmt: skip
    ann = root / "train.jsonl"
    ann.write_text("".join(json.dumps(r) + "\n" for r in rows))
    meta = root / "meta.json"
    meta.write_text(json.dumps({"bench": {"root": str(root), "annotation": str(ann),
                                          "data_augment": False, "repeat_time": 1,
                                          "length": n}}))  # fmt: skip
    return meta


def data_args(meta: Path, max_len: int) -> dict:
    return {"meta_path": str(meta), "conv_style": "Hermes-2", "max_seq_length": max_len,
            "force_image_size": 224, "down_sample_ratio": 0.5, "dynamic_image_size": False,
            "use_thumbnail": False, "max_dynamic_patch": 1, "system_message": "Read."}  # fmt: skip


def train_args(a, lr_steps: int) -> dict:
    return {"learning_rate": a.lr, "weight_decay": 0.0, "warmup_steps": 2,
            "lr_scheduler_type": "cosine", "max_steps": lr_steps, "max_grad_norm": 1.0,
            "seed": 0, "dataloader_num_workers": a.workers}  # fmt: skip


# ---------------------------------------------------------------- one run each


def run_ours(a, env, tmp: Path, model: Path, meta: Path, variant: str, mean_len: float) -> dict:
    out = tmp / f"ours-{variant}-{time.monotonic_ns()}"
    out.mkdir()
    bs = 1 if variant == "packed" else BATCH
    ds = {"train_micro_batch_size_per_gpu": bs, "gradient_accumulation_steps": 1,
          "zero_optimization": {"stage": 0}, "bf16": {"enabled": a.dtype == "bf16"}}  # fmt: skip
    (out / "ds.json").write_text(json.dumps(ds))
    args = {
        **data_args(meta, a.max_len), **train_args(a, a.steps),
        "model_name_or_path": str(model), "output_dir": str(out / "out"),
        "per_device_train_batch_size": bs, "deepspeed": str(out / "ds.json"),
        "metrics_file": str(out / "metrics.jsonl"), "report_to": "none",
        "save_strategy": "no", "logging_steps": 10**6, "grad_checkpoint": False,
        "bf16": a.dtype == "bf16", "group_by_length": variant == "group_by_length",
    }  # fmt: skip
    if variant == "packed":
        args.update(use_packed_ds=True, max_packed_tokens=int(BATCH * mean_len),
                    num_images_expected=4 * BATCH)  # fmt: skip
    (out / "args.json").write_text(json.dumps(args))
    cmd = [sys.executable, "-m", "internvl_chat.train", str(out / "args.json")]
    _child(cmd, env, out / "log.txt")
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [{"time": r["step_time"], "tokens": r["tokens"], "samples": r["samples"],
              "loss": r["loss"], "data_time": r["data_time"]} for r in rows]  # fmt: skip
    return {"name": f"ours {variant}", "steps": steps}


def run_hf(a, env, tmp: Path, model: Path, meta: Path) -> dict:
    out = tmp / f"hf-{time.monotonic_ns()}"
    out.mkdir()
    cfg = {"model": str(model), "out": str(out), "meta": str(meta), "max_len": a.max_len,
           "steps": a.steps, "lr": a.lr, "workers": a.workers, "dtype": a.dtype,
           "device": a.device, "threads": a.threads}  # fmt: skip
    (out / "cfg.json").write_text(json.dumps(cfg))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_hf-worker", str(out / "cfg.json")]
    _child(cmd, env, out / "log.txt")
    return {"name": "HF baseline", "steps": json.loads((out / "steps.json").read_text())}


def _child(cmd: list[str], env: dict, log: Path) -> None:
    with open(log, "w") as f:
        r = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, cwd=REPO)
    if r.returncode:
        sys.stderr.write(log.read_text()[-4000:])
        raise SystemExit(f"{' '.join(cmd[:4])} failed ({r.returncode}); log {log}")


def hf_worker(cfg_path: str) -> int:
    """Child: HF Trainer on InternVLForConditionalGeneration; writes steps.json."""
    import torch
    from transformers import (
        InternVLForConditionalGeneration,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from internvl_chat.data import DataConfig, build_train_dataset
    from internvl_chat.tokenizer import load_tokenizer

    c = json.loads(Path(cfg_path).read_text())
    torch.set_num_threads(c["threads"])
    cuda = c["device"] == "cuda"
    bf16 = c["dtype"] == "bf16"
    attn = "sdpa"
    if cuda:
        try:
            import flash_attn  # noqa: F401

            attn = "flash_attention_2"
        except ImportError:
            pass
    model = InternVLForConditionalGeneration.from_pretrained(
        c["model"], attn_implementation=attn, dtype=torch.bfloat16 if bf16 else torch.float32
    )
    tok = load_tokenizer(c["model"])
    dcfg = DataConfig.from_any(data_args(Path(c["meta"]), c["max_len"]), patch_size=14, seed=0)
    ds = build_train_dataset(c["meta"], tok, dcfg)
    pad = ds.pad_token_id

    class Items(torch.utils.data.Dataset):
        def __len__(self):
            return len(ds)

        def __getitem__(self, i):
            x = ds[i]
            return {"input_ids": x["input_ids"], "labels": x["labels"],
                    "pixel_values": x["pixel_values"]}  # fmt: skip

    def collate(items):  # the usual padding collator
        n = max(len(x["input_ids"]) for x in items)
        ids = torch.full((len(items), n), pad, dtype=torch.long)
        labels = torch.full((len(items), n), -100, dtype=torch.long)
        mask = torch.zeros((len(items), n), dtype=torch.long)
        for b, x in enumerate(items):
            m = len(x["input_ids"])
            ids[b, :m], labels[b, :m], mask[b, :m] = x["input_ids"], x["labels"], 1
        pv = torch.cat([x["pixel_values"] for x in items])
        return {"input_ids": ids, "labels": labels, "attention_mask": mask, "pixel_values": pv}

    steps: list[dict] = []
    pending = {"tokens": 0, "samples": 0}

    class Timer(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            now = time.perf_counter()
            steps.append({"time": now - self.t, **pending, "loss": None})
            pending.update(tokens=0, samples=0)
            self.t = now

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs and steps:
                steps[-1]["loss"] = logs["loss"]

    class CountingTrainer(Trainer):
        def training_step(self, model, inputs, *rest, **kw):
            pending["tokens"] += int(inputs["attention_mask"].sum())
            pending["samples"] += int(inputs["attention_mask"].shape[0])
            return super().training_step(model, inputs, *rest, **kw)

    targs = TrainingArguments(
        output_dir=c["out"] + "/out", per_device_train_batch_size=BATCH,
        learning_rate=c["lr"], weight_decay=0.0, warmup_steps=2, lr_scheduler_type="cosine",
        max_steps=c["steps"], max_grad_norm=1.0, seed=0, logging_steps=1,
        save_strategy="no", report_to="none", dataloader_num_workers=c["workers"],
        remove_unused_columns=False, use_cpu=not cuda, bf16=bf16,
        disable_tqdm=True, gradient_checkpointing=False,
    )  # fmt: skip
    trainer = CountingTrainer(
        model=model, args=targs, train_dataset=Items(), data_collator=collate,
        callbacks=[Timer()],
    )  # fmt: skip
    trainer.train()
    Path(c["out"], "steps.json").write_text(json.dumps(steps))
    return 0


# ---------------------------------------------------------------- figures


def matmul_peak(device: str, dtype: str, seconds: float = 2.0) -> float:
    """Best FLOP/s of square matmuls on this device (the utilisation denominator)."""
    import torch

    dt = torch.bfloat16 if dtype == "bf16" else torch.float32
    n = 4096 if device == "cuda" else 1024
    x = torch.randn(n, n, device=device, dtype=dt)
    y = torch.randn(n, n, device=device, dtype=dt)
    best, t_end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(4):
            x @ y
        if device == "cuda":
            torch.cuda.synchronize()
        best = max(best, 4 * 2 * n**3 / (time.perf_counter() - t0))
    return best


def model_dims(shape: dict):
    from launcher.flops import LlmArch, ModelDims, Tile, VitArch

    v, m = shape["vision"], shape["llm"]
    vh, mh = v["hidden_size"], m["hidden_size"]
    grid = v["image_size"] // 14
    proj = (4 * vh) * mh + mh * mh  # mlp1: LayerNorm, Linear(4*vh, h), GELU, Linear(h, h)
    return ModelDims(
        llm=LlmArch(layers=m["num_hidden_layers"], hidden=mh, heads=m["num_attention_heads"],
                    kv_heads=m["num_key_value_heads"], intermediate=m["intermediate_size"],
                    vocab=m["vocab_size"]),
        vit=VitArch(layers=v["num_hidden_layers"], hidden=vh, heads=v["num_attention_heads"],
                    intermediate=v["intermediate_size"]),
        projector_params=proj, tile=Tile(vit_tokens=grid * grid + 1, llm_tokens=grid * grid // 4),
    )  # fmt: skip


def summarise(run: dict, dims) -> dict:
    from launcher.flops import sample_flops

    steps = run["steps"]
    steady = steps[int(len(steps) * WARMUP_SHARE) :] or steps
    t = sum(s["time"] for s in steady)
    tokens = sum(s["tokens"] for s in steady)
    samples = sum(s["samples"] for s in steady)
    per_sample = tokens / max(samples, 1)
    img = dims.tile.llm_tokens
    flops = samples * sample_flops(dims, llm_tokens=per_sample, image_tokens=img)
    data = [s.get("data_time", 0.0) / s["time"] for s in steady if "data_time" in s]
    return {
        "name": run["name"],
        "real_tokens_per_s": tokens / t,
        "step_p50_s": statistics.median(s["time"] for s in steady),
        "last_loss": steps[-1]["loss"],
        "first_loss": steps[0]["loss"],
        "model_flops_per_s": flops / t,
        "data_share": statistics.median(data) if data else None,
        "tokens_per_step": tokens / len(steady),
    }


def loss_at_equal_tokens(run: dict, upto: float) -> float:
    """Mean step loss over the last quarter of [0, upto] real tokens."""
    cum, vals = 0, []
    for s in run["steps"]:
        cum += s["tokens"]
        if 0.75 * upto <= cum <= upto * 1.0001 and s["loss"] is not None:
            vals.append(s["loss"])
    return statistics.mean(vals) if vals else float("nan")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument(
        "--quick",
        action="store_true",
        help="test mode: a tiny shape, short texts, 1 pair, 3 steps, no extra variants",
    )
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--workers", type=int, default=1, help="dataloader_num_workers, both")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--samples", type=int, default=600)
    p.add_argument("--keep", help="write the runs here instead of a temporary folder")
    p.add_argument("--_hf-worker", dest="hf_worker", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.hf_worker:
        return hf_worker(a.hf_worker)
    import torch

    if a.device == "cuda" and not torch.cuda.is_available():
        print("bench_vs_hf: --device cuda skipped: no CUDA device here")
        print(json.dumps({"skipped": "no CUDA device"}))
        return 0
    shape, text_tokens = SHAPE, TEXT_TOKENS
    if a.quick:
        a.pairs, a.steps, a.samples = 1, 3, 24
        shape, text_tokens = QUICK_SHAPE, QUICK_TEXT_TOKENS
    a.threads = a.threads or torch.get_num_threads()
    a.max_len = text_tokens[1] + 128
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(a.threads),
           "MKL_NUM_THREADS": str(a.threads), "TOKENIZERS_PARALLELISM": "false"}  # fmt: skip
    env.pop("RANK", None)
    load: list[list[float]] = []

    def sample_load():
        load.append([round(x, 2) for x in os.getloadavg()])

    from internvl_chat.tokenizer import load_tokenizer
    from internvl_chat.tools.make_tiny import make_tiny

    ctx = tempfile.TemporaryDirectory() if not a.keep else None
    tmp = Path(ctx.name if ctx else a.keep)
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        sample_load()
        torch.set_num_threads(a.threads)
        peak = matmul_peak(a.device, a.dtype)
        ours_model = make_tiny(tmp / f"m-original-{os.getpid()}", "original", "qwen2", 0, shape)
        hf_model = make_tiny(tmp / f"m-hf-{os.getpid()}", "hf", "qwen2", 0, shape)
        tok = load_tokenizer(ours_model)
        meta = make_data(tmp / f"data-{os.getpid()}", a.samples, tok, text_tokens)
        from internvl_chat.data import DataConfig, build_train_dataset

        dcfg = DataConfig.from_any(data_args(meta, a.max_len), patch_size=14, seed=0)
        mean_len = statistics.mean(build_train_dataset(meta, tok, dcfg).lengths)
        dims = model_dims(shape)
        print(f"threads={a.threads} device={a.device} dtype={a.dtype} steps={a.steps} "
              f"pairs={a.pairs} batch={BATCH} mean sample length={mean_len:.0f} tokens "
              f"matmul peak={peak / 1e9:.1f} GFLOP/s", flush=True)  # fmt: skip
        runs: list[dict] = []
        pairs = []
        for k in range(a.pairs):
            for fn in (
                lambda: run_hf(a, env, tmp, hf_model, meta),
                lambda: run_ours(a, env, tmp, ours_model, meta, "packed", mean_len),
            ):
                sample_load()
                runs.append(fn() | {"pair": k})
                s = summarise(runs[-1], dims)
                print(
                    f"  pair {k}: {s['name']:<22} {s['real_tokens_per_s']:8.1f} real tok/s "
                    f"p50 {s['step_p50_s']:.2f}s loss {s['last_loss']:.3f}",
                    flush=True,
                )
            hf, ours = (summarise(r, dims) for r in runs[-2:])
            pairs.append(round(ours["real_tokens_per_s"] / hf["real_tokens_per_s"], 3))
            if k == 0 and not a.quick:
                for variant in ("padded", "group_by_length"):
                    sample_load()
                    runs.append(run_ours(a, env, tmp, ours_model, meta, variant, mean_len)
                                | {"pair": k})  # fmt: skip
                    s = summarise(runs[-1], dims)
                    print(
                        f"  once:   {s['name']:<22} {s['real_tokens_per_s']:8.1f} real tok/s "
                        f"p50 {s['step_p50_s']:.2f}s loss {s['last_loss']:.3f}",
                        flush=True,
                    )
        sample_load()
    finally:
        if ctx:
            ctx.cleanup()
    report(a, runs, dims, peak, pairs, load)
    return 0


def report(a, runs, dims, peak, pairs, load) -> None:
    names = ["HF baseline", "ours padded", "ours group_by_length", "ours packed"]
    by_name = {n: [r for r in runs if r["name"] == n] for n in names}
    upto = min(sum(s["tokens"] for s in r["steps"]) for r in runs)
    hf_loss = statistics.median(loss_at_equal_tokens(r, upto) for r in by_name["HF baseline"])
    cuda = a.device == "cuda"
    if cuda:
        import torch

        gpu = torch.cuda.get_device_name()
        peak = next((v for k, v in GPU_PEAKS.items() if k in gpu), peak)
    share = "MFU" if cuda else "of peak"
    print()
    print(f"{'run':<22} {'real tok/s':>10} {'step p50 s':>10} {'last loss':>9} "
          f"{'loss@eq':>8} {'GFLOP/s':>8} {share:>8} {'data':>6}")  # fmt: skip
    verdicts = []
    for n in names:
        rs = by_name[n]
        if not rs:
            print(f"{n:<22} (not run)")
            continue
        ss = [summarise(r, dims) for r in rs]
        med = {k: statistics.median(s[k] for s in ss) for k in
               ("real_tokens_per_s", "step_p50_s", "model_flops_per_s")}  # fmt: skip
        leq = statistics.median(loss_at_equal_tokens(r, upto) for r in rs)
        first = statistics.median(s["first_loss"] for s in ss)
        learning = leq < LEARN_FRACTION * first
        close = n == names[0] or abs(leq - hf_loss) <= LOSS_TOL
        verdicts.append((n, learning, close))
        data = [s["data_share"] for s in ss if s["data_share"] is not None]
        print(f"{n:<22} {med['real_tokens_per_s']:>10.1f} {med['step_p50_s']:>10.3f} "
              f"{ss[-1]['last_loss']:>9.3f} {leq:>8.3f} {med['model_flops_per_s'] / 1e9:>8.2f} "
              f"{med['model_flops_per_s'] / peak:>8.1%} "
              f"{(f'{statistics.median(data):.1%}' if data else '-'):>6}")  # fmt: skip
    if cuda:
        print(f"(TGS = real tokens/s on 1 GPU; MFU vs {peak / 1e12:.0f} TFLOP/s dense bf16)")
    else:
        print(f"(share of the measured fp32 matmul peak {peak / 1e9:.1f} GFLOP/s, "
              f"{a.threads} threads)")  # fmt: skip
    print(
        f"loss@eq = mean loss over the last quarter of the first {upto} real tokens; "
        f"tolerance vs HF {LOSS_TOL} nats; learning = below {LEARN_FRACTION} x first loss"
    )
    for n, learning, close in verdicts:
        if not learning or not close:
            print(f"WARNING: {n}: learning={learning} within-tolerance={close}")
    ratio = statistics.median(pairs)
    print(json.dumps({"ratio_real_tokens_per_s": ratio, "pairs": pairs, "load": load}))


if __name__ == "__main__":
    sys.exit(main())
