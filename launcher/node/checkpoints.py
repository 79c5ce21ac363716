"""Which checkpoints in an output dir can be resumed from: torch-free, the launcher's view.

Our trainer (docs/DESIGN.md, the reliability contract): `output_dir/checkpoint-N/` is VALID iff
it holds `COMPLETE.json` = {"step": N, "files": {"relpath": size, ...}} and every listed file
exists with that size. It is written as `checkpoint-N.tmp-*` and renamed, so a folder without
the marker is a save that never finished. The official InternVL script (HF Trainer) writes no
marker: there a checkpoint counts once `trainer_state.json` and DeepSpeed's `latest` (or a
`global_step*` folder) are in it. XTuner (mmengine) saves `iter_N.pth` (a file, or a folder
under DeepSpeed) and points `last_checkpoint` at the newest. Which rule a run follows is its
engine's (Engine.last_checkpoint_step); `last_step` asks it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from launcher.rundir import RunDir

MARKER = "COMPLETE.json"
_CKPT = re.compile(r"^checkpoint-(\d+)$")
_ITER = re.compile(r"^iter_(\d+)\.pth$")


def _numbered(folder: Path, pattern: re.Pattern[str]) -> list[tuple[int, Path]]:
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = pattern.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def problem(path: Path) -> str | None:
    """Why `path` (a checkpoint-N folder) is not a valid checkpoint, or None if it is."""
    m = _CKPT.match(path.name)
    if m is None:
        return "not named checkpoint-N"
    marker = path / MARKER
    if not marker.is_file():
        return f"no {MARKER} (the save did not finish)"
    try:
        record = json.loads(marker.read_text())
    except (OSError, ValueError) as e:
        return f"unreadable {MARKER}: {e}"
    if not isinstance(record, dict) or record.get("step") != int(m.group(1)):
        return f"{MARKER} is for step {record.get('step') if isinstance(record, dict) else '?'}"
    files = record.get("files")
    if not isinstance(files, dict) or not files:
        return f"{MARKER} lists no files"
    for rel, size in sorted(files.items()):
        f = path / rel
        if not f.is_file():
            return f"{rel} is missing"
        if f.stat().st_size != size:
            return f"{rel} has {f.stat().st_size} bytes, {MARKER} says {size}"
    return None


def valid_checkpoints(output_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, folder) of every valid checkpoint, oldest first."""
    return [(n, p) for n, p in _numbered(Path(output_dir), _CKPT) if problem(p) is None]


def invalid_checkpoints(output_dir: str | Path) -> list[tuple[Path, str]]:
    """(folder, reason) for each checkpoint-N that is not valid."""
    out = []
    for _, p in _numbered(Path(output_dir), _CKPT):
        why = problem(p)
        if why is not None:
            out.append((p, why))
    return out


def last_valid_step(output_dir: str | Path) -> int | None:
    found = valid_checkpoints(output_dir)
    return found[-1][0] if found else None


def newest_hf_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest HF-Trainer checkpoint (official engine) that holds its state and weights."""
    for _, p in reversed(_numbered(Path(output_dir), _CKPT)):
        if (p / "trainer_state.json").is_file() and (
            (p / "latest").is_file() or any(p.glob("global_step*"))
        ):
            return p
    return None


def newest_xtuner_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest `iter_N.pth` (XTuner/mmengine; a file, or a non-empty DeepSpeed folder)."""
    for _, p in reversed(_numbered(Path(output_dir), _ITER)):
        if (p.is_file() and p.stat().st_size > 0) or (p.is_dir() and any(p.iterdir())):
            return p
    return None


def last_step(run: RunDir, engine: str) -> int | None:
    """The step of the newest checkpoint a requeue would resume from: the engine's rule
    (Engine.last_checkpoint_step); our trainer's for a run dir that names no known engine."""
    from launcher.engines import ENGINES, get_engine

    if engine not in ENGINES:
        return last_valid_step(run.output_dir)
    return get_engine(engine).last_checkpoint_step(run)
