"""Default run dirs are unique: two launches in the same second both start.

conf/config.yaml names the default run dir `${vlm_run_dir:RUNS_ROOT/STAMP-MODEL}`; the resolver
returns that path, or `-2`, `-3`, ... the first that no run dir (planned or being planned, a
`.NAME.partial-*` staging folder) holds. Two launches planning at the same moment can still pick
the same name; `next_name` gives the loser (launcher.submit.pipeline) the next free one. Looking only,
never creating: composing has no side effects.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

PICKED: dict[str, str] = {}
"""Run dir picked by the resolver -> the default it came from."""


def _taken(path: Path) -> bool:
    return path.exists() or (
        path.parent.is_dir() and any(path.parent.glob(f".{path.name}.partial-*"))
    )


def unique_run_dir(default: str) -> str:
    base = Path(default)
    n = 1
    cand = base
    while _taken(cand):
        n += 1
        cand = base.with_name(f"{base.name}-{n}")
    PICKED[str(cand)] = default
    return str(cand)


def next_name(run_dir: str) -> str | None:
    """The next free name when `run_dir` was a default the resolver picked (None: the user's)."""
    default = PICKED.get(run_dir)
    return None if default is None else unique_run_dir(default)


if not OmegaConf.has_resolver("vlm_run_dir"):
    OmegaConf.register_new_resolver("vlm_run_dir", unique_run_dir, use_cache=True)
