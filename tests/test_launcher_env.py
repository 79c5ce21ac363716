"""Issue 9 item 5: the login node needs no torch. `.venv-launcher` is built from
requirements-launcher.txt alone (`bash setup.sh --launcher`; tests/run.sh builds it and also
runs the tests marked `launcher` inside it). Here, from that interpreter: a dry run of every
engine, and a real run whose nodes use the training env named by `cluster.python`."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LAUNCHER_PY = Path(os.environ.get("VLM_LAUNCHER_PY", REPO / ".venv-launcher" / "bin" / "python"))
TRAIN_PY = REPO / ".venv" / "bin" / "python"

if not LAUNCHER_PY.exists():
    if os.environ.get("CI") == "true":
        raise RuntimeError(f"{LAUNCHER_PY} missing: CI builds it with `bash setup.sh --launcher`")
    pytest.skip(f"no launcher-only env at {LAUNCHER_PY} (bash setup.sh --launcher)",
                allow_module_level=True)  # fmt: skip

ENGINES = {
    "internvl_chat": ["model=internvl_20b", "hw=a800", "nodes=4"],
    "internvl_official": ["model=internvl_20b", "hw=a800", "nodes=4",
                          "model.engine=internvl_official", "model.internvl_root=/src/InternVL"],
    "xtuner": ["model=llava_internlm2_20b", "data=llava_pretrain", "hw=a800", "nodes=4"],
    "mindspeed": ["model=internvl2_8b", "hw=ascend910b", "parallelism=megatron",
                  "data=ai2d_train_12k", "model.engine=mindspeed",
                  "model.mindspeed_root=/src/MindSpeed-MM"],
}  # fmt: skip


def launch(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run([str(LAUNCHER_PY), "launch.py", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


def test_the_launcher_env_really_has_no_torch():
    for mod in ("torch", "transformers", "deepspeed", "peft"):  # (numpy, PIL: matplotlib's)
        r = subprocess.run([str(LAUNCHER_PY), "-c", f"import {mod}"], capture_output=True)
        assert r.returncode != 0, f"{mod} is importable in {LAUNCHER_PY}"


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_a_dry_run_of_every_engine_from_the_launcher_env(engine: str, tmp_path: Path):
    run = tmp_path / "run"
    r = launch(*ENGINES[engine], "dry_run=true", "check_data=false", f"run_dir={run}")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    plan = json.loads((run / "plan.json").read_text())
    assert plan["engine"] == engine and (run / "sbatch.sh").is_file()
    # the nodes' interpreter is this one, which has no torch: the plan says so (XTuner's nodes
    # run the `xtuner` of their own env)
    assert engine == "xtuner" or "has no torch" in r.stdout, r.stdout


@pytest.mark.slow
def test_a_real_run_from_the_launcher_env_trains_on_the_training_env(tmp_path: Path):
    """Login side torch-free; the data pre-flight and training run in cluster.python's env."""
    run = tmp_path / "run"
    r = launch("max_steps=3", f"run_dir={run}", f"cache_dir={tmp_path}/cache",
               f"cluster.python={TRAIN_PY}")  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "has no torch" not in r.stdout
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 3
