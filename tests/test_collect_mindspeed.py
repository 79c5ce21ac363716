"""MindSpeed-MM (Megatron) per-iteration log lines -> records -> SPS/TPS, as seed 004 defines
them, and `report` putting an Ascend log beside an NVIDIA metrics.jsonl."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from launcher.report.collect import LogError, detect, load
from launcher.report.collect.metrics import compute
from launcher.report.collect.mindspeed import parse_text
from launcher.report.make import report

FIXTURE = Path(__file__).parent / "fixtures" / "logs" / "mindspeed_8b"
LOG = FIXTURE / "train_20250106_100000.log"


def test_fixture_lines_become_records():
    log = load(LOG)
    assert log.kind == "mindspeed" and detect(FIXTURE) == "mindspeed"
    recs = log.records
    assert [r["step"] for r in recs] == list(range(1, 161))
    first = recs[0]
    assert first["step_time"] == pytest.approx(49.9533)
    assert first["samples"] == 128 and first["tokens"] == pytest.approx(1800.0 * 128)
    assert first["loss"] == pytest.approx(1.906) and first["lr"] == pytest.approx(2.666667e-07)
    assert first["grad_norm"] == pytest.approx(2.001)
    assert first["peak_mem_gb"] == pytest.approx(40123.4 / 1024)
    assert first["samples_per_sec"] == pytest.approx(128 / 49.9533)


def test_seed_sps_and_tps_match_the_scripts_arithmetic():
    """STEP_TIME = mean elapsed ms of lines 51-150; SPS = GBS*1000/STEP_TIME; TPS = SPS x mean
    tokens per sample (the scripts' cluster figure); the README's TPS is that per card."""
    lines = [ln for ln in LOG.read_text().splitlines() if "elapsed time per iteration" in ln]
    window = lines[50:150]
    ms = [float(ln.split(":")[4].split("|")[0]) for ln in window]  # awk -F ':' '{print$5}'
    tokens = [float(ln.split("tokens per sample:")[1].split("|")[0]) for ln in window]
    step_time = sum(ms) / len(ms)
    sps = 128 * 1000 / step_time
    m = compute(load(LOG).records, gpus=8, seq_len=4096, global_batch_size=128)
    assert m.sps_window == "iterations 51-150"
    assert m.sps == pytest.approx(sps)
    assert m.tps_per_device == pytest.approx(sps * (sum(tokens) / len(tokens)) / 8)
    # the published InternVL2-8B figures (MindSpeed-MM README, 1 x 8): 12.86 SPS, 2914.39 TPS
    assert m.sps == pytest.approx(12.86, abs=0.01)
    assert m.tps_per_device == pytest.approx(2914.39, abs=1.0)


def test_torchrun_prefix_resume_and_a_tokens_line_of_its_own():
    text = "\n".join(
        [
            "[default7]: [2025-01-06 10:00:10] iteration        1/       3 | consumed samples:"
            "            8 | elapsed time per iteration (ms): 2000.0 | learning rate: 1.000000E-05 |"
            " global batch size:     8 | lm loss: 2.500000E+00 | loss scale: 1.0 |"
            " number of skipped iterations:   0 | number of nan iterations:   0 |",
            "[default7]: tokens per sample: 1000.0",
            "[default7]: [2025-01-06 10:00:12] iteration        2/       3 | consumed samples:"
            "           16 | elapsed time per iteration (ms): 1000.0 | learning rate: 2.000000E-05 |"
            " global batch size:     8 | lm loss: 2.400000E+00 | loss scale: 1.0 |",
            # requeued: iteration 2 again, the later line wins
            "[default7]: [2025-01-06 11:00:12] iteration        2/       3 | consumed samples:"
            "           16 | elapsed time per iteration (ms): 1500.0 | learning rate: 2.000000E-05 |"
            " global batch size:     8 | lm loss: 2.300000E+00 | loss scale: 1.0 |",
        ]
    )
    recs = parse_text(text).records
    assert [r["step"] for r in recs] == [1, 2]
    assert recs[0]["loss"] == 2.5 and recs[0]["tokens"] == 8000.0
    assert recs[1]["loss"] == 2.3 and recs[1]["step_time"] == 1.5


def test_unreadable_values_are_named_by_line():
    bad = (
        " [2025-01-06 10:00:10] iteration        1/       3 | elapsed time per iteration (ms):"
        " fast | global batch size:     8 | loss: 2.5 |"
    )
    with pytest.raises(LogError, match="line 2: unreadable elapsed time per iteration"):
        parse_text("noise\n" + bad)


def test_report_puts_an_ascend_run_beside_an_nvidia_run(tmp_path: Path):
    ascend = tmp_path / "ascend"
    ascend.mkdir()
    (ascend / LOG.name).write_text(LOG.read_text())
    nvidia = tmp_path / "nvidia"
    nvidia.mkdir()
    rows = [
        {"step": s, "loss": 2.0 - s / 1000, "samples": 128, "step_time": 11.636,
         "samples_per_sec": 128 / 11.636, "tokens": 128 * 1813.0}
        for s in range(1, 161)
    ]  # fmt: skip
    (nvidia / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    md, got = report([ascend, nvidia], gpus=8, seq_len=4096, global_batch_size=128, plots=False)
    by_name = {r.name: r.metrics for r in got}
    assert by_name["ascend"].sps == pytest.approx(12.86, abs=0.01)
    assert by_name["nvidia"].sps == pytest.approx(128 / 11.636)
    assert by_name["nvidia"].sps_window == by_name["ascend"].sps_window == "iterations 51-150"
    text = md.read_text()
    assert "| SPS | TPS/device |" in text
    assert "12.86" in text and f"{128 / 11.636:.2f}" in text
    csv = (md.parent / "metrics.csv").read_text().splitlines()
    assert "sps" in csv[0].split(",") and "tps_per_device" in csv[0].split(",")
