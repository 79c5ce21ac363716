"""Benchmark metrics from per-step records (launcher.report.collect parsers).

Definitions:
- Warm-up: records with step <= warmup_steps (default 5) are left out of every average.
  XTuner logs every N iterations; a record stands for the steps since the previous one and is
  weighted by that count.
- TGS (seed 000): mean over the window of samples/s, x seq_len / #devices. Samples/s per step
  is the log's own figure, else samples / step_time, else global_batch_size / step_time. It
  needs >= min_steps (default 15) steps in the window; otherwise tgs is None and tgs_reason
  says why. A log with no per-step rate falls back to HF's final train_samples_per_second
  (which also counts startup and saving), said in tgs_source.
- tokens/s per device: real (non-padding) tokens / step time / #devices, image and text apart
  when the log has them; XTuner's tokens_per_sec is per device already (text tokens, padded).
- Model TFLOPs per device and MFU (launcher.flops): from the measured token counts when the log
  has them (LLM + ViT + projector); else from XTuner's tokens/s (LLM only); else samples/s x
  seq_len tokens (LLM only). mfu_basis says which. XTuner's own tflops is kept apart.
- Step time p50/p95 and the data-loading share (sum data_time / sum step_time) over the window.
- SPS and TPS as MindSpeed-MM's scripts define them (seed 004), for any run, so an Ascend run
  and an NVIDIA run compare on one definition: SPS = samples / time over iterations 51-150
  (their `head -n 150 | tail -n 100` of the per-iteration lines; GBS x 1000 / mean elapsed ms),
  TPS per device = SPS x mean LLM tokens per sample / #devices (its README's per-card figure).
  A shorter run uses the steps after warm-up instead and says so in sps_window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from launcher.flops import ALL_TRAINABLE, ModelDims, Trainable, llm_flops_per_token, sample_flops

# The two throughput figures, labelled wherever they are written (summary, report, CSV).
TGS_DEFINITION = "seed 000 formula: samples/s x seq_len / devices (padding counted)"
REAL_TOKENS = "real non-padding tokens (image + text) / step time / devices"


@dataclass(frozen=True, slots=True, kw_only=True)
class Metrics:
    steps: int
    final_loss: float | None
    tgs: float | None
    tgs_steps: int
    tgs_source: str | None
    tgs_reason: str | None
    tokens_per_sec_per_device: float | None
    image_tokens_per_sec_per_device: float | None
    text_tokens_per_sec_per_device: float | None
    step_time_p50: float | None
    step_time_p95: float | None
    peak_mem_gb: float | None
    tflops_per_device: float | None
    mfu: float | None
    mfu_basis: str | None
    xtuner_tflops: float | None
    data_time_share: float | None
    train_hours: float | None
    notes: list[str] = field(default_factory=list)
    sps: float | None = None
    sps_window: str | None = None
    tps_per_device: float | None = None
    tokens_per_sec_per_device_source: str | None = None
    """What tokens_per_sec_per_device counts (REAL_TOKENS, or the fallback used)."""

    @property
    def tgs_definition(self) -> str | None:
        return TGS_DEFINITION if self.tgs is not None else None

    @property
    def throughput_notes(self) -> list[str]:
        """report.md's notes: how TGS was measured (or why not), what real tokens/s counts."""
        tgs = f"TGS ({TGS_DEFINITION}): {self.tgs_source}"
        out = [tgs if self.tgs is not None else f"no TGS: {self.tgs_reason}"]
        real = self.tokens_per_sec_per_device_source
        return out + ([f"real tokens/s/device: {real}"] if real else [])

    @property
    def throughput_labels(self) -> dict[str, str | None]:
        """What each throughput figure counts, written beside them (summary, CSV, report)."""
        return {
            "tgs_definition": self.tgs_definition,
            "tokens_per_sec_per_device_source": self.tokens_per_sec_per_device_source,
        }


