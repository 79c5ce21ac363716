"""Learning-rate schedule and step arithmetic (HF Trainer semantics)."""

from __future__ import annotations

import math

SCHEDULES = ("cosine", "linear", "constant", "constant_with_warmup")


def lr_lambda(kind: str, warmup: int, total: int):
    """The multiplier of the base lr at optimizer step ``step`` (as HF's ``get_scheduler``)."""

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


def every(value: float, total: int) -> int:
    """An interval in steps; HF semantics: a value < 1 is a fraction of the total steps."""
    if value < 1:
        return max(1, math.ceil(value * total))
    return int(value)


def total_steps(max_steps: int, num_train_epochs: float, steps_per_epoch: int) -> int:
    if max_steps > 0:
        return max_steps
    return math.ceil(num_train_epochs * steps_per_epoch)


def warmup_steps(warmup_steps: int, warmup_ratio: float, total: int) -> int:
    return warmup_steps or math.ceil(warmup_ratio * total)


def build_scheduler(optimizer, kind: str, warmup: int, total: int):
    import torch

    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(kind, warmup, total))


def reapply_schedule(scheduler, optimizer) -> None:
    """After loading a scheduler state, set the lr this run's schedule gives at its step.

    The saved scheduler carries the lr it last set; a resumed run recomputes it from its own
    schedule (the same unless the schedule arguments changed).
    """
    lam = scheduler.lr_lambdas[0]
    last = [base * lam(scheduler.last_epoch) for base in scheduler.base_lrs]
    for group, lr in zip(optimizer.param_groups, last, strict=True):
        group["lr"] = lr
    scheduler._last_lr = last
