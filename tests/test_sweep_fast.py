"""A sweep over plain settings skips Hydra's per-point compose (launcher.sweep.fast_sweep)
and writes what Hydra's BasicSweeper path writes: the same sweep.jsonl rows and run dirs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ARGS = ["-m", "hw=cpu", "nodes=1", "lr=1e-4,2e-4", "max_steps=7,9", "dry_run=true"]


def _sweep(tmp: Path, name: str, hydra: bool) -> Path:
    out = tmp / name
    argv = ["launch.py", *ARGS, f"cache_dir={tmp / 'cache'}", f"hydra.sweep.dir={out}"]
    code = (
        f"import sys; sys.argv = {argv!r}; from launcher.sweep import _task; _task()"
        if hydra
        else f"import sys; sys.argv = {argv!r}; from launcher.sweep import hydra_main; "
        "sys.exit(hydra_main())"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return out


def test_fast_sweep_writes_what_hydra_writes(tmp_path, monkeypatch):
    from launcher.sweep import fast_sweep

    assert not fast_sweep(["-m", "model=tiny_internvl,internvl2_1b"])  # a swept group
    assert not fast_sweep(["lr=1e-4"])  # not a multirun
    fast, hydra = _sweep(tmp_path, "fast", False), _sweep(tmp_path, "hydra", True)
    norm = lambda p, name: p.read_text().replace(str(tmp_path / name), "SWEEP")  # noqa: E731
    assert norm(fast / "sweep.jsonl", "fast") == norm(hydra / "sweep.jsonl", "hydra")
    assert sorted(p.name for p in fast.iterdir()) == sorted(p.name for p in hydra.iterdir())
    for n in range(4):
        for f in ("config.yaml", "train_args.json", "deepspeed.json"):
            assert norm(fast / str(n) / f, "fast") == norm(hydra / str(n) / f, "hydra"), (n, f)
