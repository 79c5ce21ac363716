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
from launcher.report.collect.records import final_loss

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


Weighted = list[tuple[dict[str, Any], int]]
"""(record, how many steps it stands for), in step order."""


def weigh(records: Sequence[dict[str, Any]]) -> Weighted:
    """Each record with the steps since the previous one; the first stands for one interval
    (an excerpt starting at iter 360 of a log written every 10 iters weighs 10, not 360)."""
    recs = sorted(records, key=lambda r: r["step"])
    if not recs:
        return []
    first_gap = recs[1]["step"] - recs[0]["step"] if len(recs) > 1 else recs[0]["step"]
    out, prev = [], recs[0]["step"] - first_gap
    for r in recs:
        out.append((r, max(r["step"] - prev, 1)))
        prev = r["step"]
    return out


def _rate(r: dict[str, Any], global_batch_size: int | None) -> float | None:
    """Samples/s of one step: the log's own figure, else samples (or the batch) / step time."""
    if "samples_per_sec" in r:
        return r["samples_per_sec"]
    if r.get("step_time"):
        if "samples" in r:
            return r["samples"] / r["step_time"]
        if global_batch_size:
            return global_batch_size / r["step_time"]
    return None


@dataclass(frozen=True, slots=True)
class _Tgs:
    tgs: float | None = None
    source: str | None = None
    reason: str | None = None
    steps: int = 0


def tgs(
    weighted: Weighted,
    *,
    gpus: int | None,
    seq_len: int | None,
    global_batch_size: int | None,
    summary: dict[str, Any] | None,
    steps: int,
    warmup_steps: int,
    min_steps: int,
) -> _Tgs:
    """TGS over the steps after warm-up, or why there is none (module docstring)."""
    window = [(r, w) for r, w in weighted if r["step"] > warmup_steps]
    covered = sum(w for _, w in window)
    rates = [(x, w) for r, w in window if (x := _rate(r, global_batch_size)) is not None]
    rated = sum(w for _, w in rates)
    if not gpus or not seq_len:
        return _Tgs(reason="needs the number of devices and seq_len", steps=covered)
    if rated >= min_steps:
        source = f"mean samples/s over steps {warmup_steps + 1}..{steps}"
        return _Tgs(_weighted_mean(rates) * seq_len / gpus, source, steps=rated)
    if not rates and summary and "train_samples_per_second" in summary and covered >= min_steps:
        source = "train_samples_per_second of the final summary (includes startup and saving)"
        return _Tgs(summary["train_samples_per_second"] * seq_len / gpus, source, steps=covered)
    if not rates and not global_batch_size and any(r.get("step_time") for r, _ in weighted):
        return _Tgs(
            reason="the log has step times but no samples; give the global batch size",
            steps=covered,
        )
    reason = (
        f"only {rated} step(s) with a throughput figure after the {warmup_steps} warm-up "
        f"step(s); TGS needs at least {min_steps}"
    )
    return _Tgs(reason=reason, steps=covered)


def _per_device(window: Weighted, key: str, gpus: int | None) -> float | None:
    """Sum of `key` over the window / its step time / devices."""
    rows = [(r, w) for r, w in window if key in r and r.get("step_time")]
    time = sum(r["step_time"] * w for r, w in rows)
    if not rows or not gpus or not time:
        return None
    return sum(r[key] * w for r, w in rows) / time / gpus


def _xtuner_tokens(window: Weighted) -> float | None:
    """XTuner's own tokens/s/device (padded text tokens) over the window."""
    return _weighted_mean(
        [(r["tokens_per_sec_per_device"], w) for r, w in window if "tokens_per_sec_per_device" in r]
    )


def tokens_per_device(window: Weighted, gpus: int | None) -> tuple[float | None, str | None]:
    """(real tokens/s per device, what it counts): measured tokens, else the trainer's job-wide
    tokens/s, else XTuner's per-device figure."""
    tok = _per_device(window, "tokens", gpus)
    if tok is not None:
        return tok, REAL_TOKENS
    job = [(r["tokens_per_sec"], w) for r, w in window if "tokens_per_sec" in r]
    if gpus and job:
        return _weighted_mean(job) / gpus, "the trainer's non-padding tokens/s / devices"
    xt = _xtuner_tokens(window)
    if xt is not None:
        return xt, "XTuner's tokens/s/device (padded text tokens, images not counted)"
    return None, None


