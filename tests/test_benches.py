"""The benches run and print their figures (`--quick`); no timing assertions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run(*args: str, timeout: int = 900) -> list[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=timeout)  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout.strip().splitlines()


def test_bench_data_quick():
    lines = _run("bench/bench_data.py", "--quick")
    last = json.loads(lines[-1])
    for size in ("1000x750", "1920x1080"):
        assert last[size]["ours"]["tiles"] == {"1000x750": 13, "1920x1080": 9}[size]
        assert last[size]["ours"]["samples_per_s"] > 0
    assert "official" in last["1000x750"] or "official InternVL transform: skipped" in lines[-2]


def test_bench_vs_hf_cuda_skips_without_a_gpu():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the cuda variant runs for real")
    lines = _run("bench/bench_vs_hf.py", "--device", "cuda", "--dtype", "bf16")
    assert "skipped" in lines[0] and json.loads(lines[-1]) == {"skipped": "no CUDA device"}


@pytest.mark.slow
def test_bench_vs_hf_quick():
    lines = _run("bench/bench_vs_hf.py", "--quick", "--workers", "0")
    last = json.loads(lines[-1])
    assert len(last["pairs"]) == 1 and last["ratio_real_tokens_per_s"] > 0 and last["load"]
    table = "\n".join(lines)
    for row in ("HF baseline", "ours packed"):
        assert row in table
    assert "of peak" in table


def test_bench_launcher_quick():
    lines = _run("bench/bench_launcher.py", "--quick")
    last = json.loads(lines[-1])
    assert last["dry_run"]["dry_run_s"] > 0 and len(last["dry_run"]["dry_all"]) == 3
    assert "skipped" in lines[-2]


@pytest.mark.slow
def test_bench_step_ab_quick():
    last = json.loads(_run("bench/bench_step_ab.py", "--quick")[-1])
    assert last["loss_spread"] < 1e-4 and set(last["tokens_per_s"]) == {
        "HF padded", "ours padded", "ours packed"}  # fmt: skip


def test_bench_faults_help_and_refuses_an_unknown_fault():
    """The fault bench needs the Slurm cluster (minutes): here only its CLI is checked."""
    assert any("--only" in x for x in _run("bench/faults.py", "--help", timeout=60))
    env = {**os.environ, "PYTHONPATH": str(REPO), "SLURM_CONF": "/nonexistent"}
    r = subprocess.run([sys.executable, "bench/faults.py", "--only", "meteor"], cwd=REPO,
                       env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 2 and "unknown fault(s) ['meteor']" in r.stderr
