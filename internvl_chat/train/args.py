"""The ``train_args.json`` contract: every argument the trainer reads, checked at once.

Torch-free, so the launcher's tests and a login node can validate arguments without the
training environment. Names and defaults follow the official (HEAD) InternVL finetune script.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from internvl_chat.train.schedule import SCHEDULES

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
    "loss_reduction_all_gather",  # ours always normalises by the all-ranks weight sum
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
    loss_reduction: str | None = None
    """token | sample | square: every supervised token of a sample weighs 1, 1/N or 1/sqrt(N)
    (N: that sample's supervised tokens), normalised by the weights' sum over all ranks, as the
    official 3.5 code; None: the mean over the micro-batch's supervised tokens."""
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
    resume_from_checkpoint: str | None = None
    """A checkpoint folder to resume from instead of the newest valid one in output_dir."""
    ddp_timeout: int = 1800
    """Seconds a collective may wait (the process-group timeout, gloo and NCCL)."""
    evaluation_strategy: str = "no"
    eval_strategy: str | None = None
    eval_steps: float | None = None
    bf16: bool = False
    fp16: bool = False
    seed: int = 42
    dataloader_num_workers: int = 0
    deepspeed: str | None = None
    report_to: str | list = "tensorboard"
    run_name: str | None = None
    """The tracker's run name (the run dir's name)."""
    # ours
    metrics_file: str | None = None
    stop_file: str | None = None
    """When this file exists (or a rank gets SIGUSR1), every rank saves a checkpoint at the next
    optimizer step and the trainer exits with 75 for the launcher to requeue."""
    eval_meta_path: str | None = None
    max_bad_sample_ratio: float = 0.05
    lora_parity_init: bool = False
    """LoRA adapters seeded per module and no LoRA dropout (model.lora.parity_init): only for a
    loss-parity check against the official trainer with its edit P1; changes what is trained."""
    save_format: str | None = None
    """hf | github: the checkpoint format saved; None: the one loaded."""
    internvl_revision: str = "head"
    """pin / head: the official code whose default system message and edge cases apply."""
    system_message: str | None = None
    """Replaces the template's default system prompt in training (and is stored in the saved
    config so ``tools.chat`` prompts the same way)."""
    tracking_params: str | None = None
    """A YAML file (the run's config.yaml) logged as the W&B / MLflow run's params."""


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
              "deepspeed", "eval_meta_path", "resume_from_checkpoint"):  # fmt: skip
        v = getattr(a, k)
        if v is not None and not Path(v).exists():
            problems.append(f"{source}: {k} {v!r} does not exist")
    if a.meta_path is None:
        problems.append(f"{source}: meta_path is required")
    if a.deepspeed is None:
        problems.append(f"{source}: deepspeed (a DeepSpeed JSON config) is required")
    if a.fp16:
        problems.append(f"{source}: fp16 is not supported; use bf16 (GPU) or fp32 (CPU)")
    if a.lr_scheduler_type not in SCHEDULES:
        problems.append(f"{source}: lr_scheduler_type {a.lr_scheduler_type!r} is not supported")
    if a.loss_reduction not in (None, "token", "sample", "square"):
        problems.append(
            f"{source}: loss_reduction {a.loss_reduction!r}: expected token, sample or square"
        )
    if a.save_format not in (None, "hf", "github"):
        problems.append(f"{source}: save_format {a.save_format!r}: expected hf or github")
    if a.ps_version not in ("v1", "v2"):
        problems.append(f"{source}: ps_version {a.ps_version!r}: expected v1 or v2")
    if a.per_device_train_batch_size < 1 or a.gradient_accumulation_steps < 1:
        problems.append(
            f"{source}: per_device_train_batch_size and gradient_accumulation_steps must be >= 1"
        )
    if a.max_steps <= 0 and a.num_train_epochs <= 0:
        problems.append(f"{source}: set max_steps > 0 or num_train_epochs > 0")
    if a.ddp_timeout <= 0:
        problems.append(f"{source}: ddp_timeout must be > 0 seconds, got {a.ddp_timeout}")
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