def model_tflops(
    window: Weighted,
    *,
    dims: ModelDims | None,
    trainable: Trainable,
    gpus: int | None,
    seq_len: int | None,
    tgs: float | None,
) -> tuple[float | None, str | None]:
    """(model TFLOPs per device, what they were counted from); see launcher.flops."""
    if dims is None or not gpus:
        return None, None
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
        time = sum(r["step_time"] * w for r, w in measured)
        return flops / time / gpus / 1e12, "measured tokens (LLM + ViT + projector)"
    xt_tok = _xtuner_tokens(window)
    if xt_tok is not None and seq_len:
        mode = "full" if trainable.llm else "activations"
        per_token = llm_flops_per_token(dims.llm, seq_len, trainable=mode)
        return xt_tok * per_token / 1e12, "XTuner text tokens/s x LLM FLOPs/token (ViT not counted)"
    if tgs is not None:
        per_token = sample_flops(dims, llm_tokens=seq_len, trainable=trainable) / seq_len
        basis = "TGS x LLM FLOPs/token at seq_len (log has no token counts; ViT not counted)"
        return tgs * per_token / 1e12, basis
    return None, None


def step_times(window: Weighted, weighted: Weighted) -> list[float]:
    """Step times over the window (every step when the run is all warm-up)."""
    return [r["step_time"] for r, _ in (window or weighted) if r.get("step_time")]


def data_time_share(window: Weighted) -> float | None:
    """Sum of data-loading time / sum of step time over the window."""
    data = [
        (r["data_time"] * w, r["step_time"] * w)
        for r, w in window
        if "data_time" in r and r.get("step_time")
    ]
    return sum(d for d, _ in data) / sum(t for _, t in data) if data else None


def train_hours(
    weighted: Weighted, times: list[float], summary: dict[str, Any] | None
) -> float | None:
    """HF's train_runtime when the log ends with it, else the sum of the step times."""
    if summary and "train_runtime" in summary:
        return summary["train_runtime"] / 3600
    if times:
        return sum(r["step_time"] * w for r, w in weighted if r.get("step_time")) / 3600
    return None


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
    weighted = weigh(records)
    window = [(r, w) for r, w in weighted if r["step"] > warmup_steps]
    steps = weighted[-1][0]["step"] if weighted else 0
    rate = tgs(
        weighted,
        gpus=gpus,
        seq_len=seq_len,
        global_batch_size=global_batch_size,
        summary=summary,
        steps=steps,
        warmup_steps=warmup_steps,
        min_steps=min_steps,
    )
    tok, tok_source = tokens_per_device(window, gpus)
    notes = []
    if tok_source and tok_source.startswith("XTuner"):
        notes.append(
            "tokens/s per device is XTuner's (padded text tokens, image tokens not counted)"
        )
    tflops, basis = model_tflops(
        window, dims=dims, trainable=trainable, gpus=gpus, seq_len=seq_len, tgs=rate.tgs
    )
    times = step_times(window, weighted)
    mems = [r["peak_mem_gb"] for r, _ in weighted if "peak_mem_gb" in r]
    sps, sps_window, tps = seed_sps(
        [r for r, _ in weighted],
        gpus=gpus,
        global_batch_size=global_batch_size,
        warmup_steps=warmup_steps,
    )
    return Metrics(
        steps=steps,
        final_loss=final_loss(records),
        tgs=rate.tgs,
        tgs_steps=rate.steps,
        tgs_source=rate.source,
        tgs_reason=rate.reason,
        tokens_per_sec_per_device=tok,
        tokens_per_sec_per_device_source=tok_source,
        image_tokens_per_sec_per_device=_per_device(window, "image_tokens", gpus),
        text_tokens_per_sec_per_device=_per_device(window, "text_tokens", gpus),
        step_time_p50=_percentile(times, 50) if times else None,
        step_time_p95=_percentile(times, 95) if times else None,
        peak_mem_gb=max(mems) if mems else None,
        tflops_per_device=tflops,
        mfu=tflops / peak_tflops if tflops is not None and peak_tflops else None,
        mfu_basis=basis,
        xtuner_tflops=_weighted_mean([(r["tflops"], w) for r, w in window if "tflops" in r]),
        data_time_share=data_time_share(window),
        train_hours=train_hours(weighted, times, summary),
        notes=notes,
        sps=sps,
        sps_window=sps_window,
        tps_per_device=tps,
    )
