"""What the login node can tell about a job's data: the datasets, their sample counts and roots.

`load_meta(path)` reads an InternVL meta JSON without a traceback: a malformed, list-shaped,
unreadable or directory meta file is a `Problem` naming the setting, the file and line/column.
`read_meta(spec)` reads data.meta_file and `scan`s each annotation file once per launch (the
check stage passes the `MetaRead` on: nothing reads them again).
`datasets(spec)` lists each dataset with its sample count (meta `length`, else the annotation's
lines when readable here) and root; `data_problems(spec)` refuses what the nodes would refuse
later (an empty annotation, a dataset with nothing in it); `data_line` is the plan's data line.
Standard library only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from launcher.config.spec import JobSpec, Problem

COUNT_BYTES = 256 << 20
"""Annotations larger than this are not counted here (their meta `length` is used, if any)."""
SCAN_SAMPLES = 2000
SCAN_BYTES = 8 << 20
"""The samples sized for the memory estimate: at most this many, in at most this many bytes."""
TURN_TOKENS = 16
"""Template tokens per conversation turn (launcher.plan.lengths)."""


@dataclass(frozen=True, slots=True)
class Dataset:
    name: str
    root: str | None
    annotation: str | None
    samples: int | None
    """Training samples per epoch (lines x repeat_time, as the trainer repeats them); None: unknown."""
    basis: str


def read_text(path: str, setting: str) -> tuple[str | None, list[Problem]]:
    """The text of the meta JSON at `path`, or None and the problem that prevents reading it."""
    p = Path(path)
    if p.is_dir():
        return None, [Problem(setting, f"{path} is a directory; name the meta JSON file in it")]
    try:
        return p.read_text(encoding="utf-8"), []
    except UnicodeDecodeError as e:
        return None, [
            Problem(setting, f"{path}: not UTF-8 text (byte {e.start}); give a JSON file")
        ]
    except OSError as e:
        return None, [Problem(setting, f"{path}: cannot read it ({e.strerror})")]


def load_meta(
    path: str, setting: str = "data.meta_file", text: str | None = None
) -> tuple[dict[str, Any] | None, list[Problem]]:
    """The meta JSON at `path` (`text`: its content, when already read) as {name: entry}, or
    None and the problems that prevent it."""
    if text is None:
        text, problems = read_text(path, setting)
        if text is None:
            return None, problems
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
class Annotation:
    """One annotation file, read once (`scan`): what the sample counts and lengths need."""

    lines: int | None = None
    """Non-empty lines (None: not a readable file, or over COUNT_BYTES)."""
    sizes: tuple[tuple[int, int], ...] | None = None
    """(text tokens, images) of each of its first SCAN_SAMPLES samples; None: not readable."""


@dataclass(frozen=True, slots=True)
class MetaRead:
    """data.meta_file as read once per launch (launcher.plan.check), passed to what needs it."""

    entries: dict[str, Any] | None
    """The meta JSON the job reads (data.meta_file's, or data.datasets' as
    engines.internvl.meta_entries writes it), paths absolute; None: not readable here."""
    problems: tuple[Problem, ...] = ()
    """Why data.meta_file cannot be read (load_meta)."""
    annotations: dict[str, Annotation] = field(default_factory=dict)
    """Each annotation file of the job (the entries', or data.json_path), scanned once."""
    eval_text: str | None = None
    """data.eval_meta_file as read (None: not set, or not here), copied into the run dir."""
    eval_problems: tuple[Problem, ...] = ()
    """Why data.eval_meta_file cannot be read (load_meta)."""


def read_meta(spec: JobSpec) -> MetaRead:
    """Read data.meta_file (or take data.datasets), each annotation file in it and
    data.eval_meta_file once: the entries, the files' problems and the annotations' line counts
    and sample lengths."""
    from launcher.engines.internvl import meta_entries, with_absolute_paths

    d = spec.data
    entries, problems = None, []
    if not d.meta_file:
        entries = meta_entries(spec)
    elif Path(d.meta_file).exists():
        meta, problems = load_meta(d.meta_file, "data.meta_file")
        entries = with_absolute_paths(Path(d.meta_file), meta)
    paths = [e.get("annotation") for e in (entries or {}).values() if isinstance(e, dict)]
    llava = d.format == "llava_json"  # one JSON array: its lines are not samples
    paths = [d.json_path] if llava else paths
    scans = {} if d.generate else {p: scan(p, not llava) for p in paths if isinstance(p, str)}
    eval_text, eval_problems = None, []
    if d.eval_meta_file and not d.generate and Path(d.eval_meta_file).exists():
        eval_text, eval_problems = read_text(d.eval_meta_file, "data.eval_meta_file")
        if eval_text is not None:
            eval_problems = load_meta(d.eval_meta_file, "data.eval_meta_file", eval_text)[1]
    return MetaRead(entries, tuple(problems), scans, eval_text, tuple(eval_problems))


def scan(path: str, count: bool = True) -> Annotation:
    """Count the lines of the annotation at `path` (when `count`) and size its first samples,
    in one read."""
    p = Path(path)
    try:
        if not p.is_file():
            return Annotation()
        with p.open("rb") as f:
            if not count or p.stat().st_size > COUNT_BYTES:
                return Annotation(None, _sizes(f.read(SCAN_BYTES)))
            head, lines = bytearray(), 0
            for line in f:
                lines += bool(line.strip())
                if len(head) < SCAN_BYTES:
                    head += line
            return Annotation(lines, _sizes(bytes(head[:SCAN_BYTES])))
    except OSError:
        return Annotation()


def _sizes(head_bytes: bytes) -> tuple[tuple[int, int], ...]:
    """(text tokens, images) of each sample that starts in `head_bytes`: a .jsonl file's
    lines or a JSON array's items (cut off at the read limit)."""
    head = head_bytes.decode("utf-8", errors="replace")
    out: list[dict[str, Any]] = []
    if head.lstrip().startswith("["):
        dec, pos = json.JSONDecoder(), head.index("[") + 1
        while len(out) < SCAN_SAMPLES:
            while pos < len(head) and head[pos] in " \t\r\n,":
                pos += 1
            if pos >= len(head) or head[pos] == "]":
                break
            try:
                item, pos = dec.raw_decode(head, pos)
            except json.JSONDecodeError:
                break  # cut off at the read limit
            if isinstance(item, dict):
                out.append(item)
    else:
        for line in head.splitlines()[:SCAN_SAMPLES]:
            try:
                item = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(item, dict):
                out.append(item)
    return tuple(_size(item) for item in out)


def _size(item: dict[str, Any]) -> tuple[int, int]:
    """A sample's text tokens (its `length`, else UTF-8 bytes / 3 of the turns plus
    TURN_TOKENS each) and its number of images."""
    turns = item.get("conversations") or []
    images = item.get("image")
    n_images = len(images) if isinstance(images, list) else (1 if images else 0)
    if isinstance(item.get("length"), int):
        return item["length"], n_images
    values = [str(t.get("value", "")).replace("<image>", "") for t in turns]
    return sum(len(v.encode("utf-8")) for v in values) // 3 + TURN_TOKENS * len(turns), n_images


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
    meta = meta or read_meta(spec)
    for name, e in (meta.entries or {}).items():
        lines = meta.annotations.get(e["annotation"], Annotation()).lines
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
    out += meta.eval_problems
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
