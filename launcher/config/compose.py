"""Compose conf/ with Hydra, reporting every bad override at once.

Hydra stops at the first unknown key or missing group option; `compose()` keeps going so
the user sees all of them in one error.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

from launcher.config import (
    data_select,
    defaults,
    run_name,  # noqa: F401 (run_name: its resolver)
)
from launcher.config.spec import ConfigError, Problem

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
defaults.register()  # base/{model,data,cluster,job}: the dataclass defaults (launcher/config/defaults.py)
GROUPS = defaults.GROUPS

_UNKNOWN_KEY = re.compile(r"Could not override '([^']+)'|Key '([^']+)' is not in struct")
_MISSING_OPTION = re.compile(r"Could not find '([^/']+)/([^']+)'")
_BAD_VALUE = re.compile(r"Error merging override ([^=\s]+)=")


def available_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def groups_help() -> str:
    """The config groups and their options, for `--help` (conf/config.yaml hydra.help)."""
    return "\n".join(f"  {g:<12} {', '.join(available_options(g))}" for g in GROUPS)


# `python launch.py --help` lists the groups from conf/ itself, so it never goes stale.
if not OmegaConf.has_resolver("vlm_groups"):
    OmegaConf.register_new_resolver("vlm_groups", groups_help)


def quote_hint(key: str, value: str) -> str:
    """How to give `value` to `key` as one string through the shell and Hydra's grammar."""
    inner = f'"\\"{value}\\""' if "'" in value else f"\"'{value}'\""
    return (
        f"quote it as one value: {key}={inner} (outer quotes for the shell, inner ones for "
        "Hydra, whose grammar gives ( ) [ ] { } , = quotes and spaces a meaning)"
    )


def parse_overrides(overrides: list[str], *, multirun: bool) -> tuple[list[str], list[Problem]]:
    """Parse each override alone, so every malformed one is named (with how to quote it).

    In a sweep (multirun) a list value a=1,2 becomes its first value, so composition checks
    the keys; in a single run it is a problem (Hydra would refuse it too).
    """
    parser = OverridesParser.create()
    out: list[str] = []
    problems: list[Problem] = []
    for text in overrides:
        key, sep, value = text.partition("=")
        try:
            (o,) = parser.parse_overrides([text])
        except HydraException as e:
            if not sep:
                problems.append(
                    Problem(
                        "command line",
                        f"{text!r} is not key=value (a value with spaces arrived as several "
                        "arguments?); " + quote_hint("key", "a b"),
                    )
                )
            else:
                reason = str(e).strip().splitlines()[0]
                problems.append(
                    Problem(
                        key.lstrip("+~"),
                        f"cannot parse {text!r} ({reason}); {quote_hint(key.lstrip('+~'), value)}",
                    )
                )
            continue
        if o.is_sweep_override():
            if not multirun:
                problems.append(
                    Problem(
                        o.get_key_element().lstrip("+~"),
                        f"{value!r} is several values (a sweep): add -m to sweep them, or "
                        + quote_hint(o.get_key_element().lstrip("+~"), value),
                    )
                )
                continue
            first = next(iter(o.sweep_string_iterator()))
            out.append(f"{o.get_key_element()}={first}")
        else:
            out.append(text)
    return out, problems


def compose(overrides: list[str], *, multirun: bool = False) -> tuple[DictConfig, list[Problem]]:
    """Compose config.yaml with `overrides`, leaving out the bad ones.

    Returns the config and one Problem per bad override, so later checks can add theirs to
    the same list; raises ConfigError only when nothing can be composed at all.
    """
    remaining, problems = parse_overrides(
        [o for o in overrides if not o.startswith("hydra.")], multirun=multirun
    )
    remaining = data_select.select(remaining)  # data.meta_file=... alone selects data=meta_file
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        while True:
            try:
                cfg = hydra_compose(config_name="config", overrides=remaining)
                break
            except HydraException as e:
                bad, problem = _diagnose(str(e), remaining)
                if bad is None:
                    problems.append(Problem("command line", str(e).strip().splitlines()[0]))
                    raise ConfigError(problems) from None
                problems.append(problem)
                remaining = [o for o in remaining if o is not bad]
    return cfg, [_suggest(p, cfg) for p in problems] + data_select.problems(remaining, cfg)


RENAMED = {"validate_data": "check_data"}
"""Settings an earlier version took, and what they are called now (no alias: one name each)."""


def _suggest(problem: Problem, cfg: DictConfig) -> Problem:
    if not problem.message.startswith("unknown setting"):
        return problem
    if problem.setting in RENAMED:
        return Problem(problem.setting, f"unknown setting (renamed: '{RENAMED[problem.setting]}')")
    parent, _, leaf = problem.setting.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    keys = [str(k) for k in node] if isinstance(node, DictConfig) else []
    close = difflib.get_close_matches(leaf, keys, n=1)
    if close:
        name = f"{parent}.{close[0]}" if parent else close[0]
        return Problem(problem.setting, f"unknown setting (did you mean '{name}'?)")
    return problem


def _diagnose(message: str, overrides: list[str]) -> tuple[str | None, Problem]:
    if m := _MISSING_OPTION.search(message):
        group, option = m.groups()
        bad = _find(overrides, group)
        opts = ", ".join(available_options(group))
        return bad, Problem(group, f"no option '{option}' (available: {opts})")
    if m := _UNKNOWN_KEY.search(message):
        key = m.group(1) or m.group(2)
        bad = _find(overrides, key)
        return bad, Problem(key, "unknown setting (see conf/config.yaml and conf/<group>/)")
    if m := _BAD_VALUE.search(message):
        key = m.group(1)
        return _find(overrides, key), Problem(key, message.strip().splitlines()[-1])
    return None, Problem("command line", message)


def _find(overrides: list[str], key: str) -> str | None:
    for o in overrides:
        if o.lstrip("+~").split("=", 1)[0] == key:
            return o
    return None


def to_container(cfg: DictConfig) -> dict[str, Any]:
    """Resolve interpolations; an unresolvable value is reported as a problem."""
    try:
        data = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except Exception as e:  # omegaconf raises several types; all mean "fix this value"
        key = getattr(e, "full_key", None) or "config"
        raise ConfigError([Problem(str(key), str(e).splitlines()[0])]) from None
    data.pop("hydra", None)
    return data
