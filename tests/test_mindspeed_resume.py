"""engine=mindspeed resumes where it stopped: a node task that dies after iteration 4 (checkpoint
at 3) and runs again on the same run dir (what a requeue does) loads iteration 3 with its
optimizer and RNG state, logs 4..6, and metrics.jsonl has every iteration once.
Uses the stand-ins in tests/fakes (no Ascend stack here), on this machine."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from test_mindspeed_slurm import FAKES, make_inputs

from launcher.node.task import Rendezvous, free_port, run_node
from launcher.submit.pipeline import run


@pytest.mark.slow
def test_a_rerun_resumes_from_the_last_checkpoint(tmp_path: Path, monkeypatch):
    from launcher.config import compose

    hf, root, meta = make_inputs(tmp_path)
    run_dir = tmp_path / "run"
    cfg, problems = compose.compose([
        "model=internvl2_8b", "model.engine=mindspeed", f"model.path={hf}",
        f"model.mindspeed_root={root}", "hw=ascend910b", "hw.devices_per_node=2", "hw.gres=null",
        "hw.env.ASCEND_RT_VISIBLE_DEVICES='0,1'", "cluster=local", "cluster.setup=[]",
        "parallelism=megatron", "parallelism.pp=2", "per_device_batch_size=1",
        "gradient_accumulation_steps=2", "data=meta_file", f"data.meta_file={meta}",
        "check_data=false", "max_steps=6", "save_steps=3", "dry_run=true",
        f"run_dir={run_dir}", f"cache_dir={tmp_path / 'cache'}",
    ])  # fmt: skip
    assert not problems and run(cfg, problems) == 0  # plan written, nothing started
    monkeypatch.setenv("PATH", f"{FAKES}{os.pathsep}{os.environ['PATH']}")

    monkeypatch.setenv("FAKE_PRETRAIN_DIE_AFTER", "4")
    assert run_node(str(run_dir), Rendezvous(0, 1, "127.0.0.1", free_port())) == 1
    assert (run_dir / "output" / "latest_checkpointed_iteration.txt").read_text() == "3\n"
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "failed"

    monkeypatch.delenv("FAKE_PRETRAIN_DIE_AFTER")
    assert run_node(str(run_dir), Rendezvous(0, 1, "127.0.0.1", free_port())) == 0
    rec = json.loads((run_dir / "output" / "fake_pretrain" / "rank1.json").read_text())
    assert rec["start_iteration"] == 3  # loaded iter_0000003, not the converted release
    log = (run_dir / "logs" / "node0.log").read_text()
    assert "loading checkpoint at iteration 3" in log
    assert "prepare: " in log and "exists, skipped" in log  # no second conversion
    saved = json.loads(
        (run_dir / "output" / "iter_0000003" / "mp_rank_00_000" / "model_optim_rng.pt").read_text()
    )
    assert saved["optimizer"] and saved["rng"]
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"
