"""Launcher latency: dry run vs an import floor, a 64-point sweep on Slurm, submit to first step.

`python bench/bench_launcher.py [--runs 7] [--no-slurm] [--quick]`

1. Median wall time of ``--runs`` dry runs of ``launch.py model=internvl_20b hw=a800 nodes=4``
   against a bare ``python -c "import hydra, omegaconf"`` floor (goal: <= 1.5 s and <= floor +
   0.6 s). Runs alternate floor / dry run.
2. A 64-point sweep (``-m`` over 8 learning rates x 8 step counts, tiny model, hw=cpu) planned
   and submitted to the local Slurm (``SLURM_CONF``; goal <= 15 s). Right after the sweep
   returns it checks with squeue/sacct that no job has ended, then **scancels every job** so
   the shared cluster is free again.
3. Submit to first step: one tiny run submitted to the local Slurm; the time from the launch
   command starting to the first line of its ``metrics.jsonl``; the job is then cancelled.

Needs ``SLURM_CONF`` for 2 and 3 (skipped with a message otherwise, or with ``--no-slurm``).
The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable


def _wall(cmd: list[str], env: dict, ok=(0,)) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if r.returncode not in ok:
        raise SystemExit(
            f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-2000:]}{r.stderr[-2000:]}"
        )
    return dt


def dry_runs(n: int, tmp: Path, env: dict) -> dict:
    floor, dry = [], []
    for k in range(n):
        floor.append(_wall([PY, "-c", "import hydra, omegaconf"], env))
        dry.append(_wall([PY, "launch.py", "model=internvl_20b", "hw=a800", "nodes=4",
                          "dry_run=true", f"run_dir={tmp / f'dry{k}'}"], env))  # fmt: skip
    f, d = statistics.median(floor), statistics.median(dry)
    return {"floor_s": round(f, 3), "dry_run_s": round(d, 3), "over_floor_s": round(d - f, 3),
            "goal_met": d <= 1.5 and d <= f + 0.6, "floor_all": [round(x, 3) for x in floor],
            "dry_all": [round(x, 3) for x in dry]}  # fmt: skip


def _job_ids(root: Path) -> list[str]:
    return [json.loads(p.read_text())["job_id"] for p in sorted(root.rglob("job.json"))]


def _scancel(ids: list[str], env: dict) -> None:
    if ids:
        subprocess.run(["scancel", *ids], env=env, capture_output=True)


def _ended(ids: list[str], env: dict) -> list[str]:
    """Job ids that are no longer pending/running (sacct if present, else absent from squeue)."""
    r = subprocess.run(["squeue", "-h", "-o", "%i", "-j", ",".join(ids)], env=env,
                       capture_output=True, text=True)  # fmt: skip
    live = set(r.stdout.split())
    return [i for i in ids if i not in live]


def sweep(tmp: Path, env: dict, points: int = 64) -> dict:
    lrs = ",".join(f"{k + 1}e-4" for k in range(8))
    steps = ",".join(str(1000 + k) for k in range(points // 8))
    sweep_dir = tmp / "sweep"
    cmd = [PY, "launch.py", "-m", "cluster=slurm", "hw=cpu", "nodes=1", f"lr={lrs}",
           f"max_steps={steps}", f"hydra.sweep.dir={sweep_dir}", f"cache_dir={tmp / 'cache'}"]  # fmt: skip
    ids: list[str] = []
    try:
        dt = _wall(cmd, env)
        ids = _job_ids(sweep_dir)
        ended = _ended(ids, env)
    finally:
        ids = ids or (_job_ids(sweep_dir) if sweep_dir.exists() else [])
        _scancel(ids, env)
    return {"points": points, "submitted": len(ids), "seconds": round(dt, 2),
            "ended_before_return": len(ended), "goal_met": dt <= 15 and not ended,
            "cancelled": len(ids)}  # fmt: skip


def first_step(tmp: Path, env: dict, timeout_s: float = 600) -> dict:
    run = tmp / "first"
    t0 = time.perf_counter()
    _wall([PY, "launch.py", "cluster=slurm", "hw=cpu", "nodes=1", "max_steps=50",
           f"run_dir={run}", f"cache_dir={tmp / 'cache'}"], env)  # fmt: skip
    submitted = time.perf_counter() - t0
    ids = _job_ids(run)
    try:
        metrics = run / "metrics.jsonl"
        while not (metrics.exists() and metrics.read_text().strip()):
            if time.perf_counter() - t0 > timeout_s:
                return {"submit_s": round(submitted, 2), "first_step_s": None, "timeout": timeout_s}
            time.sleep(0.2)
        return {"submit_s": round(submitted, 2), "first_step_s": round(time.perf_counter() - t0, 2)}
    finally:
        _scancel(ids, env)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--no-slurm", action="store_true")
    p.add_argument("--no-first-step", action="store_true", help="skip the submit-to-first-step run")
    p.add_argument("--quick", action="store_true", help="3 dry runs, no Slurm (tests)")
    a = p.parse_args()
    if a.quick:
        a.runs, a.no_slurm = 3, True
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out: dict = {"load": [list(os.getloadavg())]}
    # Cancelled jobs may still write their submitit logs while the folder is removed.
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp:
        tmp = Path(tmp)
        d = out["dry_run"] = dry_runs(a.runs, tmp, env)
        print(f"dry run model=internvl_20b hw=a800 nodes=4: median {d['dry_run_s']:.2f} s over "
              f"{a.runs}; import hydra+omegaconf floor {d['floor_s']:.2f} s; "
              f"+{d['over_floor_s']:.2f} s (goal <= 1.5 s and <= floor + 0.6 s: "
              f"{'met' if d['goal_met'] else 'NOT met'})", flush=True)  # fmt: skip
        out["load"].append(list(os.getloadavg()))
        if a.no_slurm or not env.get("SLURM_CONF"):
            print("slurm sweep / first step: skipped (" +
                  ("--no-slurm" if a.no_slurm else "SLURM_CONF is not set") + ")")  # fmt: skip
        else:
            s = out["sweep"] = sweep(tmp, env)
            print(f"64-point sweep: {s['submitted']} jobs planned and submitted in "
                  f"{s['seconds']:.1f} s; ended before it returned: {s['ended_before_return']}; "
                  f"all cancelled (goal <= 15 s: {'met' if s['goal_met'] else 'NOT met'})",
                  flush=True)  # fmt: skip
            out["load"].append(list(os.getloadavg()))
            if a.no_first_step:
                print(json.dumps(out))
                return 0
            f = out["first_step"] = first_step(tmp, env)
            print(
                f"submit to first step (tiny model, local Slurm): submit returned in "
                f"{f['submit_s']:.1f} s, first step after {f['first_step_s']} s",
                flush=True,
            )
            out["load"].append(list(os.getloadavg()))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
