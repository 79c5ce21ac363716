"""Verdict of a run against its benchmark target (conf/benchmark/*.yaml `benchmark.target`).

- metric: tgs (seed 000): pass when the run trained more than 250 steps (`min_steps: 251`) or
  for `or_hours` (72) hours, and its final logged loss is below `baseline_loss[hw]`. No
  baseline for the hardware, or too short a run, gives passed=None with the reason.
- metric: loss (seed 001): pass when a logged loss at a step <= `within_steps` (500) is below
  `loss_below` (2.3); fail once the log reaches that step without it; None before.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Verdict:
    passed: bool | None
    """None: cannot tell (no target, no baseline, run too short)."""
    reason: str

    @property
    def label(self) -> str:
        return {True: "PASS", False: "FAIL", None: "n/a"}[self.passed]


def verdict(
    target: Mapping[str, Any] | None,
    records: Sequence[Mapping[str, Any]],
    *,
    hw: str | None = None,
    train_hours: float | None = None,
) -> Verdict:
    """Judge `records` (per-step dicts with step and loss) against `target`."""
    if not target:
        return Verdict(None, "no benchmark target")
    losses = [
        (r["step"], r["loss"]) for r in sorted(records, key=lambda r: r["step"]) if "loss" in r
    ]
    last_step = max((r["step"] for r in records), default=0)
    metric = target.get("metric")
    if metric == "tgs":
        min_steps, hours = int(target.get("min_steps", 251)), target.get("or_hours")
        baselines = target.get("baseline_loss") or {}
        if not losses:
            return Verdict(None, "no loss logged")
        final = losses[-1][1]
        long_enough = last_step >= min_steps or (
            hours is not None and train_hours is not None and train_hours >= hours
        )
        if hw not in baselines:
            return Verdict(
                None,
                f"final loss {final:.4f} after {last_step} steps; no baseline loss for hw={hw} "
                "(set benchmark.target.baseline_loss." + f"{hw})",
            )
        base = float(baselines[hw])
        if not long_enough:
            span = f"{min_steps} steps" + (f" or {hours} h" if hours is not None else "")
            return Verdict(None, f"only {last_step} steps; the target needs {span}")
        ok = final < base
        return Verdict(
            ok,
            f"final loss {final:.4f} {'<' if ok else '>='} baseline {base} after {last_step} steps",
        )
    if metric == "loss":
        below, within = float(target["loss_below"]), int(target["within_steps"])
        hit = next(((s, v) for s, v in losses if s <= within and v < below), None)
        if hit:
            return Verdict(True, f"loss {hit[1]:.4f} < {below} at step {hit[0]} (<= {within})")
        if last_step >= within:
            best = min((v for s, v in losses if s <= within), default=None)
            shown = "no loss logged" if best is None else f"lowest {best:.4f}"
            return Verdict(False, f"loss never below {below} within {within} steps ({shown})")
        return Verdict(None, f"only {last_step} steps logged; loss not yet below {below}")
    return Verdict(None, f"unknown target metric {metric!r}")
