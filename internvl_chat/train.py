"""Node-side trainer: InternVL chat finetune with a plain DeepSpeed loop.

`torchrun --nproc_per_node N -m internvl_chat.train RUN_DIR/train_args.json`
(or `python -m internvl_chat.train ARGS.json` for one process without torchrun)

ARGS.json is one flat object with the official argument names (docs/DESIGN.md, "Contract:
internvl_chat.train"). Outputs: HF-Trainer-style log lines on stdout (rank 0),
``metrics_file`` JSON Lines (one object per optimizer step), TensorBoard events under
``output_dir/runs``, ``output_dir/checkpoint-N`` every ``save_steps`` (written under a
temporary name and renamed, so a visible checkpoint is complete), and the final model in
``output_dir`` in the layout it was loaded from. Exit code 0 only when training finished;
2 for bad arguments.

Deliberate differences from the official script: an image-token/feature mismatch raises
instead of zeroing the loss; weight decay applies to all trainable parameters as one group
(what the official DeepSpeed configs do, §7.1); the optimizer is always torch AdamW (the
``optimizer`` block's betas/eps are honoured), so it runs without compiled DeepSpeed ops.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# HF TrainingArguments / official names that are accepted and have no effect here.
IGNORED_KEYS = {
    "do_train",
    "do_eval",
    "use_data_resampling",  # a no-op under the HF Trainer as well (spec §5.5)
    "unfreeze_lm_head",  # a no-op in the official code (spec §2.1)
    "remove_unused_columns",
    "use_fast_tokenizer",
    "use_liger",
    "log_freq",
    "strict_mode",
    "replacement",
    "allow_overflow",
    "loss_reduction",
    "loss_reduction_all_gather",
    "max_buffer_size",
    "min_num_frame",
    "max_num_frame",
    "neftune_alpha",
    "use_custom_trainer",
    "ddp_backend",
    "disable_tqdm",
    "logging_dir",
    "run_name",
}


@dataclass(frozen=True, kw_only=True)
class TrainArgs:
    """The arguments this trainer reads; names and defaults as the official (HEAD) script."""

    # ModelArguments
    model_name_or_path: str | None = None
    vision_path: str | None = None
    llm_path: str | None = None
    mlp_path: str | None = None
    freeze_llm: bool = False
    freeze_backbone: bool = False
    freeze_mlp: bool = False
    unfreeze_vit_layers: int = 0
    vision_select_layer: int = -1
    use_backbone_lora: int = 0
    use_llm_lora: int = 0
    grad_checkpoint: bool = True
    drop_path_rate: float = 0.0
    ps_version: str = "v2"
    # DataTrainingArguments
    meta_path: str | None = None
    conv_style: str = "internlm2-chat"
    max_seq_length: int = 8192
    force_image_size: int = 448
    down_sample_ratio: float = 0.5
    pad2square: bool = False
    dynamic_image_size: bool = False
    use_thumbnail: bool = False
    min_dynamic_patch: int = 1
    max_dynamic_patch: int = 12
    normalize_type: str = "imagenet"
    group_by_length: bool = False
    use_packed_ds: bool = False
    max_packed_tokens: int | None = None
    num_images_expected: int = 40
    # TrainingArguments
    output_dir: str = "output"
    overwrite_output_dir: bool = False
    per_device_train_batch_size: int = 8
    per_device_eval_batch_size: int | None = None
    gradient_accumulation_steps: int = 1
    learning_rate: float = 5e-5
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    warmup_ratio: float = 0.0
    warmup_steps: int = 0
    lr_scheduler_type: str = "linear"
    num_train_epochs: float = 3.0
    max_steps: int = -1
    logging_steps: float = 500
    save_strategy: str = "steps"
    save_steps: float = 500
    save_total_limit: int | None = None
    evaluation_strategy: str = "no"
    eval_strategy: str | None = None
    eval_steps: float | None = None
    bf16: bool = False
    fp16: bool = False
    seed: int = 42
    dataloader_num_workers: int = 0
    deepspeed: str | None = None
    report_to: str | list = "tensorboard"
    # ours
    metrics_file: str | None = None
    eval_meta_path: str | None = None
    max_bad_sample_ratio: float = 0.05
    system_message: str | None = None
    """Replaces the template's default system prompt in training (and is stored in the saved
    config so ``tools.chat`` prompts the same way)."""


class ArgsError(ValueError):
    """Bad ARGS.json; the message lists every problem."""


def parse_args(raw: dict, source: str = "ARGS.json") -> TrainArgs:
    """Validate the flat argument object; raise ArgsError naming every bad key at once."""
    fields = {f.name: f for f in dataclasses.fields(TrainArgs)}
    problems = []
    for k in raw:
        if k not in fields and k not in IGNORED_KEYS:
            problems.append(f"{source}: unknown argument {k!r}")
    kw = {k: v for k, v in raw.items() if k in fields}
    for k, v in kw.items():
        if v is None:
            continue
        want = fields[k].type
        if "bool" in want and "int" not in want and not isinstance(v, bool):
            problems.append(f"{source}: {k} must be true/false, got {v!r}")
        elif want.startswith("int") and (isinstance(v, bool) or not isinstance(v, int)):
            problems.append(f"{source}: {k} must be an integer, got {v!r}")
        elif want.startswith("float") and (isinstance(v, bool) or not isinstance(v, int | float)):
            problems.append(f"{source}: {k} must be a number, got {v!r}")
    if problems:
        raise ArgsError("\n".join(problems))
    a = TrainArgs(**kw)
    if a.model_name_or_path is None and not (a.vision_path and a.llm_path):
        problems.append(f"{source}: set model_name_or_path, or both vision_path and llm_path")
    for k in ("model_name_or_path", "vision_path", "llm_path", "mlp_path", "meta_path",
              "deepspeed", "eval_meta_path"):  # fmt: skip
        v = getattr(a, k)
        if v is not None and not Path(v).exists():
            problems.append(f"{source}: {k} {v!r} does not exist")
    if a.meta_path is None:
        problems.append(f"{source}: meta_path is required")
    if a.deepspeed is None:
        problems.append(f"{source}: deepspeed (a DeepSpeed JSON config) is required")
    if a.fp16:
        problems.append(f"{source}: fp16 is not supported; use bf16 (GPU) or fp32 (CPU)")
    if a.lr_scheduler_type not in ("cosine", "linear", "constant", "constant_with_warmup"):
        problems.append(f"{source}: lr_scheduler_type {a.lr_scheduler_type!r} is not supported")
    if a.ps_version not in ("v1", "v2"):
        problems.append(f"{source}: ps_version {a.ps_version!r}: expected v1 or v2")
    if a.per_device_train_batch_size < 1 or a.gradient_accumulation_steps < 1:
        problems.append(
            f"{source}: per_device_train_batch_size and gradient_accumulation_steps must be >= 1"
        )
    if a.max_steps <= 0 and a.num_train_epochs <= 0:
        problems.append(f"{source}: set max_steps > 0 or num_train_epochs > 0")
    if a.save_strategy not in ("steps", "no", "epoch"):
        problems.append(f"{source}: save_strategy {a.save_strategy!r}: expected steps, epoch or no")
    if problems:
        raise ArgsError("\n".join(problems))
    return a


def read_args(path: str) -> TrainArgs:
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArgsError(f"{path}: no such file") from None
    except json.JSONDecodeError as e:
        raise ArgsError(f"{path}:{e.lineno}: invalid JSON: {e.msg}") from None
    if not isinstance(raw, dict):
        raise ArgsError(f"{path}: expected one JSON object")
    return parse_args(raw, path)


def ds_config(a: TrainArgs, world_size: int) -> dict:
    """The DeepSpeed config from ``a.deepspeed``, checked against the arguments."""
    path = a.deepspeed
    try:
        cfg = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ArgsError(f"{path}:{e.lineno}: invalid JSON: {e.msg}") from None
    want = {
        "train_micro_batch_size_per_gpu": a.per_device_train_batch_size,
        "gradient_accumulation_steps": a.gradient_accumulation_steps,
        "train_batch_size": a.per_device_train_batch_size
        * a.gradient_accumulation_steps
        * world_size,
        "gradient_clipping": a.max_grad_norm,
    }
    problems = []
    for k, v in want.items():
        have = cfg.get(k, "auto")
        if have != "auto" and have != v:
            problems.append(
                f"{path}: {k} is {have} but the arguments give {v} (world size {world_size})"
            )
        cfg[k] = v
    for block, enabled in (("bf16", a.bf16), ("fp16", False)):
        have = cfg.get(block, {}).get("enabled", "auto")
        if have != "auto" and bool(have) != enabled:
            problems.append(f"{path}: {block}.enabled is {have} but {block} argument is {enabled}")
        cfg.setdefault(block, {})["enabled"] = enabled
    if problems:
        raise ArgsError("\n".join(problems))
    opt = cfg.pop("optimizer", None) or {}
    cfg.pop("scheduler", None)
    cfg["zero_allow_untested_optimizer"] = True
    cfg["zero_force_ds_cpu_optimizer"] = False
    cfg.setdefault("steps_per_print", 2**31 - 1)
    cfg["_optimizer_params"] = opt.get("params", {})
    return cfg


def lr_lambda(kind: str, warmup: int, total: int):
    def f(step: int) -> float:
        if kind != "constant" and step < warmup:
            return step / max(1, warmup)
        if kind.startswith("constant"):
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        if kind == "cosine":
            return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
        return max(0.0, 1.0 - progress)  # linear

    return f


# ---------------------------------------------------------------- checkpoints


def complete_checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    """``checkpoint-N`` folders that were renamed into place (hence complete), oldest first."""
    found = []
    if output_dir.is_dir():
        for p in output_dir.iterdir():
            name = p.name
            complete = p.is_dir() and (p / "trainer_state.json").exists()
            if complete and name.startswith("checkpoint-") and name[11:].isdigit():
                found.append((int(name[11:]), p))
    return sorted(found)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _single_process_env() -> None:
    """Let `python -m internvl_chat.train` run as one process without torchrun."""
    if "RANK" not in os.environ:
        os.environ.update(
            RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1",
            MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()),
        )  # fmt: skip


# ---------------------------------------------------------------- the run


class Trainer:
    """Everything one run needs; ``train()`` is the loop. Built by :func:`run`."""

    def __init__(self, a: TrainArgs):
        import deepspeed
        import torch
        import torch.distributed as dist

        from internvl_chat.data import DataConfig, LengthGroupedSampler, build_train_dataset
        from internvl_chat.model import attach_tokenizer, configure_trainable, load_model
        from internvl_chat.tokenizer import load_tokenizer

        self.a, self.torch, self.dist = a, torch, dist
        _single_process_env()
        cuda = torch.cuda.is_available()
        deepspeed.init_distributed(dist_backend="nccl" if cuda else "gloo")
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.local_rank = int(os.environ.get("LOCAL_RANK", 0))
        self.device = torch.device(f"cuda:{self.local_rank}") if cuda else torch.device("cpu")
        if cuda:
            torch.cuda.set_device(self.device)
        self.is_main = self.rank == 0
        ds = ds_config(a, self.world)
        opt_params = ds.pop("_optimizer_params")
        self.out = Path(a.output_dir)
        self.stage = int(ds.get("zero_optimization", {}).get("stage", 0))
        torch.manual_seed(a.seed)

        # Model (spec §4): load, apply argument overrides, then freeze / LoRA in order.
        model = load_model(
            a.model_name_or_path,
            vision_path=a.vision_path,
            llm_path=a.llm_path,
            mlp_path=a.mlp_path,
            dtype=torch.bfloat16 if a.bf16 else torch.float32,
            overrides={
                "template": a.conv_style,
                "select_layer": a.vision_select_layer,
                "dynamic_image_size": a.dynamic_image_size,
                "use_thumbnail": a.use_thumbnail,
                "ps_version": a.ps_version,
                "min_dynamic_patch": a.min_dynamic_patch,
                "max_dynamic_patch": a.max_dynamic_patch,
                "force_image_size": a.force_image_size,
            },
        )
        if abs(model.config.downsample_ratio - a.down_sample_ratio) > 1e-9:
            raise ArgsError(
                f"down_sample_ratio {a.down_sample_ratio} differs from the checkpoint's "
                f"downsample_ratio {model.config.downsample_ratio}"
            )
        tok_path = model.tokenizer_dir
        self.tokenizer = load_tokenizer(tok_path, model_max_length=a.max_seq_length)
        attach_tokenizer(model, self.tokenizer)
        if a.system_message is not None:
            model.config.extra["system_message"] = a.system_message
        base = model.vision_model
        base.set_drop_path_rate(a.drop_path_rate)
        self.trainable = configure_trainable(
            model,
            freeze_backbone=a.freeze_backbone,
            freeze_llm=a.freeze_llm,
            freeze_mlp=a.freeze_mlp,
            unfreeze_vit_layers=a.unfreeze_vit_layers,
            use_backbone_lora=a.use_backbone_lora,
            use_llm_lora=a.use_llm_lora,
            grad_checkpoint=a.grad_checkpoint,
        )
        if not self.trainable:
            raise ArgsError("nothing to train: every parameter is frozen (freeze_* settings)")
        if a.bf16:
            model.to(torch.bfloat16)
        self.model = model
        if self.is_main:
            n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
            n_all = sum(p.numel() for p in model.parameters())
            print(f"trainable parameters: {n_train} of {n_all} ({len(self.trainable)} tensors)")
            for name in self.trainable:
                print(f"  trainable: {name}")

        # Data (spec §5).
        data_cfg = DataConfig.from_any(
            dataclasses.asdict(a),
            patch_size=model.config.vision_config.patch_size,
            seed=a.seed,
        )
        self.train_ds = build_train_dataset(a.meta_path, self.tokenizer, data_cfg)
        self.eval_ds = None
        if a.eval_meta_path:
            self.eval_ds = build_train_dataset(
                a.eval_meta_path, self.tokenizer, DataConfig.from_any(data_cfg, use_packed_ds=False)
            )
        if a.group_by_length:
            sampler = LengthGroupedSampler(
                self.train_ds.lengths,
                a.per_device_train_batch_size,
                world_size=self.world,
                rank=self.rank,
                grad_accum=a.gradient_accumulation_steps,
                seed=a.seed,
            )
        else:
            sampler = torch.utils.data.DistributedSampler(
                self.train_ds, self.world, self.rank, shuffle=True, seed=a.seed
            )
        self.sampler = sampler
        collate = getattr(self.train_ds, "collate", None) or getattr(
            getattr(self.train_ds, "base", None), "collate", None
        )
        self.collate = collate
        self.loader = torch.utils.data.DataLoader(
            self.train_ds,
            batch_size=a.per_device_train_batch_size,
            sampler=sampler,
            collate_fn=collate,
            num_workers=a.dataloader_num_workers,
            drop_last=False,
        )
        ga = a.gradient_accumulation_steps
        self.steps_per_epoch = max(len(self.loader) // ga, 1)
        if a.max_steps > 0:
            self.total_steps = a.max_steps
        else:
            self.total_steps = math.ceil(a.num_train_epochs * self.steps_per_epoch)
        warmup = a.warmup_steps or math.ceil(a.warmup_ratio * self.total_steps)

        # Optimizer: one group, uniform weight decay (as the official DS optimizer block).
        params = [p for p in model.parameters() if p.requires_grad]
        betas = opt_params.get("betas", [a.adam_beta1, a.adam_beta2])
        optimizer = torch.optim.AdamW(
            params,
            lr=a.learning_rate,
            betas=tuple(betas),
            eps=opt_params.get("eps", a.adam_epsilon),
            weight_decay=a.weight_decay,
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lr_lambda(a.lr_scheduler_type, warmup, self.total_steps)
        )
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds
        )
        self.global_step = 0
        self.writer = None
        report = a.report_to if isinstance(a.report_to, list) else [a.report_to]
        if self.is_main and "tensorboard" in report:
            from torch.utils.tensorboard import SummaryWriter

            stamp = time.strftime("%b%d_%H-%M-%S")
            self.writer = SummaryWriter(str(self.out / "runs" / f"{stamp}_{socket.gethostname()}"))

    # ------------------------------------------------------------ helpers

    def log(self, obj: dict) -> None:
        if self.is_main:
            print(repr(obj), flush=True)

    def _batch_to_device(self, batch: dict) -> dict:
        torch = self.torch
        out = {}
        for k, v in batch.items():
            if isinstance(v, torch.Tensor):
                v = v.to(self.device)
                if k == "pixel_values" and self.a.bf16:
                    v = v.to(torch.bfloat16)
            out[k] = v
        return out

    def _allreduce(self, values: list[float], op=None) -> list[float]:
        torch = self.torch
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        self.dist.all_reduce(t, op=op or self.dist.ReduceOp.SUM)
        return t.tolist()

    def _gathered_state(self) -> dict | None:
        """Full weights in the model's own names (rank 0), gathered under ZeRO-3."""
        if self.stage == 3:
            sd = self.engine._zero3_consolidated_16bit_state_dict()
            return sd if self.is_main else None
        return self.engine.module.state_dict() if self.is_main else None

    def save_checkpoint(self) -> None:
        from internvl_chat.model import save_model

        step = self.global_step
        final = self.out / f"checkpoint-{step}"
        tmp = self.out / f".tmp-checkpoint-{step}"
        if self.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        self.dist.barrier()
        self.engine.save_checkpoint(str(tmp), tag="ds")
        state = self._gathered_state()
        if self.is_main:
            save_model(self.engine.module, tmp, state_dict=state, tokenizer=self.tokenizer)
            (tmp / "trainer_state.json").write_text(
                json.dumps({"global_step": step, "epoch": self.epoch_float}) + "\n"
            )
            shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)
            limit = self.a.save_total_limit
            if limit:
                for _, old in complete_checkpoints(self.out)[:-limit]:
                    shutil.rmtree(old, ignore_errors=True)
        self.dist.barrier()

    def maybe_resume(self) -> int:
        """Load the newest complete checkpoint unless overwrite_output_dir; return its step."""
        if self.a.overwrite_output_dir:
            return 0
        found = complete_checkpoints(self.out)
        if not found:
            return 0
        step, path = found[-1]
        self.engine.load_checkpoint(str(path), tag="ds")
        # The saved scheduler carries the lr it last set; recompute it from this run's schedule.
        lam = self.scheduler.lr_lambdas[0]
        last = [base * lam(self.scheduler.last_epoch) for base in self.scheduler.base_lrs]
        for group, lr in zip(self.optimizer.param_groups, last, strict=True):
            group["lr"] = lr
        self.scheduler._last_lr = last
        self.global_step = step
        self.log({"resumed_from": str(path), "global_step": step})
        return step

    @property
    def epoch_float(self) -> float:
        return self.global_step / self.steps_per_epoch

    def evaluate(self) -> float:
        torch = self.torch
        sampler = torch.utils.data.DistributedSampler(
            self.eval_ds, self.world, self.rank, shuffle=False
        )
        loader = torch.utils.data.DataLoader(
            self.eval_ds,
            batch_size=self.a.per_device_eval_batch_size or self.a.per_device_train_batch_size,
            sampler=sampler,
            collate_fn=self.eval_ds.collate,
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
        self.engine.train()
        if self.a.freeze_llm:
            self.engine.module.language_model.eval()
        total, count = self._allreduce([total, count])
        return total / max(count, 1.0)

    # ------------------------------------------------------------ the loop

    def train(self) -> dict:
        a = self.a
        ga = a.gradient_accumulation_steps
        start = self.maybe_resume()
        micro_per_epoch = len(self.loader)
        skip = start * ga  # micro-batches already consumed
        epoch = skip // micro_per_epoch
        skip -= epoch * micro_per_epoch
        logging_steps = _steps(a.logging_steps, self.total_steps)
        save_steps = _steps(a.save_steps, self.total_steps)
        eval_strategy = a.eval_strategy or a.evaluation_strategy
        eval_steps = _steps(a.eval_steps or a.logging_steps, self.total_steps)
        metrics = None
        if self.is_main and a.metrics_file:
            Path(a.metrics_file).parent.mkdir(parents=True, exist_ok=True)
            metrics = open(a.metrics_file, "a", encoding="utf-8")  # noqa: SIM115
        self.engine.train()
        if a.freeze_llm:
            self.engine.module.language_model.eval()
        t_start = time.time()
        loss_since_log, steps_since_log, loss_sum, steps_done = 0.0, 0, 0.0, 0
        acc = _StepAcc()
        last_eval = -1
        while self.global_step < self.total_steps:
            self.sampler.set_epoch(epoch)
            it = iter(self.loader)
            for _ in range(skip):
                next(it, None)
            skip = 0
            while self.global_step < self.total_steps:
                t0 = time.time()
                batch = next(it, None)
                if batch is None:
                    break
                batch = self._batch_to_device(batch)
                acc.data_time += time.time() - t0
                acc.start = acc.start or t0
                out = self.engine(**batch)
                loss = out["loss"]
                self.engine.backward(loss)
                boundary = self.engine.is_gradient_accumulation_boundary()
                lr = self.scheduler.get_last_lr()[0]
                self.engine.step()
                acc.add(batch, float(loss.detach()), self.engine.module.img_context_token_id)
                if not boundary:
                    continue
                self.global_step += 1
                step_time = time.time() - acc.start
                loss_g, tokens, img, samples, mx = self._step_stats(acc)
                grad_norm = self.engine.get_global_grad_norm()
                grad_norm = float(grad_norm) if grad_norm is not None else None
                loss_since_log += loss_g
                steps_since_log += 1
                loss_sum += loss_g
                steps_done += 1
                rec = {
                    "step": self.global_step,
                    "loss": loss_g,
                    "lr": lr,
                    "samples_per_sec": samples / step_time,
                    "tokens_per_sec": tokens / step_time,
                    "epoch": round(self.epoch_float, 4),
                    "grad_norm": grad_norm,
                    "step_time": step_time,
                    "data_time": acc.data_time,
                    "tokens": int(tokens),
                    "image_tokens": int(img),
                    "text_tokens": int(tokens - img),
                    "samples": int(samples),
                    "peak_mem_gb": mx,
                }
                acc = _StepAcc()
                if self.global_step % logging_steps == 0 or self.global_step == self.total_steps:
                    line = {
                        "loss": round(loss_since_log / steps_since_log, 4),
                        "grad_norm": grad_norm,
                        "learning_rate": lr,
                        "epoch": round(self.epoch_float, 4),
                    }
                    self.log(line)
                    self._tb({"train/loss": line["loss"], "train/learning_rate": lr,
                              "train/grad_norm": grad_norm, "train/epoch": line["epoch"]})  # fmt: skip
                    loss_since_log, steps_since_log = 0.0, 0
                do_save = a.save_strategy == "steps" and self.global_step % save_steps == 0
                do_eval = self.eval_ds is not None and (
                    do_save or (eval_strategy == "steps" and self.global_step % eval_steps == 0)
                )
                if do_eval:
                    last_eval = self.global_step
                    rec["eval_loss"] = self.evaluate()
                    self.log({"eval_loss": round(rec["eval_loss"], 4), "epoch": rec["epoch"]})
                    self._tb({"eval/loss": rec["eval_loss"]})
                if metrics:
                    metrics.write(json.dumps(rec) + "\n")
                    metrics.flush()
                if do_save:
                    self.save_checkpoint()
            epoch += 1
            if a.save_strategy == "epoch" and self.global_step < self.total_steps:
                self.save_checkpoint()
        runtime = time.time() - t_start
        global_batch = a.per_device_train_batch_size * ga * self.world
        summary = {
            "train_runtime": round(runtime, 4),
            "train_samples_per_second": round(steps_done * global_batch / runtime, 3),
            "train_steps_per_second": round(steps_done / runtime, 3),
            "train_loss": loss_sum / max(steps_done, 1),
            "epoch": round(self.epoch_float, 4),
        }
        if self.eval_ds is not None and last_eval != self.global_step:
            summary_eval = self.evaluate()
            self.log({"eval_loss": round(summary_eval, 4), "epoch": summary["epoch"]})
            self._tb({"eval/loss": summary_eval})
        self.save_final()
        if self.is_main:
            (self.out / "train_results.json").write_text(json.dumps(summary, indent=2) + "\n")
            (self.out / "trainer_state.json").write_text(
                json.dumps({"global_step": self.global_step, "epoch": summary["epoch"]}) + "\n"
            )
        self.log(summary)
        if metrics:
            metrics.close()
        if self.writer:
            self.writer.close()
        return summary

    def _step_stats(self, acc: _StepAcc) -> tuple[float, float, float, float, float]:
        torch = self.torch
        mem = 0.0
        if torch.cuda.is_available():
            mem = torch.cuda.max_memory_allocated() / 2**30
        else:
            import resource

            mem = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
        loss_sum, tokens, img, samples, n = self._allreduce(
            [acc.loss, acc.tokens, acc.image_tokens, acc.samples, acc.micro]
        )
        (mx,) = self._allreduce([mem], op=self.dist.ReduceOp.MAX)
        return loss_sum / max(n, 1), tokens, img, samples, round(mx, 4)

    def _tb(self, scalars: dict) -> None:
        if self.writer:
            for k, v in scalars.items():
                if v is not None:
                    self.writer.add_scalar(k, v, self.global_step)

    def save_final(self) -> None:
        from internvl_chat.model import save_model

        state = self._gathered_state()
        if self.is_main:
            save_model(self.engine.module, self.out, state_dict=state, tokenizer=self.tokenizer)
        self.dist.barrier()


class _StepAcc:
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


def _steps(value: float, total: int) -> int:
    """HF semantics: a value < 1 is a fraction of the total steps."""
    if value < 1:
        return max(1, math.ceil(value * total))
    return int(value)


def _isolate_extension_builds() -> None:
    """One JIT build folder per DeepSpeed version (unless TORCH_EXTENSIONS_DIR is set).

    DeepSpeed compiles its CPU shm-comm op into torch's shared extension cache; another venv
    with a different DeepSpeed (the XTuner one) rebuilds the same name there, and a run then
    loads the other version's module and dies at init ("no attribute vector_kernel_level").
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        ds_version = version("deepspeed")
    except PackageNotFoundError:
        return
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "torch_extensions"
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(base / f"deepspeed-{ds_version}"))


def run(a: TrainArgs) -> dict:
    """Train with the given arguments (importable entry; ``main`` is the CLI)."""
    import warnings

    _isolate_extension_builds()
    # DeepSpeed calls deprecated c10d names once per bucket; the warning floods every step.
    warnings.filterwarnings("ignore", message=r".*torch\.distributed\..* is deprecated")
    warnings.filterwarnings("ignore", message=r".*gradient_checkpointing_enable.* is deprecated")
    out = Path(a.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(a)
    return trainer.train()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or not argv[0].endswith(".json"):
        print("usage: python -m internvl_chat.train ARGS.json", file=sys.stderr)
        return 2
    try:
        args = read_args(argv[0])
        run(args)
    except ArgsError as e:
        print(f"internvl_chat.train: bad arguments:\n{e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
