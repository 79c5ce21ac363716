"""Benchmark overlays lock the seeds' rules; the knobs they leave free stay free."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from launcher.config import compose as composing
from launcher.config.spec import ConfigError
from launcher.submit.pipeline import plan_from_config

CONF = Path(__file__).resolve().parent.parent / "conf" / "benchmark"

# a value that differs from the locked one, per setting
CHANGED = {
    "model.name": "model=internvl2_8b",
    "data.name": "data=synthetic",
    "seq_len": "seq_len=4096",
    "lr": "lr=1e-4",
    "parallelism.zero_stage": "parallelism=zero3",
}
BASE = {
    "internvl_20b_tgs": ["hw=a800", "nodes=4"],
    "llava_20b_pretrain": ["hw=a100", "nodes=4"],
}
FREE = {
    "internvl_20b_tgs": [
        ["parallelism=zero3"],
        ["parallelism=zero1"],
        ["per_device_batch_size=1", "gradient_accumulation_steps=16"],
        ["per_device_batch_size=4", "gradient_accumulation_steps=8"],
        ["nodes=2"],
        ["hw=h800"],
        ["max_steps=300"],
    ],
    "llava_20b_pretrain": [
        ["per_device_batch_size=16"],
        ["gradient_accumulation_steps=2"],
        ["nodes=1"],
        ["hw=h100"],
    ],
}


def plan(tmp_path: Path, *overrides: str):
    cfg, problems = composing.compose([*overrides, "dry_run=true", f"run_dir={tmp_path}/run"])
    return plan_from_config(cfg, problems)


def locked(name: str) -> dict:
    return yaml.safe_load((CONF / f"{name}.yaml").read_text())["benchmark"]["locked"]


def changed(bench: str, key: str) -> str:
    """An override that moves `key` off its locked value (booleans flip)."""
    value = locked(bench)[key]
    if isinstance(value, bool):
        return f"{key}={str(not value).lower()}"
    return CHANGED[key]


@pytest.mark.parametrize(("bench", "key"), [(b, k) for b in sorted(BASE) for k in locked(b)])
def test_each_locked_value_is_refused_naming_the_seed(tmp_path: Path, bench: str, key: str):
    with pytest.raises(ConfigError) as e:
        plan(tmp_path, f"benchmark={bench}", *BASE[bench], changed(bench, key))
    mine = [p for p in e.value.problems if p.setting == key]
    assert mine, e.value
    assert f"benchmark {bench} (seed " in mine[0].message and "locked" in mine[0].message
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("bench", "knobs"), [(b, k) for b in sorted(FREE) for k in FREE[b]])
def test_allowed_knobs_stay_free(tmp_path: Path, bench: str, knobs: list[str]):
    p, spec = plan(tmp_path, f"benchmark={bench}", *BASE[bench], *knobs)
    assert spec.benchmark.name == bench


def test_seed_000_global_batch_cap(tmp_path: Path):
    with pytest.raises(ConfigError) as e:
        plan(
            tmp_path,
            "benchmark=internvl_20b_tgs",
            "hw=a800",
            "nodes=4",
            "per_device_batch_size=4",
            "gradient_accumulation_steps=32",
        )
    assert [p.setting for p in e.value.problems] == ["global_batch_size"]
    assert "2048" in str(e.value)


def test_benchmark_none_locks_nothing(tmp_path: Path):
    p, spec = plan(
        tmp_path,
        "model=internvl_20b",
        "hw=a800",
        "nodes=4",
        "seq_len=4096",
        "lr=1e-5",
        "model.freeze_llm=false",
    )
    assert spec.benchmark.locked == {} and spec.seq_len == 4096