def _percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), without numpy."""
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _weighted_mean(pairs: list[tuple[float, float]]) -> float | None:
    total = sum(w for _, w in pairs)
    return sum(v * w for v, w in pairs) / total if total else None


SPS_WINDOW = (51, 150)


def seed_sps(
    records: Sequence[dict[str, Any]],
    *,
    gpus: int | None,
    global_batch_size: int | None,
    warmup_steps: int = 5,
) -> tuple[float | None, str | None, float | None]:
    """(SPS, which iterations it covers, TPS per device); see the module docstring."""
    first, last = SPS_WINDOW
    timed = [r for r in records if r.get("step_time")]
    window = [r for r in timed if first <= r["step"] <= last]
    label = f"iterations {first}-{last}"
    if len(window) < last - first + 1:
        window = [r for r in timed if r["step"] > warmup_steps]
        label = (
            f"steps {warmup_steps + 1}-{window[-1]['step']} (fewer than {last})" if window else None
        )
    if not window:
        return None, None, None

    def samples(r: dict[str, Any]) -> float | None:
        if "samples" in r:
            return r["samples"]
        if "samples_per_sec" in r:
            return r["samples_per_sec"] * r["step_time"]
        return global_batch_size

    counted = [(s, r) for r in window if (s := samples(r)) is not None]
    if len(counted) < len(window):
        return None, None, None
    sps = sum(s for s, _ in counted) / sum(r["step_time"] for r in window)
    per_sample = [r["tokens"] / s for s, r in counted if "tokens" in r and s]
    tps = None
    if per_sample and len(per_sample) == len(counted) and gpus:
        tps = sps * (sum(per_sample) / len(per_sample)) / gpus
    return sps, label, tps


def compute(
    records: Sequence[dict[str, Any]],
    *,
    gpus: int | None,
    seq_len: int | None,
    global_batch_size: int | None = None,
    summary: dict[str, Any] | None = None,
    dims: ModelDims | None = None,
    trainable: Trainable = ALL_TRAINABLE,
    peak_tflops: float | None = None,
    warmup_steps: int = 5,
    min_steps: int = 15,
) -> Metrics:
    """Metrics for one run (see the module docstring for each definition)."""
    notes: list[str] = []
    recs = sorted(records, key=lambda r: r["step"])
    # A record stands for the steps since the previous one; the first for one interval
    # (an excerpt starting at iter 360 of a log written every 10 iters weighs 10, not 360).
    first_gap = (
        recs[1]["step"] - recs[0]["step"] if len(recs) > 1 else recs[0]["step"] if recs else 0
    )
    weighted, prev = [], (recs[0]["step"] - first_gap if recs else 0)
    for r in recs:
        weighted.append((r, max(r["step"] - prev, 1)))
        prev = r["step"]
    window = [(r, w) for r, w in weighted if r["step"] > warmup_steps]
    covered = sum(w for _, w in window)
    losses = [r["loss"] for r in recs if "loss" in r]
    steps = recs[-1]["step"] if recs else 0

    def rate(r: dict) -> float | None:
        if "samples_per_sec" in r:
            return r["samples_per_sec"]
        if r.get("step_time"):
            if "samples" in r:
                return r["samples"] / r["step_time"]
            if global_batch_size:
                return global_batch_size / r["step_time"]
        return None

    # TGS
    tgs = tgs_source = tgs_reason = None
    rates = [(x, w) for r, w in window if (x := rate(r)) is not None]
    rated = sum(w for _, w in rates)
    if not gpus or not seq_len:
        tgs_reason = "needs the number of devices and seq_len"
    elif rated >= min_steps:
        tgs = _weighted_mean(rates) * seq_len / gpus
        tgs_source = f"mean samples/s over steps {warmup_steps + 1}..{steps}"
    elif not rates and summary and "train_samples_per_second" in summary and covered >= min_steps:
        tgs = summary["train_samples_per_second"] * seq_len / gpus
        tgs_source = "train_samples_per_second of the final summary (includes startup and saving)"
    elif not rates and not global_batch_size and any(r.get("step_time") for r in recs):
        tgs_reason = "the log has step times but no samples; give the global batch size"
    else:
        tgs_reason = (
            f"only {rated} step(s) with a throughput figure after the {warmup_steps} warm-up "
            f"step(s); TGS needs at least {min_steps}"
        )

    # tokens/s per device
    def per_device(key: str) -> float | None:
        rows = [(r, w) for r, w in window if key in r and r.get("step_time")]
        time = sum(r["step_time"] * w for r, w in rows)
        if not rows or not gpus or not time:
            return None
        return sum(r[key] * w for r, w in rows) / time / gpus

    tok = per_device("tokens")
    tok_source = REAL_TOKENS if tok is not None else None
    if tok is None and gpus:
        job = [(r["tokens_per_sec"], w) for r, w in window if "tokens_per_sec" in r]
        tok = _weighted_mean(job) / gpus if job else None
        tok_source = "the trainer's non-padding tokens/s / devices" if job else None
    xt_tok = [
        (r["tokens_per_sec_per_device"], w) for r, w in window if "tokens_per_sec_per_device" in r
    ]
    if tok is None and xt_tok:
        tok = _weighted_mean(xt_tok)
        tok_source = "XTuner's tokens/s/device (padded text tokens, images not counted)"
        notes.append(
            "tokens/s per device is XTuner's (padded text tokens, image tokens not counted)"
        )
    img, txt = per_device("image_tokens"), per_device("text_tokens")

    times = [r["step_time"] for r, _ in (window or weighted) if r.get("step_time")]
    p50 = _percentile(times, 50) if times else None
    p95 = _percentile(times, 95) if times else None
    mems = [r["peak_mem_gb"] for r in recs if "peak_mem_gb" in r]
    xt_tf = [(r["tflops"], w) for r, w in window if "tflops" in r]
    data = [
        (r["data_time"] * w, r["step_time"] * w)
        for r, w in window
        if "data_time" in r and r.get("step_time")
    ]
    data_share = sum(d for d, _ in data) / sum(t for _, t in data) if data else None

    # model FLOPs
    tflops = basis = None
    if dims is not None and gpus:
        measured = [
            (r, w) for r, w in window if r.get("tokens") and r.get("samples") and r.get("step_time")
        ]
        if measured:
            flops = sum(
                w
                * r["samples"]
                * sample_flops(
                    dims,
                    llm_tokens=r["tokens"] / r["samples"],
                    image_tokens=r.get("image_tokens", 0.0) / r["samples"],
                    trainable=trainable,
                )
                for r, w in measured
            )
            tflops = flops / sum(r["step_time"] * w for r, w in measured) / gpus / 1e12
            basis = "measured tokens (LLM + ViT + projector)"
        elif xt_tok and seq_len:
            mode = "full" if trainable.llm else "activations"
            tflops = (
                _weighted_mean(xt_tok)
                * llm_flops_per_token(dims.llm, seq_len, trainable=mode)
                / 1e12
            )
            basis = "XTuner text tokens/s x LLM FLOPs/token (ViT not counted)"
        elif tgs is not None:
            per_token = sample_flops(dims, llm_tokens=seq_len, trainable=trainable) / seq_len
            tflops = tgs * per_token / 1e12
            basis = "TGS x LLM FLOPs/token at seq_len (log has no token counts; ViT not counted)"
    mfu = tflops / peak_tflops if tflops is not None and peak_tflops else None

    hours = None
    if summary and "train_runtime" in summary:
        hours = summary["train_runtime"] / 3600
    elif times:
        hours = sum(r["step_time"] * w for r, w in weighted if r.get("step_time")) / 3600

    sps, sps_window, tps = seed_sps(
        recs, gpus=gpus, global_batch_size=global_batch_size, warmup_steps=warmup_steps
    )
    return Metrics(
        steps=steps,
        final_loss=losses[-1] if losses else None,
        tgs=tgs,
        tgs_steps=rated if tgs_source and tgs_source.startswith("mean") else covered,
        tgs_source=tgs_source,
        tgs_reason=tgs_reason,
        tokens_per_sec_per_device=tok,
        tokens_per_sec_per_device_source=tok_source,
        image_tokens_per_sec_per_device=img,
        text_tokens_per_sec_per_device=txt,
        step_time_p50=p50,
        step_time_p95=p95,
        peak_mem_gb=max(mems) if mems else None,
        tflops_per_device=tflops,
        mfu=mfu,
        mfu_basis=basis,
        xtuner_tflops=_weighted_mean(xt_tf),
        data_time_share=data_share,
        train_hours=hours,
        notes=notes,
        sps=sps,
        sps_window=sps_window,
        tps_per_device=tps,
    )
