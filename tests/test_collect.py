"""Log parsers and metrics on fixtures (seed 000 / 001 excerpts) with hand-computed values."""

import json
from pathlib import Path

import pytest
from test_flops import LLMS

from launcher.flops import ModelDims, Trainable, llm_flops_per_token, sample_flops
from launcher.report.collect import LogError, detect, final_loss, load
from launcher.report.collect.metrics import compute
from launcher.report.verdict import verdict

FIX = Path(__file__).parent / "fixtures" / "logs"
HF = FIX / "hf_seed000_excerpt.log"
XT = FIX / "xtuner_seed001"


def test_detect_each_kind(tmp_path):
    assert detect(HF) == "hf_trainer"
    assert detect(XT) == "xtuner_vis"  # the folder: vis_data/<timestamp>.json, not scalars.json
    assert load(XT).path.name == "20240101_120000.json"
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n')
    assert detect(tmp_path) == "metrics_jsonl"
    (tmp_path / "x.txt").write_text("hello\n")
    with pytest.raises(LogError, match="not a metrics.jsonl"):
        detect(tmp_path / "x.txt")


def test_hf_seed000_excerpt():
    log = load(HF)
    assert [r["step"] for r in log.records] == [1, 2, 3, 4, 5, 6]
    five = log.records[4]
    assert five == {"step": 5, "step_time": 328.42, "loss": 4.5385, "lr": 1e-05, "epoch": 0.82}
    assert (
        log.records[0]["grad_norm"] == 12.5
        and log.records[3]["grad_norm"] != log.records[3]["grad_norm"]
    )  # nan
    assert log.records[5]["step_time"] == 338.22  # tqdm's closing refresh is the last word
    assert log.summary["train_samples_per_second"] == 6.055


def test_seed000_tgs_from_summary_formula():
    """The seed's own line: 6.055 samples/s x 8192 / 32 GPUs = 1550.08 tokens/s/GPU."""
    log = load(HF)
    m = compute(
        log.records, summary=log.summary, gpus=32, seq_len=8192, warmup_steps=0, min_steps=6
    )
    assert m.tgs == pytest.approx(6.055 * 8192 / 32) == pytest.approx(1550.08)
    assert "train_samples_per_second" in m.tgs_source
    assert m.final_loss == 4.2 and m.steps == 6
    assert m.train_hours == pytest.approx(2029.3181 / 3600)


def test_seed000_excerpt_too_short_for_tgs():
    log = load(HF)
    m = compute(log.records, summary=log.summary, gpus=32, seq_len=8192, global_batch_size=2048)
    assert m.tgs is None
    assert "only 1 step(s)" in m.tgs_reason and "at least 15" in m.tgs_reason


def _hf_log(tmp_path, times):
    lines, total = [], len(times)
    for n, t in enumerate(times, 1):
        lines.append(
            f"\r{100 * n // total:3d}%|##| {n}/{total} [00:{n:02d}<00:00, {t:.2f}s/it]"
            f"{{'loss': {3.0 - n * 0.05:.4f}, 'learning_rate': 0.0002, 'epoch': {n / total:.2f}}}"
        )
    lines.append("\r  0%|  | 1/4 [00:01<00:03,  5.00it/s]")  # an eval bar: other total, ignored
    path = tmp_path / "train.log"
    path.write_text("".join(lines) + "\n")
    return path


def test_tgs_over_window_by_hand(tmp_path):
    """Steps 1-5 at 20 s (warm-up), then 10 s and 12 s alternating for steps 6..30.
    GBS 64 -> 6.4 and 5.3333 samples/s; 13 steps at 10 s, 12 at 12 s:
    mean = (13 x 6.4 + 12 x 5.3333) / 25 = 5.888; TGS = 5.888 x 4096 / 8 = 3014.656."""
    times = [20.0] * 5 + [10.0 if n % 2 == 0 else 12.0 for n in range(6, 31)]
    log = load(_hf_log(tmp_path, times))
    m = compute(log.records, gpus=8, seq_len=4096, global_batch_size=64)
    assert m.tgs == pytest.approx(3014.656)
    assert m.tgs_steps == 25
    assert m.step_time_p50 == 10.0 and m.step_time_p95 == 12.0
    assert m.final_loss == pytest.approx(1.5)
    # without the global batch the log cannot give samples/s
    m2 = compute(log.records, gpus=8, seq_len=4096)
    assert m2.tgs is None and "global batch" in m2.tgs_reason
    # 19 steps: 14 after warm-up -> refused
    m3 = compute(
        load(_hf_log(tmp_path, times[:19])).records, gpus=8, seq_len=4096, global_batch_size=64
    )
    assert m3.tgs is None and "only 14 step(s)" in m3.tgs_reason


def test_xtuner_seed001_by_hand():
    log = load(XT)
    assert [r["step"] for r in log.records] == [360, 370, 380]
    assert log.records[0]["peak_mem_gb"] == pytest.approx(49335 / 1024)
    m = compute(log.records, gpus=32, seq_len=2048, global_batch_size=1024)
    # tokens/s per device: XTuner's own, mean of the three (each stands for 10 iters)
    assert m.tokens_per_sec_per_device == pytest.approx(
        (107.5815 + 120.2980 + 103.3748) / 3, abs=1e-3
    )
    assert m.xtuner_tflops == pytest.approx((19.1048 + 21.3664 + 18.3568) / 3, abs=1e-3)
    assert m.peak_mem_gb == pytest.approx(48.178, abs=1e-3)
    assert m.data_time_share == pytest.approx(1.46496 / 42.77651, abs=1e-5)
    assert m.step_time_p50 == pytest.approx(14.25826325416565)
    # 30 iterations covered; samples/s = 1024 / time; TGS = mean x 2048 / 32
    want = (1024 / 14.25826325416565 + 1024 / 14.272274851799011 + 1024 / 14.245970010757446) / 3
    assert m.tgs == pytest.approx(want * 2048 / 32)
    assert m.tgs_steps == 30
    assert m.final_loss == pytest.approx(2.797193455696106)


