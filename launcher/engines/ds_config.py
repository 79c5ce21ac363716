"""DeepSpeed ZeRO JSON with every value explicit (no "auto"), following InternVL's shipped
zero_stage{1,2,3}_config.json (spec 7.1) and its *_offload variant."""

from __future__ import annotations

from typing import Any

from launcher.config.spec import JobSpec
from launcher.contract import Derived


def zero_section(spec: JobSpec) -> dict[str, Any]:
    par = spec.parallelism
    if par.zero_stage == 0:
        return {"stage": 0}
    if par.zero_stage in (1, 2):
        bucket = 1e9 if par.zero_stage == 1 else 1e8
        section: dict[str, Any] = {
            "stage": par.zero_stage,
            "allgather_partitions": True,
            "allgather_bucket_size": bucket,
            "overlap_comm": True,
            "reduce_scatter": True,
            "reduce_bucket_size": bucket,
            "contiguous_gradients": True,
        }
    elif par.offload_param or par.offload_optimizer:
        section = {
            "stage": 3,
            "overlap_comm": False,
            "contiguous_gradients": True,
            "sub_group_size": 1e7,
            "reduce_bucket_size": 1e7,
            "stage3_prefetch_bucket_size": 1e7,
            "stage3_param_persistence_threshold": 1e4,
            "stage3_max_live_parameters": 1e8,
            "stage3_max_reuse_distance": 1e8,
            "stage3_gather_16bit_weights_on_model_save": True,
        }
    else:
        section = {
            "stage": 3,
            "overlap_comm": True,
            "contiguous_gradients": True,
            "sub_group_size": 1e9,
            "reduce_bucket_size": 1e9,
            "stage3_prefetch_bucket_size": 1e9,
            "stage3_param_persistence_threshold": 1e7,
            "stage3_max_live_parameters": 1e9,
            "stage3_max_reuse_distance": 1e9,
            "stage3_gather_16bit_weights_on_model_save": True,
        }
    if par.offload_optimizer:
        section["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if par.offload_param:
        section["offload_param"] = {"device": "cpu", "pin_memory": True}
    return section


def render(spec: JobSpec, derived: Derived, *, optimizer_block: bool) -> dict[str, Any]:
    """The DeepSpeed config. `optimizer_block`: the official code lets DeepSpeed build AdamW
    from the JSON; our trainer passes torch's AdamW itself (no compiled ops on CPU)."""
    precision = spec.hw.precision
    cfg: dict[str, Any] = {
        "train_batch_size": derived.global_batch_size,
        "train_micro_batch_size_per_gpu": derived.per_device_batch_size,
        "gradient_accumulation_steps": derived.gradient_accumulation_steps,
        "gradient_clipping": 1.0,
        "zero_optimization": zero_section(spec),
        "fp16": {
            "enabled": precision == "fp16",
            "auto_cast": True,
            "loss_scale": 0,
            "initial_scale_power": 32,
            "loss_scale_window": 1000,
            "hysteresis": 2,
            "min_loss_scale": 1,
        },
        "bf16": {"enabled": precision == "bf16"},
        "steps_per_print": 2000,
        "wall_clock_breakdown": spec.parallelism.zero_stage != 2,
        "zero_allow_untested_optimizer": True,
        "zero_force_ds_cpu_optimizer": False,
    }
    if optimizer_block:
        cfg["optimizer"] = {
            "type": "AdamW",
            "params": {
                "lr": spec.lr,
                "betas": [0.9, 0.999],
                "eps": 1e-8,
                "weight_decay": spec.model.weight_decay,
            },
        }
    return cfg
