"""A sweep over plain settings skips Hydra's per-point compose (launcher.submit.sweep.fast_sweep)
and writes what Hydra's BasicSweeper path writes: the same sweep.jsonl rows and run dirs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
ARGS = ["-m", "hw=cpu", "nodes=1", "lr=1e-4,2e-4", "max_steps=7,9", "dry_run=true"]


def _sweep(tmp: Path, name: str, hydra: bool) -> tuple[Path, str]:
    out = tmp / name
    argv = ["launch.py", *ARGS, f"cache_dir={tmp / 'cache'}", f"hydra.sweep.dir={out}"]
    code = (
        f"import sys; sys.argv = {argv!r}; from launcher.submit.sweep import _task; _task()"
        if hydra
        else f"import sys; sys.argv = {argv!r}; from launcher.submit.sweep import hydra_main; "
        "sys.exit(hydra_main())"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return out, r.stdout


def test_fast_sweep_writes_what_hydra_writes(tmp_path, monkeypatch):
    from launcher.submit.sweep import fast_sweep

    assert not fast_sweep(["-m", "model=tiny_internvl,internvl2_1b"])  # a swept group
    assert not fast_sweep(["lr=1e-4"])  # not a multirun
    (fast, said), (hydra, _) = _sweep(tmp_path, "fast", False), _sweep(tmp_path, "hydra", True)
    norm = lambda p, name: p.read_text().replace(str(tmp_path / name), "SWEEP")  # noqa: E731
    assert norm(fast / "sweep.jsonl", "fast") == norm(hydra / "sweep.jsonl", "hydra")
    assert sorted(p.name for p in fast.iterdir()) == sorted(p.name for p in hydra.iterdir())
    # point dirs are named by what differs between points, in the command line's order
    points = ["lr0.0001-steps7", "lr0.0001-steps9", "lr0.0002-steps7", "lr0.0002-steps9"]
    assert sorted(p.name for p in fast.iterdir() if p.is_dir()) == points
    for n in points:
        for f in ("config.yaml", "train_args.json", "deepspeed.json", "overrides.yaml"):
            assert norm(fast / n / f, "fast") == norm(hydra / n / f, "hydra"), (n, f)
    # one line per point while submitting, then the table: dir, the differing values, status
    lines = said.splitlines()
    assert [x.split()[1] for x in lines if x.startswith("[sweep] lr")] == points
    assert "max_steps=9: planned" in lines[1]
    assert lines[4].startswith("[sweep] 4 points (4 planned)")
    assert lines[5].split() == ["point", "dir", "lr", "max_steps", "status", "job"]
    assert lines[9].split() == ["lr0.0002-steps9", "0.0002", "9", "planned", "-"]
    assert len(lines) == 11, said
    rec = yaml.safe_load((fast / points[1] / "overrides.yaml").read_text())
    assert rec["argv"][1:3] == ["-m", "hw=cpu"] and rec["command"].startswith("python launch.py -m")
    assert rec["overrides"][:4] == ["hw=cpu", "nodes=1", "lr=0.0001", "max_steps=9"]
    assert rec["sweep_differs"] == ["lr=0.0001", "max_steps=9"]
    from launcher.config.settings import point_settings

    assert point_settings(fast / points[1]) == " point: lr=0.0001 max_steps=9"
