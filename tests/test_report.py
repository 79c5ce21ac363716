"""report(): a fixture sweep (3 run dirs) and bare logs, against saved copies in
tests/expected/report/. Regenerate deliberately: UPDATE_EXPECTED=1 pytest tests/test_report.py"""

import json
import os
import shutil
from pathlib import Path

import pytest

from launcher.report import columns
from launcher.report.make import report

FIX = Path(__file__).parent / "fixtures" / "logs"
EXPECTED = Path(__file__).parent / "expected" / "report"


def _compare(name: str, text: str):
    path = EXPECTED / name
    if os.environ.get("UPDATE_EXPECTED") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"no saved copy {path}; run with UPDATE_EXPECTED=1 to create it"
    assert text == path.read_text(), f"{name} differs from the saved copy"


@pytest.fixture
def sweep(tmp_path):
    dst = tmp_path / "sweep"
    shutil.copytree(FIX / "sweep", dst)
    return dst


def test_sweep_report_matches_saved_copy(sweep):
    md, rows = report([sweep])
    assert md == sweep / "report.md"
    _compare("sweep/report.md", md.read_text())
    _compare("sweep/metrics.csv", (sweep / "metrics.csv").read_text())
    for png in ("loss.png", "tgs.png", "mfu.png"):
        assert (sweep / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [r.name for r in rows] == ["0", "1", "2"]


def test_sweep_figures_by_hand(sweep):
    _, rows = report([sweep], plots=False)
    r0 = rows[0].metrics
    # run 0: GBS 64 on 8 devices, steps 6..20: odd steps 8.5 samples/s (7 of them), even 7.5
    # (8): mean = (7 x 8.5 + 8 x 7.5) / 15 = 7.9667; TGS = 7.9667 x 4096 / 8 = 4078.9
    assert r0.tgs == pytest.approx((7 * 8.5 + 8 * 7.5) / 15 * 4096 / 8, rel=1e-4)
    assert r0.step_time_p50 == pytest.approx(64 / 7.5, rel=1e-4)
    # loss 1.6 + 1.5 x 0.8^s: 1.8517 at step 8, 1.8013 at step 9 < 1.85 within 18 steps
    assert rows[0].verdict.passed is True and "step 9" in rows[0].verdict.reason
    assert rows[1].verdict.passed is False  # floor 1.9
    assert rows[2].metrics.tgs is None  # 8 steps, still running
    assert rows[2].verdict.passed is None


def test_summary_json_updated_atomically_keeping_keys(sweep):
    report([sweep], plots=False)
    s0 = json.loads((sweep / "0" / "summary.json").read_text())
    assert s0["job_id"] == "12340" and s0["status"] == "completed"  # kept
    for key in ("steps", "final_loss", "tgs", "tokens_per_sec_per_device", "mfu", "verdict"):
        assert key in s0
    assert s0["steps"] == 20 and s0["verdict"] == "PASS"
    # the two throughput figures say what each counts (seed formula vs real tokens)
    assert s0["tgs_definition"].startswith("seed 000 formula: samples/s x seq_len / devices")
    assert s0["tokens_per_sec_per_device_source"].startswith("real non-padding tokens")
    assert s0["tgs"] != s0["tokens_per_sec_per_device"]
    assert 0 < s0["mfu"] < 1
    assert not (sweep / "2" / "summary.json").exists()  # not ended: nothing invented
    assert not list(sweep.glob("*/.summary.json.*"))  # no temp files left behind


def test_bare_logs_with_flags(tmp_path):
    hf = tmp_path / "hf"
    hf.mkdir()
    shutil.copy(FIX / "hf_seed000_excerpt.log", hf / "train.log")
    xt = tmp_path / "xt"
    shutil.copytree(FIX / "xtuner_seed001", xt)
    md, rows = report([hf, xt], gpus=32, seq_len=2048, global_batch_size=1024, peak_tflops=312)
    assert md == tmp_path / "report.md"
    assert [r.kind for r in rows] == ["hf_trainer", "xtuner_vis"]
    assert rows[0].metrics.tgs is None and "only 1 step(s)" in rows[0].metrics.tgs_reason
    assert rows[1].metrics.tgs == pytest.approx(
        (1024 / 14.25826325416565 + 1024 / 14.272274851799011 + 1024 / 14.245970010757446)
        / 3
        * 2048
        / 32
    )
    text = md.read_text()
    assert "XTuner's own tflops 19.6" in text and "no MFU: a bare log" in text


def test_missing_paths_all_named(tmp_path):
    with pytest.raises(ValueError) as e:
        report([tmp_path / "nope1", tmp_path / "nope2"])
    assert "nope1" in str(e.value) and "nope2" in str(e.value)


def test_comparison_shows_only_settings_that_differ(sweep):
    """`report RUN_A RUN_B`: the table and legends name only what differs between the runs."""
    md, rows = report([sweep / "0", sweep / "2"], plots=False)
    assert md == sweep / "report.md"  # the common parent of the runs compared
    assert [r.config_label for r in rows] == ["0: pdb=2 ga=4 z=2", "2: pdb=1 ga=8 z=3"]
    text = md.read_text()
    assert (
        "| run | per_device_batch_size | gradient_accumulation_steps | parallelism.zero_stage |"
        in text
    )
    assert "| 2 | 1 | 8 | 3 |" in text
    _, rows = report([sweep / "0", sweep / "1"], plots=False)  # same ZeRO stage: not named
    assert [r.config_label for r in rows] == ["0: pdb=2 ga=4", "1: pdb=4 ga=2"]


def test_columns_have_one_key_and_one_place_each():
    keys = [c.key for c in columns.COLUMNS]
    places = [c.at for c in columns.COLUMNS if c.header]
    assert len(set(keys)) == len(keys) and len(set(places)) == len(places)


def test_a_metric_is_one_column(sweep, monkeypatch):
    """One Column declaration puts a figure in report.md's table, metrics.csv and summary.json."""
    lr = columns.Column(
        key="peak_lr", value=lambda r: 2e-5, header="peak lr", at=75, fmt=".0e", summary=True
    )
    monkeypatch.setattr(columns, "COLUMNS", (*columns.COLUMNS, lr))
    md, _ = report([sweep], plots=False)
    head, first = md.read_text().splitlines()[2], md.read_text().splitlines()[4]
    assert "| steps | peak lr | final loss |" in head and "| 2e-05 |" in first
    csv_lines = (sweep / "metrics.csv").read_text().splitlines()
    assert csv_lines[0].endswith(",verdict,peak_lr") and csv_lines[1].endswith(",2e-05")
    assert json.loads((sweep / "0" / "summary.json").read_text())["peak_lr"] == 2e-5


def test_an_old_run_config_still_reports(sweep):
    """report types config.yaml through launcher.config.spec: settings an old run's config lacks
    take the spec's defaults, and settings since removed are passed over."""
    _, rows = report([sweep], plots=False)
    mfu = rows[0].metrics.mfu
    cfg = sweep / "0" / "config.yaml"
    text = cfg.read_text()
    for line in ("  force_image_size: 448\n", "  patch_size: 14\n", "  downsample_ratio: 0.5\n"):
        assert line in text
        text = text.replace(line, "")
    cfg.write_text(text.replace("model:\n", "model:\n  a_removed_setting: 1\n", 1))
    _, rows = report([sweep], plots=False)
    assert rows[0].metrics.mfu == pytest.approx(mfu) and 0 < mfu < 1


def test_report_keeps_the_nodes_outcome_keys(sweep):
    """report adds figures beside the node's summary.json keys and never rewrites them."""
    path = sweep / "0" / "summary.json"
    node = {**json.loads(path.read_text()), "steps": 19, "final_loss": 1.5}
    path.write_text(json.dumps(node))
    report([sweep], plots=False)
    s0 = json.loads(path.read_text())
    assert (s0["steps"], s0["final_loss"]) == (19, 1.5)  # the node's, not report's 20 / 1.6x
    assert s0["verdict"] == "PASS" and "tgs" in s0
