"""Hydra multirun: `python launch.py -m per_device_batch_size=1,2,4 gradient_accumulation_steps=4,8`.

Each point is checked and, when feasible, submitted without waiting; infeasible points are
listed with their reasons and submitted nowhere. One sweep folder (hydra.sweep.dir) holds
every run and `sweep.jsonl`, one line per point.
"""

from __future__ import annotations

import contextlib
import io
import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from launcher.config import compose as composing
from launcher.config import settings
from launcher.config.spec import ConfigError
from launcher.rundir import SweepDir


def _record(sweep_dir: Path, row: dict) -> None:
    with SweepDir(sweep_dir).sweep_jsonl.open("a") as f:
        f.write(json.dumps(row) + "\n")


@hydra.main(config_path=str(composing.CONF_DIR), config_name="config", version_base=None)
def _task(cfg: DictConfig) -> int:
    from launcher.submit.pipeline import run

    hc = HydraConfig.get()
    overrides = list(hc.overrides.task)
    if hc.mode is None or hc.mode.name != "MULTIRUN":
        try:
            return run(cfg, applied=overrides)
        except ConfigError as e:
            print(e, file=sys.stderr)
            return 2
    sweep_dir, hydra_out = Path(hc.sweep.dir), Path(hc.runtime.output_dir)
    varying = settings.varying_keys(sys.argv[1:])
    name = settings.point_name(overrides, varying, hc.job.num, _names(sweep_dir))
    if hydra_out.is_dir() and hydra_out.name != name and not any(hydra_out.iterdir()):
        hydra_out.rmdir()  # Hydra's numbered folder: the point goes under its name instead
    _SWEEPS.append(sweep_dir)
    return _point(cfg, overrides, hc.job.num, SweepDir(sweep_dir).point(name), sweep_dir, varying)


_SWEEPS: list[Path] = []  # the sweep dir of the Hydra-run points, for the table at the end


def _names(sweep_dir: Path) -> set[str]:
    """Point dir names already given in this sweep (sweep.jsonl), and any folder there."""
    rows = _rows(sweep_dir)
    return {Path(r["run_dir"] or r.get("name") or "").name for r in rows} | {
        p.name for p in sweep_dir.glob("*") if p.is_dir() and any(p.iterdir())
    }


def _rows(sweep_dir: Path) -> list[dict]:
    path = SweepDir(sweep_dir).sweep_jsonl
    return [json.loads(x) for x in path.read_text().splitlines() if x] if path.exists() else []


def _point(
    cfg: DictConfig,
    overrides: list[str],
    num: int,
    out: Path,
    sweep_dir: Path,
    varying: Sequence[str] = (),
) -> int:
    """Check, plan and submit one sweep point; one line on stdout and in sweep.jsonl either way
    (what the pipeline prints goes to the point's logs/launch.log)."""
    from launcher.rundir import RunDir
    from launcher.submit.pipeline import run

    with open_dict(cfg):
        cfg.run_dir = str(out)
        cfg.wait = False
    differs = settings.point_overrides(overrides, varying)
    row = {"num": num, "name": out.name, "overrides": overrides, "differs": differs}
    row["run_dir"] = str(out)
    said = io.StringIO()
    try:
        with contextlib.redirect_stdout(said):
            run(cfg, sweep_point=True, applied=overrides, differs=differs)
    except ConfigError as e:
        if out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        reasons = [str(p) for p in e.problems]
        print(f"[sweep] {out.name:<20} {' '.join(differs)}: infeasible, not submitted: "
              + "; ".join(reasons), flush=True)  # fmt: skip
        _record(sweep_dir, {**row, "run_dir": None, "status": "infeasible", "reasons": reasons})
        return 2
    run_dir = RunDir(out)
    run_dir.launch_log.parent.mkdir(parents=True, exist_ok=True)
    run_dir.launch_log.write_text(said.getvalue())
    job = json.loads(run_dir.job_json.read_text()) if run_dir.job_json.exists() else {}
    status = "planned" if cfg.dry_run else "submitted"
    ident = job.get("job_id") or job.get("pid")
    warned = said.getvalue().count("[launch] warning:")
    tail = f" ({warned} warning(s): {run_dir.relative(run_dir.launch_log)})" if warned else ""
    print(f"[sweep] {out.name:<20} {' '.join(differs)}: {status}"
          + (f" {'job' if job.get('job_id') else 'pid'} {ident}" if ident else "") + tail,
          flush=True)  # fmt: skip
    _record(sweep_dir, {**row, "status": status, "job_id": job.get("job_id")})
    return 0


def print_table(sweep_dir: Path) -> None:
    """The sweep at a glance: one row per point (dir, the settings that differ, status, job)."""
    rows = _rows(sweep_dir)
    if not rows:
        return
    keys = list(
        dict.fromkeys(k for r in rows for k in (o.partition("=")[0] for o in r.get("differs", [])))
    )
    head = ["point dir", *keys, "status", "job"]
    body = []
    for r in rows:
        values = dict(o.partition("=")[::2] for o in r.get("differs", []))
        name = Path(r["run_dir"]).name if r.get("run_dir") else f"({r.get('name', r['num'])})"
        body.append([name, *(values.get(k.lstrip("+~"), "-") for k in keys), r["status"],
                     str(r.get("job_id") or "-")])  # fmt: skip
    widths = [max(len(x) for x in col) for col in zip(head, *body, strict=True)]
    counts = {
        s: sum(r["status"] == s for r in rows) for s in dict.fromkeys(r["status"] for r in rows)
    }
    print(
        f"[sweep] {len(rows)} points ({', '.join(f'{n} {s}' for s, n in counts.items())}) in {sweep_dir}"
    )
    for line in (head, *body):
        print("  " + "  ".join(x.ljust(w) for x, w in zip(line, widths, strict=True)).rstrip())
    here = shlex.quote(str(sweep_dir))
    print(
        f"[sweep] next: python launch.py status {here}; once ended: python launch.py report {here}"
    )


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
    SweepDir(sweep_dir).multirun_yaml.write_text(
        OmegaConf.to_yaml(base) + OmegaConf.to_yaml(hydra_part)
    )
    varying, taken = settings.varying_keys(texts), _names(sweep_dir)
    for num, (cfg, point) in enumerate(cfgs):
        out = SweepDir(sweep_dir).point(settings.point_name(point, varying, num, taken))
        out.mkdir(parents=True, exist_ok=True)
        _point(cfg, point, num, out, sweep_dir, varying)
    print_table(sweep_dir)
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
    for sweep_dir in dict.fromkeys(_SWEEPS):
        print_table(sweep_dir)
    return 0
