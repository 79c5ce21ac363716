"""What the login node can tell about a job's data: the datasets, their sample counts and roots.

`load_meta(path)` reads an InternVL meta JSON without a traceback: a malformed, list-shaped,
unreadable or directory meta file is a `Problem` naming the setting, the file and line/column.
`datasets(spec)` lists each dataset with its sample count (meta `length`, else the annotation's
lines when readable here) and root; `data_problems(spec)` refuses what the nodes would refuse
later (an empty annotation, a dataset with nothing in it); `data_line` is the plan's data line.
Standard library only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launcher.config.spec import JobSpec, Problem

COUNT_BYTES = 256 << 20
"""Annotations larger than this are not counted here (their meta `length` is used, if any)."""


@dataclass(frozen=True, slots=True)
class Dataset:
    name: str
    root: str | None
    annotation: str | None
    samples: int | None
    """Training samples per epoch (lines x repeat_time, as the trainer repeats them); None: unknown."""
    basis: str


def load_meta(
    path: str, setting: str = "data.meta_file"
) -> tuple[dict[str, Any] | None, list[Problem]]:
    """The meta JSON at `path` as {name: entry}, or None and the problems that prevent it."""
    p = Path(path)
    if p.is_dir():
        return None, [Problem(setting, f"{path} is a directory; name the meta JSON file in it")]
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        return None, [
            Problem(setting, f"{path}: not UTF-8 text (byte {e.start}); give a JSON file")
        ]
    except OSError as e:
        return None, [Problem(setting, f"{path}: cannot read it ({e.strerror})")]
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as e:
        return None, [Problem(setting, f"{path}:{e.lineno}:{e.colno}: not valid JSON ({e.msg})")]
    if not isinstance(meta, dict):
        return None, [
            Problem(
                setting,
                f"{path}:1:1: a meta file is a JSON object {{name: {{root, annotation, ...}}}}, "
                f"not a JSON {type(meta).__name__}",
            )
        ]
    problems = []
    for name, entry in meta.items():
        if not isinstance(entry, dict):
            problems.append(Problem(setting, f"{path}: entry {name!r} is not an object"))
            continue
        missing = [k for k in ("root", "annotation") if not isinstance(entry.get(k), str)]
        if missing:
            problems.append(
                Problem(setting, f"{path}: entry {name!r} has no {' or '.join(missing)}")
            )
    if not meta:
        problems.append(Problem(setting, f"{path}: no datasets in it (an empty JSON object)"))
    return (None if problems else meta), problems


@dataclass(frozen=True, slots=True)
class MetaRead:
    """data.meta_file as read once per launch (launcher.plan.check), passed to what needs it."""

    entries: dict[str, Any] | None
    """The meta JSON the job reads, paths absolute (engines.internvl.meta_entries); None: not
    readable here."""
    problems: tuple[Problem, ...] = ()
    """Why data.meta_file cannot be read (load_meta)."""


def read_meta(spec: JobSpec) -> MetaRead:
    """Read data.meta_file (or take data.datasets) once: the entries and the file's problems."""
    from launcher.engines.internvl import meta_entries, with_absolute_paths

    d = spec.data
    if not d.meta_file:
        return MetaRead(meta_entries(spec))
    if not Path(d.meta_file).exists():
        return MetaRead(None)
    meta, problems = load_meta(d.meta_file, "data.meta_file")
    return MetaRead(with_absolute_paths(Path(d.meta_file), meta), tuple(problems))


def _count_lines(path: str) -> int | None:
    p = Path(path)
    try:
        if not p.is_file() or p.stat().st_size > COUNT_BYTES:
            return None
        with p.open("rb") as f:
            return sum(1 for line in f if line.strip())
    except OSError:
        return None


def _repeat(entry: dict[str, Any]) -> int:
    rt = entry.get("repeat_time", 1)
    return int(rt) if isinstance(rt, (int, float)) and rt > 1 else 1


def datasets(spec: JobSpec, meta: MetaRead | None = None) -> list[Dataset]:
    """Each dataset the job trains on (empty when the data cannot be read here); `meta`: the
    launch's read of data.meta_file (read here when not given)."""
    d = spec.data
    if d.generate:
        return [Dataset(d.generate, d.dir, None, d.num_samples, "generated on node 0")]
    if d.format == "llava_json":
        return [Dataset(d.name, d.image_folder, d.json_path, None, "a JSON array, not counted")]
    out = []
    for name, e in ((meta or read_meta(spec)).entries or {}).items():
        lines = _count_lines(e["annotation"])
        if lines is not None:
            samples, basis = lines * _repeat(e), "lines counted"
        elif isinstance(e.get("length"), int):
            samples, basis = e["length"] * _repeat(e), "meta length"
        else:
            samples, basis = None, "not readable here"
        out.append(Dataset(name, e.get("root"), e.get("annotation"), samples, basis))
    return out


def total_samples(found: list[Dataset]) -> int | None:
    if not found or any(x.samples is None for x in found):
        return None
    return sum(x.samples for x in found)  # type: ignore[misc]


def data_problems(spec: JobSpec, meta: MetaRead | None = None) -> list[Problem]:
    """Meta files that cannot be read, and annotations with no samples in them."""
    d = spec.data
    meta = meta or read_meta(spec)
    out: list[Problem] = []
    if d.meta_file and not d.generate:
        out += meta.problems
    if d.eval_meta_file and not d.generate and Path(d.eval_meta_file).exists():
        out += load_meta(d.eval_meta_file, "data.eval_meta_file")[1]
    if out or d.generate:
        return out
    for x in datasets(spec, meta):
        if x.annotation and x.basis == "lines counted" and x.samples == 0:
            where = "data.meta_file" if d.meta_file else f"data.datasets.{x.name}.annotation"
            out.append(Problem(where, f"{x.annotation}: annotation of {x.name!r} has no samples"))
    for setting, path in (("data.json_path", d.json_path), ("data.image_folder", d.image_folder)):
        if path and Path(path).exists() and Path(path).is_dir() == (setting == "data.json_path"):
            kind = "a directory" if setting == "data.json_path" else "a file"
            out.append(Problem(setting, f"{path} is {kind}"))
        elif (
            setting == "data.json_path"
            and path
            and Path(path).is_file()
            and not Path(path).stat().st_size
        ):
            out.append(Problem(setting, f"{path}: empty file (no samples)"))
    return out


def data_line(spec: JobSpec, found: list[Dataset] | None = None) -> str:
    """The plan's data line: each dataset, its sample count and its root."""
    found = datasets(spec) if found is None else found
    if not found:
        return f"data: {spec.data.name} (datasets not readable here)"
    parts = []
    for x in found:
        n = f"{x.samples:,} samples" if x.samples is not None else "samples unknown"
        parts.append(f"{x.name} ({n}, {x.basis}; root {x.root})")
    if len(found) == 1 and found[0].name == spec.data.name:
        return f"data: {parts[0]}"
    return f"data: {spec.data.name}: " + "; ".join(parts)
