"""Which settings a resume may change: pure, one rule per setting (launcher.submit.resume applies them).

A resume loads the newest valid checkpoint: the weights of this model, the optimizer and
scheduler state laid out for this parallelism and world size, and the data position counted in
micro-batches of this data at this batch size. A change that keeps all of that meaningful is
allowed; one that would not is refused with the reason.
"""

from __future__ import annotations

from typing import Any

ALLOWED = (
    "max_steps",
    "epochs",
    "save_steps",
    "save_total_limit",
    "wait",
    "dry_run",
    "cluster.",
    "hw.env.",
    "hw.network.",
    "hw.cpus_per_node",
    "hw.node_mem_gb",
    "data.num_workers",
    "model.grad_checkpoint",
)
"""Settings (exact, or a prefix ending in '.' or '_') that leave the checkpoint valid."""

REFUSED = (
    ("run_dir", "a resume continues in the run dir it was given"),
    ("runs_root", "a resume continues in the run dir it was given"),
    ("benchmark.", "the benchmark's rules are part of the run; start a new run"),
    (
        "model.freeze_",
        "the optimizer state in the checkpoint covers the parameters trained "
        "before; freezing or unfreezing changes which ones",
    ),
    ("model.unfreeze_vit_layers", "the optimizer state covers the parameters trained before"),
    ("model.use_", "LoRA adapters change the parameters the checkpoint holds"),
    ("model.", "the checkpoint holds this model's weights"),
    ("data.", "the checkpoint's data position counts samples of this data"),
    ("parallelism.", "the engine state in the checkpoint is laid out for this parallelism"),
    (
        "nodes",
        "the world size changes: the checkpoint's engine state and data position are "
        "for {world} ranks",
    ),
    (
        "hw.devices_per_node",
        "the world size changes: the checkpoint's engine state and data "
        "position are for {world} ranks",
    ),
    ("per_device_batch_size", "the checkpoint's data position counts micro-batches of this size"),
    ("gradient_accumulation_steps", "the data position counts micro-batches per optimizer step"),
    ("global_batch_size", "the data position counts samples per optimizer step"),
    ("seq_len", "samples are cut to seq_len: the data position would name other tokens"),
    ("lr", "the scheduler state in the checkpoint continues the learning rate schedule"),
    (
        "seed",
        "the same seed gives the same samples after the resume; another would repeat or skip some",
    ),
    ("hw.", "the hardware the checkpoint's engine state was saved for"),
    ("models_root", "model paths were resolved when the run was planned"),
    ("data_root", "data paths were resolved when the run was planned"),
    ("cache_dir", "the prepared model and data of the run live there"),
    ("engine_args.", "engine arguments shape the engine state in the checkpoint"),
)


def _match(key: str, rule: str) -> bool:
    return key.startswith(rule) if rule.endswith((".", "_")) else key == rule


def refusal(key: str, zero_stage: int, world_size: int) -> str | None:
    """Why `key` may not change on resume, or None if it may (ALLOWED)."""
    if any(_match(key, rule) for rule in ALLOWED):
        return None
    for rule, why in REFUSED:
        if _match(key, rule):
            if rule in ("nodes", "hw.devices_per_node") and zero_stage > 0:
                why += f" (ZeRO stage {zero_stage} partitions the optimizer state by rank)"
            return why.format(world=world_size)
    allowed = ", ".join(r + "*" if r.endswith((".", "_")) else r for r in ALLOWED)
    return f"not known to keep the checkpoint valid (a resume may change: {allowed})"


def changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two plain config trees."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for k in sorted(set(old) | set(new), key=str):
            out += changed_keys(old.get(k), new.get(k), f"{prefix}{k}.")
        return out
    return [] if old == new else [prefix.rstrip(".")]
