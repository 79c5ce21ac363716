"""Throughput of the internvl_chat trainer on a tiny model, and chat accuracy before/after.

`python bench/bench_train.py [--steps 200] [--nproc 1] [--zero 2] [--batch 8] [--chat]`

Builds a tiny InternLM2-flavoured checkpoint and the synthetic shapes data in a temporary
folder, trains with `torchrun -m internvl_chat.train`, and prints the median step time and
tokens/s (non-padding, all ranks) from metrics.jsonl. With --chat it also prints how many
synthetic eval questions `tools.chat` answers exactly, before and after training.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--nproc", type=int, default=1)
    p.add_argument("--zero", type=int, default=2, choices=[1, 2, 3])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--chat", action="store_true")
    a = p.parse_args()

    from internvl_chat.tools.make_synthetic import make_synthetic
    from internvl_chat.tools.make_tiny import make_tiny

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = tmp / "data"
        make_synthetic(data, num_samples=200, num_eval=32, seed=0)
        model = make_tiny(tmp / "tiny", "original", "internlm2", seed=0)
        ds = {
            "train_batch_size": a.batch * a.nproc,
            "train_micro_batch_size_per_gpu": a.batch,
            "gradient_accumulation_steps": 1,
            "gradient_clipping": 1.0,
            "zero_optimization": {"stage": a.zero, "overlap_comm": False},
            "bf16": {"enabled": False},
            "fp16": {"enabled": False},
        }
        (tmp / "ds.json").write_text(json.dumps(ds))
        args = {
            "model_name_or_path": str(model), "meta_path": str(data / "meta.json"),
            "conv_style": "internlm2-chat", "max_seq_length": 256, "force_image_size": 56,
            "down_sample_ratio": 0.5, "dynamic_image_size": True, "use_thumbnail": True,
            "max_dynamic_patch": 4, "output_dir": str(tmp / "out"),
            "per_device_train_batch_size": a.batch, "learning_rate": a.lr,
            "warmup_ratio": 0.03, "lr_scheduler_type": "cosine", "max_steps": a.steps,
            "logging_steps": 50, "save_steps": 10**9, "deepspeed": str(tmp / "ds.json"),
            "report_to": "none", "metrics_file": str(tmp / "metrics.jsonl"),
            "system_message": "Answer.", "grad_checkpoint": True,
        }  # fmt: skip
        (tmp / "args.json").write_text(json.dumps(args))
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", str(a.nproc), "-m", "internvl_chat.train",
               str(tmp / "args.json")]  # fmt: skip
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
        rows = [json.loads(x) for x in (tmp / "metrics.jsonl").read_text().splitlines()]
        steady = rows[len(rows) // 5 :]  # skip warm-up steps
        print(f"steps={len(rows)} nproc={a.nproc} zero={a.zero} micro_batch={a.batch}")
        print(f"median step_time_s={statistics.median(r['step_time'] for r in steady):.3f}")
        print(f"median tokens_per_sec={statistics.median(r['tokens_per_sec'] for r in steady):.1f}")
        print(
            f"median samples_per_sec={statistics.median(r['samples_per_sec'] for r in steady):.2f}"
        )
        print(
            f"image_token_share={sum(r['image_tokens'] for r in rows) / sum(r['tokens'] for r in rows):.3f}"
        )
        print(
            f"loss first={rows[0]['loss']:.3f} last10={statistics.mean(r['loss'] for r in rows[-10:]):.3f}"
        )
        if a.chat:
            sys.path.insert(0, str(REPO / "tests"))
            from test_train_chat import _questions, _score

            qs = _questions(data)
            for name, path in (("before", model), ("after", tmp / "out")):
                exact, kind, answers = _score(path, qs)
                print(f"chat {name}: exact {exact}/{len(qs)}, right kind {kind}/{len(qs)}, "
                      f"e.g. {answers[:4]}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
