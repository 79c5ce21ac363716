"""What a run was asked for and how runs differ: the overrides record, sweep point names,
and the settings that differ between runs (for `status`, `report` tables and legends).

`overrides.yaml` beside config.yaml records the command line as given and the overrides
Hydra applied (in a sweep also the ones that differ between its points). A sweep point's dir
is named by what differs (`pdb2-ga32`); a comparison shows only the settings that differ.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from launcher.config.defaults import GROUPS  # a group's option names itself (`zero3`)

# Short names for point dirs and legends; anything else: the setting's last dotted part.
SHORT = {
    "per_device_batch_size": "pdb",
    "gradient_accumulation_steps": "ga",
    "global_batch_size": "gbs",
    "nodes": "n",
    "seq_len": "seq",
    "max_steps": "steps",
    "zero_stage": "z",
    "parallelism.zero_stage": "z",
    "lr": "lr",
}
# Settings that differ between any two runs by construction, never because of a choice.
NOT_A_CHOICE = {"run_dir", "runs_root", "cache_dir", "dry_run", "wait"}


def _key_value(text: str) -> tuple[str, str]:
    key, _, value = text.partition("=")
    return key.lstrip("+~"), value


def short(key: str, value: Any) -> str:
    """One setting as a folder-name part: `pdb2`, `zero3` (a group's option), `lr1e-4`."""
    text = value if isinstance(value, str) else yaml.safe_dump(value).strip().removesuffix("...")
    text = re.sub(r"[^A-Za-z0-9.+-]+", "_", text.strip()).strip("_") or "null"
    if key in GROUPS:
        return text
    name = SHORT.get(key) or SHORT.get(key.rpartition(".")[2]) or key.rpartition(".")[2]
    return f"{name}{text}" if text[0].isdigit() or text[0] in ".-" else f"{name}_{text}"


def varying_keys(texts: Iterable[str]) -> list[str]:
    """The keys a sweep command line gives several values (`a=1,2`, `range(...)`, ...)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    out = []
    for text in texts:
        if text.startswith("-"):
            continue
        try:
            (o,) = parser.parse_overrides([text])
        except Exception:  # Hydra reports a bad override itself
            continue
        if o.is_sweep_override() and not o.key_or_group.startswith("hydra"):
            out.append(o.key_or_group.lstrip("+~"))
    return out


def point_overrides(overrides: Sequence[str], varying: Sequence[str]) -> list[str]:
    """The overrides of one sweep point that differ between points, in command-line order."""
    return [o for o in overrides if _key_value(o)[0] in varying]


def point_name(overrides: Sequence[str], varying: Sequence[str], num: int, taken: set[str]) -> str:
    """A sweep point's dir name from what differs (`pdb2-ga32`); the point number when nothing
    does or the name is already taken (unique within `taken`, which it is added to)."""
    parts = [short(*_key_value(o)) for o in point_overrides(overrides, varying)]
    name = "-".join(parts)[:120] or str(num)
    if name in taken or name.startswith("."):
        name = f"{name}-{num}"
    taken.add(name)
    return name


def overrides_record(
    argv: Sequence[str], overrides: Sequence[str], differs: Sequence[str] | None = None
) -> str:
    """overrides.yaml: the command line as given, the overrides Hydra applied and, for a
    sweep point, the ones that differ between points."""
    record: dict[str, Any] = {
        "command": shlex.join(["python", *argv]),
        "argv": list(argv),
        "overrides": list(overrides),
    }
    if differs is not None:
        record["sweep_differs"] = list(differs)
    return yaml.safe_dump(record, sort_keys=False, width=1000)


def recorded(run_root: Path) -> dict[str, Any]:
    """A run's overrides.yaml ({} for runs planned before it existed)."""
    from launcher.rundir import RunDir

    path = RunDir(run_root).overrides_yaml
    try:
        return yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}


def point_settings(run_root: Path) -> str:
    """For `status`: ` point: a=1 b=2` for a sweep point, '' otherwise."""
    differs = recorded(run_root).get("sweep_differs")
    return f" point: {' '.join(differs)}" if differs else ""


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out |= flatten(v, f"{key}.")
        else:
            out[key] = v
    return out


def differing(settings: Sequence[Mapping[str, Any]]) -> list[str]:
    """Keys (dotted) whose values are not the same in every run, in first-seen order. Where a
    group's `name` differs, only that key stands for the group (a model's dims follow it)."""
    if len(settings) < 2:
        return []
    keys = list(dict.fromkeys(k for s in settings for k in s))
    diff = [
        k for k in keys if k not in NOT_A_CHOICE and len({repr(s.get(k)) for s in settings}) > 1
    ]
    named = {k.rpartition(".")[0] for k in diff if k.endswith(".name") and "." in k}
    return [k for k in diff if k.endswith(".name") or k.partition(".")[0] not in named]


def label(setting: Mapping[str, Any], keys: Sequence[str]) -> str:
    """`pdb=2 ga=32`: a run's values of the differing keys, short names."""
    parts = []
    for k in keys:
        name = k.rpartition(".")[0] if k.endswith(".name") else k
        name = SHORT.get(name) or SHORT.get(name.rpartition(".")[2]) or name
        parts.append(f"{name}={setting.get(k, '-')}")
    return " ".join(parts)