def test_xtuner_mfu_uses_llm_tokens_only():
    log = load(XT)
    dims = ModelDims(llm=LLMS["internlm2-20b"])
    tr = Trainable(llm=False, vit=False, projector=True)
    m = compute(log.records, gpus=32, seq_len=2048, dims=dims, trainable=tr, peak_tflops=312)
    per_token = llm_flops_per_token(dims.llm, 2048, trainable="activations")
    assert m.tflops_per_device == pytest.approx(m.tokens_per_sec_per_device * per_token / 1e12)
    assert m.mfu == pytest.approx(m.tflops_per_device / 312)
    assert "ViT not counted" in m.mfu_basis


def _ours(tmp_path, n=20):
    rows = []
    for s in range(1, n + 1):
        rows.append({"step": s, "loss": 2.0 - s / 100, "lr": 1e-4, "samples_per_sec": 8.0 if s > 5 else 2.0,
                     "tokens_per_sec": 5000.0, "step_time": 2.0 if s > 5 else 8.0, "data_time": 0.5,
                     "samples": 16, "tokens": 10000, "image_tokens": 6000, "text_tokens": 4000,
                     "peak_mem_gb": 10.0 + s / 10})  # fmt: skip
    p = tmp_path / "metrics.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def test_our_metrics_jsonl_by_hand(tmp_path):
    log = load(_ours(tmp_path))
    dims = ModelDims(llm=LLMS["qwen2-0.5b"])
    m = compute(log.records, gpus=4, seq_len=1024, dims=dims, peak_tflops=100.0)
    assert m.tgs == pytest.approx(8.0 * 1024 / 4) and m.tgs_steps == 15
    # 10000 real tokens per 2 s step over 4 devices
    assert m.tokens_per_sec_per_device == pytest.approx(1250.0)
    assert m.image_tokens_per_sec_per_device == pytest.approx(750.0)
    assert m.text_tokens_per_sec_per_device == pytest.approx(500.0)
    assert m.data_time_share == pytest.approx(0.25)
    assert m.peak_mem_gb == pytest.approx(12.0)
    # model FLOPs from measured tokens: 16 samples of 625 tokens per 2 s, 4 devices
    f = 16 * sample_flops(dims, llm_tokens=625, image_tokens=375)
    assert m.tflops_per_device == pytest.approx(f / 2.0 / 4 / 1e12)
    assert m.mfu == pytest.approx(m.tflops_per_device / 100.0)
    assert m.mfu_basis.startswith("measured tokens")


def test_final_loss_is_the_last_logged_loss_by_step():
    records = [{"step": 3, "loss": 1.5}, {"step": 1, "loss": 3.0}, {"step": 4}, {"step": 2}]
    assert final_loss(records) == 1.5  # step 4 logged no loss; order in the list does not count
    assert final_loss([{"step": 1}]) is None and final_loss([]) is None
    assert compute(records, gpus=1, seq_len=8).final_loss == final_loss(records)


def test_bad_lines_all_reported_cut_last_line_tolerated(tmp_path):
    p = tmp_path / "metrics.jsonl"
    p.write_text('{"step": 1, "loss": 2}\nnot json\n{"step": "x"}\n{"step": 3, "loss": "hi"}\n')
    with pytest.raises(LogError) as e:
        load(p)
    msg = str(e.value)
    assert "3 problem(s)" in msg and "line 2" in msg and "line 3" in msg and "line 4" in msg
    p.write_text('{"step": 1, "loss": 2}\n{"step": 2, "lo')
    log = load(p)
    assert len(log.records) == 1 and "line 2" in log.warnings[0]


def test_verdict_seed000_and_seed001():
    target = {"metric": "tgs", "min_steps": 251, "or_hours": 72, "baseline_loss": {"a800": 1.3}}
    long_run = [{"step": s, "loss": 1.5 - s / 1000} for s in range(1, 261)]
    assert verdict(target, long_run, hw="a800").passed is True
    assert verdict({**target, "baseline_loss": {"a800": 1.2}}, long_run, hw="a800").passed is False
    short = long_run[:100]
    assert verdict(target, short, hw="a800").passed is None
    assert verdict(
        {**target, "baseline_loss": {"a800": 1.45}}, short, hw="a800", train_hours=73
    ).passed
    v = verdict(target, long_run, hw="h800")
    assert v.passed is None and "baseline_loss.h800" in v.reason

    t1 = {"metric": "loss", "loss_below": 2.3, "within_steps": 500}
    xt = load(XT).records
    assert verdict(t1, xt).passed is None  # 380 iters, never below 2.3 yet
    later = xt + [{"step": 490, "loss": 2.29}]
    v1 = verdict(t1, later)
    assert v1.passed is True and "step 490" in v1.reason
    assert verdict(t1, xt + [{"step": 500, "loss": 2.4}]).passed is False
    assert verdict(t1, xt + [{"step": 510, "loss": 2.0}]).passed is False
