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
    return _point(cfg, overrides, hc.job.num, Path(hc.runtime.output_dir), Path(hc.sweep.dir))


def _point(cfg: DictConfig, overrides: list[str], num: int, out: Path, sweep_dir: Path) -> int:
    """Check, plan and submit one sweep point; one line in sweep.jsonl either way."""
    from launcher.pipeline import run

    with open_dict(cfg):
        cfg.run_dir = str(out)
        cfg.wait = False
    row = {"num": num, "overrides": overrides, "run_dir": str(out)}
    try:
        run(cfg, sweep_point=True)
    except ConfigError as e:
        if out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        reasons = [str(p) for p in e.problems]
        print(f"[sweep] point {num} {' '.join(overrides)}: infeasible, not submitted:")
        for r in reasons:
            print(f"[sweep]   - {r}")
        _record(sweep_dir, {**row, "run_dir": None, "status": "infeasible", "reasons": reasons})
        return 2
    job = json.loads((out / "job.json").read_text()) if (out / "job.json").exists() else {}
    _record(
        sweep_dir,
        {**row, "status": "planned" if cfg.dry_run else "submitted", "job_id": job.get("job_id")},
    )
    return 0


def fast_sweep(argv: list[str]) -> bool:
    """Run a ``-m`` sweep that varies only plain settings without Hydra's per-point compose.

    Hydra composes every point twice (once in ``validate_batch_is_legal``, once to launch it),
    about 0.7 s each here: 64 points took 100 s. When no config group and no ``hydra.*`` key
    other than ``hydra.sweep.dir`` is swept or set, the defaults are composed once and each
    point's overrides are applied to a copy with Hydra's own override code, in the same
    order and with the same values and the same ``sweep.jsonl`` / run-dir layout as the
    BasicSweeper. Every point is built before any is submitted, so a bad value still
    submits nothing. Returns False (nothing done) when the sweep does not qualify.
    """
    import copy
    import time

    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf import OmegaConf

    if "-m" not in argv and "--multirun" not in argv:
        return False
    texts = [a for a in argv if not a.startswith("-")]
    if len(texts) != len([a for a in argv if a not in ("-m", "--multirun")]):
        return False  # other Hydra flags: leave it to Hydra
    parser = OverridesParser.create()
    try:
        parsed = parser.parse_overrides(texts)
    except HydraException:
        return False
    sweep_dir = None
    groups, plain = [], []
    for text, o in zip(texts, parsed, strict=True):
        key = o.key_or_group
        if key == "hydra.sweep.dir" and not o.is_sweep_override():
            sweep_dir = Path(str(o.value()))
        elif key.startswith("hydra") or key == "runs_root" and o.is_sweep_override():
            return False
        elif "/" in key or key in composing.GROUPS or o.package:
            if o.is_sweep_override():
                return False
            groups.append(text)
        else:
            plain.append(o)
    points = BasicSweeper.split_arguments(
        [o for o in parsed if not o.key_or_group.startswith("hydra")], None
    )[0]
    base, problems = composing.compose(groups)
    if problems:
        return False
    if sweep_dir is None:  # hydra.sweep.dir: ${runs_root}/sweep-${now:%Y%m%d-%H%M%S}
        runs_root = next((str(o.value()) for o in plain if o.key_or_group == "runs_root"), None)
        sweep_dir = Path(runs_root or base.runs_root) / f"sweep-{time.strftime('%Y%m%d-%H%M%S')}"
    group_keys = {parser.parse_override(g).key_or_group for g in groups}
    cfgs = []
    try:
        for point in points:
            cfg = copy.deepcopy(base)
            mine = [o for o in parser.parse_overrides(point) if o.key_or_group not in group_keys]
            ConfigLoaderImpl._apply_overrides_to_config(mine, cfg)
            OmegaConf.set_readonly(cfg, False)
            cfgs.append((cfg, point))
    except HydraException:
        return False  # let Hydra report it the way it always does
    sweep_dir.mkdir(parents=True, exist_ok=True)
    # Hydra's record of the sweep: the composed defaults plus the command line.
    hydra_part = {"hydra": {"mode": "MULTIRUN", "overrides": {"task": texts}}}
    (sweep_dir / "multirun.yaml").write_text(
        OmegaConf.to_yaml(base) + OmegaConf.to_yaml(hydra_part)
    )
    for num, (cfg, point) in enumerate(cfgs):
        out = sweep_dir / str(num)
        out.mkdir(parents=True, exist_ok=True)
        _point(cfg, point, num, out, sweep_dir)
    return True


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
        if fast_sweep(sys.argv[1:]):
            return 0
    _task()
    return 0
