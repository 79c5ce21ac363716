"""The training loop: build everything a run needs, then step until ``total_steps``.

Plain DeepSpeed (no HF Trainer). Deliberate differences from the official script: an
image-token/feature mismatch raises instead of zeroing the loss; weight decay applies to all
trainable parameters as one group (what the official DeepSpeed configs do, §7.1); the
optimizer is always torch AdamW (the ``optimizer`` block's betas/eps are honoured), so it runs
without compiled DeepSpeed ops.
"""

from __future__ import annotations

import time
from pathlib import Path

from internvl_chat.train import schedule
from internvl_chat.train.args import TrainArgs, ds_config
from internvl_chat.train.build import build_data, build_model, build_optimizer
from internvl_chat.train.checkpointing import Checkpointer
from internvl_chat.train.distributed import Dist
from internvl_chat.train.metrics import Reporter, StepAcc, step_record
from internvl_chat.train.node_times import NodeTimes
from internvl_chat.train.stop import StopRequested, StopWatch


class Trainer:
    """Everything one run needs; ``train()`` is the loop. Built by :func:`run`."""

    def __init__(self, a: TrainArgs):
        import deepspeed
        import torch

        self.a, self.torch = a, torch
        # First, so that a SIGUSR1 while the model loads is a request, not the default (exit).
        self.stop = StopWatch(a.stop_file)
        self.dist = d = Dist(a.ddp_timeout)
        ds = ds_config(a, d.world)
        opt_params = ds.pop("_optimizer_params")
        self.out = Path(a.output_dir)
        torch.manual_seed(a.seed)

        model, self.tokenizer, trainable = build_model(a)
        if d.is_main:
            n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
            n_all = sum(p.numel() for p in model.parameters())
            self.out.mkdir(parents=True, exist_ok=True)
            listing = self.out / "trainable_parameters.txt"
            listing.write_text("".join(f"{name}\n" for name in trainable))
            print(f"[train] trainable parameters: {n_train:,} of {n_all:,} "
                  f"({len(trainable)} tensors, listed in {listing})", flush=True)  # fmt: skip
        self.data = build_data(a, model, self.tokenizer, d.rank, d.world)
        self.steps_per_epoch = max(len(self.data.loader) // a.gradient_accumulation_steps, 1)
        self.total_steps = schedule.total_steps(a.max_steps, a.num_train_epochs,
                                                self.steps_per_epoch)  # fmt: skip
        warmup = schedule.warmup_steps(a.warmup_steps, a.warmup_ratio, self.total_steps)
        optimizer = build_optimizer(a, model, opt_params)
        scheduler = schedule.build_scheduler(optimizer, a.lr_scheduler_type, warmup,
                                             self.total_steps)  # fmt: skip
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds
        )
        self.ckpt = Checkpointer(
            self.engine, d, self.out, tokenizer=self.tokenizer,
            zero_stage=int(ds.get("zero_optimization", {}).get("stage", 0)),
            save_total_limit=a.save_total_limit,
        )  # fmt: skip
        self.global_step = 0
        self.epoch, self.batch_in_epoch = 0, 0  # data position: micro-batches of this epoch
        self.report = Reporter(d.is_main, self.out, a.report_to, a.run_name, a.tracking_params)
        self.node_times = NodeTimes(torch, self.dist.device.type)

    @property
    def epoch_float(self) -> float:
        return self.global_step / self.steps_per_epoch

    def _batch_to_device(self, batch: dict) -> dict:
        torch = self.torch
        out = {}
        for k, v in batch.items():
            if isinstance(v, torch.Tensor):
                v = v.to(self.dist.device)
                if k == "pixel_values" and self.a.bf16:
                    v = v.to(torch.bfloat16)
            out[k] = v
        return out

    def _train_mode(self) -> None:
        self.engine.train()
        if self.a.freeze_llm:
            self.engine.module.language_model.eval()

    def maybe_resume(self) -> int:
        """Restore the newest valid checkpoint (unless overwrite_output_dir); return its step.

        Weights, optimizer, scheduler and each rank's RNG come from the checkpoint, the data
        position from its trainer_state.json, so the run continues with the samples and the
        random numbers the uninterrupted run would have used.
        """
        a = self.a
        self.ckpt.remove_stale_temporaries()
        if a.overwrite_output_dir and not a.resume_from_checkpoint:
            return 0
        found = self.ckpt.resume(a.resume_from_checkpoint)
        if found is None:
            return 0
        step, path, state = found
        schedule.reapply_schedule(self.scheduler, self.optimizer)
        self.global_step = step
        data = state.get("data")
        if data is None:  # written before the data position was saved: count micro-batches
            consumed = step * a.gradient_accumulation_steps
            data = {"epoch": consumed // len(self.data.loader)}
            data["batches"] = consumed - data["epoch"] * len(self.data.loader)
        self.epoch, self.batch_in_epoch = data["epoch"], data["batches"]
        if self.dist.is_main:
            print(f"[train] resuming from {path} (step {step})", flush=True)
        self.report.log({"resumed_from": str(path), "global_step": step})
        return step

    def save(self) -> Path:
        bs = self.a.per_device_train_batch_size
        return self.ckpt.save(self.global_step, {
            "global_step": self.global_step,
            "epoch": self.epoch_float,
            "data": {"epoch": self.epoch, "batches": self.batch_in_epoch,
                     "samples": self.batch_in_epoch * bs * self.dist.world},
        })  # fmt: skip

    def evaluate(self) -> float:
        torch, ds = self.torch, self.data.eval_ds
        sampler = torch.utils.data.DistributedSampler(
            ds, self.dist.world, self.dist.rank, shuffle=False
        )
        loader = torch.utils.data.DataLoader(
            ds,
            batch_size=self.a.per_device_eval_batch_size or self.a.per_device_train_batch_size,
            sampler=sampler,
            collate_fn=ds.collate,
        )
        self.engine.eval()
        total, count = 0.0, 0.0
        with torch.no_grad():
            for batch in loader:
                batch = self._batch_to_device(batch)
                out = self.engine(**batch)
                n = float((batch["labels"][:, 1:] != -100).sum())
                total += float(out["loss"]) * n
                count += n
        self._train_mode()
        total, count = self.dist.allreduce([total, count])
        return total / max(count, 1.0)

    def train(self) -> dict:
        """Step until ``total_steps``; raises StopRequested after saving on a stop request."""
        a, rep = self.a, self.report
        start = self.maybe_resume()
        rep.start(a.metrics_file, start)
        every = {k: schedule.every(v, self.total_steps) for k, v in (
            ("log", a.logging_steps), ("save", a.save_steps),
            ("eval", a.eval_steps or a.logging_steps))}  # fmt: skip
        eval_strategy = a.eval_strategy or a.evaluation_strategy
        self._train_mode()
        t_start = time.time()
        loss_sum, steps_done = 0.0, 0
        acc = StepAcc()
        last_eval = -1
        img_id = self.engine.module.img_context_token_id
        while self.global_step < self.total_steps:
            it = self.data.start_epoch(self.epoch, self.batch_in_epoch)
            while self.global_step < self.total_steps:
                t0 = time.time()
                batch = next(it, None)
                if batch is None:
                    break
                self.batch_in_epoch += 1
                batch = self._batch_to_device(batch)
                acc.data_time += time.time() - t0
                acc.start = acc.start or t0
                if a.loss_reduction:  # official per-sample weights (3.5 recipe)
                    from internvl_chat.train.loss import loss_inputs

                    batch.update(loss_inputs(batch, a.loss_reduction, self.dist))
                self.node_times.start()
                loss = self.engine(**batch)["loss"]
                self.node_times.stop()
                self.engine.backward(loss)
                boundary = self.engine.is_gradient_accumulation_boundary()
                lr = self.scheduler.get_last_lr()[0]
                self.engine.step()
                acc.add(batch, float(loss.detach()), img_id)
                if not boundary:
                    continue
                self.global_step += 1
                self.node_times.step(self.global_step)
                grad_norm = self.engine.get_global_grad_norm()
                rec = step_record(
                    self.global_step, acc.totals(self.dist), lr=lr, epoch=self.epoch_float,
                    grad_norm=float(grad_norm) if grad_norm is not None else None,
                    step_time=time.time() - acc.start, data_time=acc.data_time,
                )  # fmt: skip
                acc = StepAcc()
                loss_sum += rec["loss"]
                steps_done += 1
                last = self.global_step == self.total_steps
                rep.step(rec, log_now=self.global_step % every["log"] == 0 or last)
                do_save = a.save_strategy == "steps" and self.global_step % every["save"] == 0
                do_eval = self.data.eval_ds is not None and (
                    do_save or (eval_strategy == "steps" and self.global_step % every["eval"] == 0)
                )
                if do_eval:
                    last_eval = self.global_step
                    rec["eval_loss"] = self.evaluate()
                    rep.eval(rec["eval_loss"], rec["epoch"], self.global_step)
                rep.write(rec)
                if do_save:
                    self.save()
                if not last and self.stop.requested(self.dist):
                    self._stop(saved=do_save)
            self.epoch, self.batch_in_epoch = self.epoch + 1, 0
            if a.save_strategy == "epoch" and self.global_step < self.total_steps:
                self.save()
        return self._finish(time.time() - t_start, loss_sum, steps_done, last_eval)

    def _stop(self, saved: bool) -> None:
        """Every rank: save this step (unless just saved), then leave the loop for a requeue."""
        path = self.out / f"checkpoint-{self.global_step}" if saved else self.save()
        step = self.global_step
        if self.dist.is_main:
            print(f"[train] stop requested: saved checkpoint-{step} at step {step}; "
                  "exiting for requeue", flush=True)  # fmt: skip
        self.report.close()
        self.dist.barrier()  # leave together: torchrun stops the others once one rank exits
        raise StopRequested(step, path)

    def _finish(self, runtime: float, loss_sum: float, steps_done: int, last_eval: int) -> dict:
        import json

        a, rep = self.a, self.report
        global_batch = a.per_device_train_batch_size * a.gradient_accumulation_steps
        global_batch *= self.dist.world
        summary = {
            "train_runtime": round(runtime, 4),
            "train_samples_per_second": round(steps_done * global_batch / runtime, 3),
            "train_steps_per_second": round(steps_done / runtime, 3),
            "train_loss": loss_sum / max(steps_done, 1),
            "epoch": round(self.epoch_float, 4),
        }
        if self.data.eval_ds is not None and last_eval != self.global_step:
            rep.eval(self.evaluate(), summary["epoch"], self.global_step)
        self.ckpt.save_final()
        if self.dist.is_main:
            (self.out / "train_results.json").write_text(json.dumps(summary, indent=2) + "\n")
            (self.out / "trainer_state.json").write_text(
                json.dumps({"global_step": self.global_step, "epoch": summary["epoch"]}) + "\n"
            )
        rep.log(summary)
        rep.close()
        return summary


def run(a: TrainArgs) -> dict:
    """Train with the given arguments (importable entry; ``main`` is the CLI)."""
    import warnings

    from internvl_chat.train.distributed import isolate_extension_builds

    isolate_extension_builds()
    # DeepSpeed calls deprecated c10d names once per bucket; the warning floods every step.
    warnings.filterwarnings("ignore", message=r".*torch\.distributed\..* is deprecated")
    warnings.filterwarnings("ignore", message=r".*gradient_checkpointing_enable.* is deprecated")
    Path(a.output_dir).mkdir(parents=True, exist_ok=True)
    return Trainer(a).train()
