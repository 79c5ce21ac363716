"""Hydra multirun: `python launch.py -m per_device_batch_size=1,2,4 gradient_accumulation_steps=4,8`.

Each point is checked and, when feasible, submitted without waiting; infeasible points are
listed with their reasons and submitted nowhere. One sweep folder (hydra.sweep.dir) holds
every run and `sweep.jsonl`, one line per point.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from launcher import compose as composing
from launcher.rundir import RunDir
from launcher.spec import ConfigError


def _record(sweep_dir: Path, row: dict) -> None:
    with (sweep_dir / "sweep.jsonl").open("a") as f:
        f.write(json.dumps(row) + "\n")


@hydra.main(config_path=str(composing.CONF_DIR), config_name="config", version_base=None)
def _task(cfg: DictConfig) -> int:
    from launcher.pipeline import run

    hc = HydraConfig.get()
    overrides = list(hc.overrides.task)
    if hc.mode is None or hc.mode.name != "MULTIRUN":
        try:
            return run(cfg)
        except ConfigError as e:
            print(e, file=sys.stderr)
            return 2
    out = Path(hc.runtime.output_dir)
    sweep_dir = Path(hc.sweep.dir)
    with open_dict(cfg):
        cfg.run_dir = str(out)
        cfg.wait = False
    row = {"num": hc.job.num, "overrides": overrides, "run_dir": str(out)}
    try:
        run(cfg, sweep_point=True)
    except ConfigError as e:
        if out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        reasons = [str(p) for p in e.problems]
        print(f"[sweep] point {hc.job.num} {' '.join(overrides)}: infeasible, not submitted:")
        for r in reasons:
            print(f"[sweep]   - {r}")
        _record(sweep_dir, {**row, "run_dir": None, "status": "infeasible", "reasons": reasons})
        return 2
    job_json = RunDir(out).job_json
    job = json.loads(job_json.read_text()) if job_json.exists() else {}
    _record(
        sweep_dir,
        {**row, "status": "planned" if cfg.dry_run else "submitted", "job_id": job.get("job_id")},
    )
    return 0


def hydra_main() -> int:
    """Pre-check every override (all problems at once), then hand over to Hydra's own
    command line (-m, --cfg/-c job, --help, --info, ...)."""
    from hydra._internal.utils import get_args_parser

    args, _ = get_args_parser().parse_known_args(sys.argv[1:])
    if not (args.help or args.hydra_help or args.shell_completion):
        try:
            _, problems = composing.compose(args.overrides, multirun=args.multirun)
        except ConfigError as e:
            problems = e.problems
        if problems:
            print(ConfigError(problems), file=sys.stderr)
            return 2
    _task()
    return 0
