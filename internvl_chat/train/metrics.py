"""What a run reports: per-step records (``metrics_file``), HF-style lines, TensorBoard."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from internvl_chat.train import tracking


class StepAcc:
    """Sums over the micro-batches of one optimizer step (this rank)."""

    def __init__(self):
        self.start = 0.0
        self.data_time = 0.0
        self.loss = 0.0
        self.micro = 0
        self.tokens = 0
        self.image_tokens = 0
        self.samples = 0

    def add(self, batch: dict, loss: float, img_id: int) -> None:
        mask = batch["attention_mask"]
        self.loss += loss
        self.micro += 1
        self.tokens += int(mask.sum())
        self.image_tokens += int((batch["input_ids"] == img_id).sum())
        if "position_ids" in batch:
            self.samples += int(((batch["position_ids"] == 0) & (mask == 1)).sum())
        else:
            self.samples += mask.shape[0]

    def totals(self, dist) -> dict:
        """This step over all ranks: mean loss, tokens, image tokens, samples, peak memory."""
        loss_sum, tokens, img, samples, n = dist.allreduce(
            [self.loss, self.tokens, self.image_tokens, self.samples, self.micro]
        )
        (mx,) = dist.allmax([peak_mem_gb()])
        return {"loss": loss_sum / max(n, 1), "tokens": tokens, "image_tokens": img,
                "samples": samples, "peak_mem_gb": round(mx, 4)}  # fmt: skip


def peak_mem_gb() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB


def step_record(step: int, t: dict, *, lr: float, epoch: float, grad_norm: float | None,
                step_time: float, data_time: float) -> dict:  # fmt: skip
    """One line of ``metrics_file`` (docs/DESIGN.md, "Contract: internvl_chat.train")."""
    return {
        "step": step,
        "loss": t["loss"],
        "lr": lr,
        "samples_per_sec": t["samples"] / step_time,
        "tokens_per_sec": t["tokens"] / step_time,
        "epoch": round(epoch, 4),
        "grad_norm": grad_norm,
        "step_time": step_time,
        "data_time": data_time,
        "tokens": int(t["tokens"]),
        "image_tokens": int(t["image_tokens"]),
        "text_tokens": int(t["tokens"] - t["image_tokens"]),
        "samples": int(t["samples"]),
        "peak_mem_gb": t["peak_mem_gb"],
    }


def truncate_metrics(path: Path, step: int) -> int:
    """Keep the records with ``step <= step`` (atomically); return how many were dropped.

    A resumed run then appends from ``step + 1``, so every step is in the file exactly once;
    a line cut short by a crash is dropped with the rest.
    """
    if not path.exists():
        return 0
    kept, dropped = [], 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rec = json.loads(line)
            ok = isinstance(rec, dict) and int(rec["step"]) <= step
        except (ValueError, KeyError, TypeError):
            ok = False
        if ok:
            kept.append(line + "\n")
        else:
            dropped += 1
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(kept), encoding="utf-8")
    os.replace(tmp, path)
    return dropped


class Reporter:
    """Rank 0's outputs: stdout lines, the metrics file and TensorBoard (others: no-ops)."""

    def __init__(self, is_main: bool, out: Path, report_to: str | list, run_name=None, params=None):
        self.is_main, self.out = is_main, out
        self.metrics = None
        self.writer = None
        report = report_to if isinstance(report_to, list) else [report_to]
        self.tensorboard = is_main and "tensorboard" in report
        backend = next((b for b in report if b in tracking.BACKENDS), None)  # W&B or MLflow
        self.tracker = tracking.Tracker(backend, run_name, params) if is_main and backend else None
        self.loss_since_log, self.steps_since_log = 0.0, 0

    def start(self, metrics_file: str | None, step: int) -> None:
        """Open the outputs for a run that continues after ``step`` (0: from the start).

        Earlier records past ``step`` (an attempt that went on after its last checkpoint)
        are dropped from the metrics file and purged from TensorBoard, whose newest folder
        under ``output_dir/runs`` is reused.
        """
        if not self.is_main:
            return
        if metrics_file:
            path = Path(metrics_file)
            path.parent.mkdir(parents=True, exist_ok=True)
            truncate_metrics(path, step)
            self.metrics = open(path, "a", encoding="utf-8")  # noqa: SIM115
        if self.tracker:
            self.tracker.start()
        if self.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            runs = self.out / "runs"
            earlier = (
                sorted(runs.glob("*"), key=lambda p: p.stat().st_mtime) if runs.is_dir() else []
            )
            if earlier:
                self.writer = SummaryWriter(str(earlier[-1]), purge_step=step + 1)
            else:
                stamp = time.strftime("%b%d_%H-%M-%S")
                self.writer = SummaryWriter(str(runs / f"{stamp}_{socket.gethostname()}"))

    def log(self, obj: dict) -> None:
        if self.is_main:
            print(repr(obj), flush=True)

    def tb(self, scalars: dict, step: int) -> None:
        if self.writer:
            for k, v in scalars.items():
                if v is not None:
                    self.writer.add_scalar(k, v, step)

    def step(self, rec: dict, *, log_now: bool) -> None:
        """Account one optimizer step; on a logging step print the HF line averaged since the last."""
        self.loss_since_log += rec["loss"]
        self.steps_since_log += 1
        if not log_now:
            return
        line = {
            "loss": round(self.loss_since_log / self.steps_since_log, 4),
            "grad_norm": rec["grad_norm"],
            "learning_rate": rec["lr"],
            "epoch": rec["epoch"],
        }
        self.log(line)
        self.tb({"train/loss": line["loss"], "train/learning_rate": rec["lr"],
                 "train/grad_norm": rec["grad_norm"], "train/epoch": line["epoch"]}, rec["step"])  # fmt: skip
        self.loss_since_log, self.steps_since_log = 0.0, 0

    def eval(self, loss: float, epoch: float, step: int) -> None:
        self.log({"eval_loss": round(loss, 4), "epoch": epoch})
        self.tb({"eval/loss": loss}, step)

    def write(self, rec: dict) -> None:
        if self.metrics:
            self.metrics.write(json.dumps(rec) + "\n")
            self.metrics.flush()
        if self.tracker:
            self.tracker.log(rec)

    def close(self) -> None:
        if self.metrics:
            self.metrics.close()
        if self.writer:
            self.writer.close()
        if self.tracker:
            self.tracker.close()
