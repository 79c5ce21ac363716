"""Checkpoints of a run: ``output_dir/checkpoint-N`` (atomic save, newest-valid scan, resume).

A checkpoint is written as ``checkpoint-N.tmp-TOKEN`` by every rank and renamed into place by
rank 0 once ``COMPLETE.json`` = ``{"step": N, "files": {relpath: size, ...}}`` is in it. It is
VALID iff that marker is there and every listed file exists with that size; the launcher uses
the same rule (torch-free) to find the last valid step. It holds the DeepSpeed engine state
(``ds/``: weights, optimizer, scheduler), one ``rng_state_R.pth`` per rank, the model in its
own layout (so any checkpoint can be loaded or chatted with) and ``trainer_state.json`` (step
and data position).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from internvl_chat.train.args import ArgsError

MARKER = "COMPLETE.json"
_PREFIX = "checkpoint-"


class CheckpointWriteError(Exception):
    """Saving failed for a reason on the storage side (full disk, no permission)."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"cannot write checkpoint {path}: {reason}")
        self.path, self.reason = path, reason


# ---------------------------------------------------------------- the validity rule (torch-free)


def checkpoint_problem(path: Path, step: int) -> str | None:
    """Why ``path`` (``checkpoint-<step>``) is not a valid checkpoint, or None if it is."""
    marker = path / MARKER
    try:
        text = marker.read_text(encoding="utf-8")
    except FileNotFoundError:
        return f"no {MARKER} (half-written)"
    except OSError as e:
        return f"cannot read {MARKER}: {e.strerror}"
    try:
        m = json.loads(text)
    except json.JSONDecodeError as e:
        return f"{MARKER} is not valid JSON ({e.msg})"
    if not isinstance(m, dict) or not isinstance(m.get("files"), dict):
        return f"{MARKER} has no files table"
    if m.get("step") != step:
        return f"{MARKER} says step {m.get('step')!r}, the folder name says {step}"
    for rel, size in sorted(m["files"].items()):
        try:
            have = (path / rel).stat().st_size
        except OSError:
            return f"{rel} is missing"
        if have != size:
            return f"{rel} has {have} bytes, {MARKER} lists {size}"
    return None


def scan(output_dir: Path) -> tuple[list[tuple[int, Path]], list[tuple[Path, str]]]:
    """``(valid, invalid)``: valid ``(step, path)`` oldest first; invalid ``(path, reason)``."""
    valid, invalid = [], []
    if output_dir.is_dir():
        for p in sorted(output_dir.iterdir()):
            name = p.name
            if not (p.is_dir() and name.startswith(_PREFIX) and name[len(_PREFIX) :].isdigit()):
                continue
            step = int(name[len(_PREFIX) :])
            problem = checkpoint_problem(p, step)
            if problem is None:
                valid.append((step, p))
            else:
                invalid.append((p, problem))
    return sorted(valid), invalid


def prune(output_dir: Path, limit: int) -> None:
    """Keep the newest ``limit`` (>= 1) valid checkpoints, so never the newest valid one, and
    remove invalid ones older than it (an earlier crash's leftovers)."""
    valid, invalid = scan(output_dir)
    if not valid:
        return
    newest = valid[-1][0]
    for _, old in valid[: -max(limit, 1)]:
        shutil.rmtree(old, ignore_errors=True)
    for path, _ in invalid:
        if int(path.name[len(_PREFIX) :]) < newest:
            shutil.rmtree(path, ignore_errors=True)


def write_marker(folder: Path, step: int) -> None:
    """List every file under ``folder`` with its size in ``folder/COMPLETE.json``."""
    files = {
        str(f.relative_to(folder)): f.stat().st_size
        for f in sorted(folder.rglob("*"))
        if f.is_file() and f.name != MARKER
    }
    tmp = folder / f"{MARKER}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump({"step": step, "files": files}, fh, indent=1)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, folder / MARKER)


def _write_failure(e: BaseException, folder: Path) -> str | None:
    """The storage reason behind a failed write, or None if ``e`` is not a storage failure.

    torch.save reports a full disk or a filesystem gone read-only as a bare RuntimeError from
    its zip writer, so those are recognised by their message, the mount flags and the free
    space left.
    """
    if isinstance(e, OSError):
        return e.strerror or str(e)
    text = str(e)
    if "No space left" in text:
        return os.strerror(28)
    if "inline_container" in text or "PytorchStreamWriter" in text or "I/O error" in text:
        try:
            if os.statvfs(folder).f_flag & os.ST_RDONLY:
                return os.strerror(30)  # EROFS: the filesystem went read-only under the write
            if shutil.disk_usage(folder).free < 64 * 2**20:
                return os.strerror(28)  # ENOSPC
        except OSError:
            pass
        return text.splitlines()[0]
    return None


# ---------------------------------------------------------------- RNG


def rng_state() -> dict:
    import random

    import numpy as np
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}  # fmt: skip
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    import random

    import numpy as np
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------- save / resume


class Checkpointer:
    """Saves and restores one run's state; every rank calls every method (collectives)."""

    def __init__(self, engine, dist, out: Path, *, tokenizer, zero_stage: int,
                 save_total_limit: int | None):  # fmt: skip
        self.engine, self.dist, self.out = engine, dist, out
        self.tokenizer, self.zero_stage, self.limit = tokenizer, zero_stage, save_total_limit
        token = [f"{os.getpid()}"]
        dist.dist.broadcast_object_list(token, src=0)
        self.token = token[0]  # one temporary name that every rank writes into

    def _gathered_state(self) -> dict | None:
        """Full weights in the model's own names (rank 0), gathered under ZeRO-3."""
        if self.zero_stage == 3:
            sd = self.engine._zero3_consolidated_16bit_state_dict()
            return sd if self.dist.is_main else None
        return self.engine.module.state_dict() if self.dist.is_main else None

    def save(self, step: int, trainer_state: dict) -> Path:
        """Write ``checkpoint-<step>`` atomically; prune to ``save_total_limit`` valid ones.

        A storage failure raises CheckpointWriteError on the rank that hit it, after removing
        its temporary folder; the checkpoints already there are left as they were.
        """
        import torch

        from internvl_chat.model import save_model

        final = self.out / f"{_PREFIX}{step}"
        tmp = self.out / f"{_PREFIX}{step}.tmp-{self.token}"
        main = self.dist.is_main
        try:
            if main:
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir(parents=True)
            self.dist.barrier()
            self.engine.save_checkpoint(str(tmp), tag="ds")
            torch.save(rng_state(), tmp / f"rng_state_{self.dist.rank}.pth")
            state = self._gathered_state()
            if main:
                save_model(self.engine.module, tmp, state_dict=state, tokenizer=self.tokenizer)
                (tmp / "trainer_state.json").write_text(json.dumps(trainer_state) + "\n")
            self.dist.barrier()  # every rank's files are in tmp
            if main:
                write_marker(tmp, step)
                self._replace(tmp, final)
        except Exception as e:
            reason = _write_failure(e, tmp if tmp.exists() else self.out)
            if reason is None:
                raise
            shutil.rmtree(tmp, ignore_errors=True)
            raise CheckpointWriteError(final, reason) from e
        if main and self.limit:
            prune(self.out, self.limit)
        self.dist.barrier()
        return final

    def _replace(self, tmp: Path, final: Path) -> None:
        old = None
        if final.exists():  # an invalid one left by an earlier attempt, or the same step again
            old = final.with_name(f"{tmp.name}-old")
            final.rename(old)
        tmp.rename(final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def remove_stale_temporaries(self) -> None:
        """Rank 0: remove ``checkpoint-N.tmp-*`` folders an interrupted save left behind."""
        if self.dist.is_main and self.out.is_dir():
            for p in self.out.glob(f"{_PREFIX}*.tmp-*"):
                print(f"[train] removing unfinished {p}", flush=True)
                shutil.rmtree(p, ignore_errors=True)
        self.dist.barrier()

    def resume(self, named: str | None = None) -> tuple[int, Path, dict] | None:
        """Load the newest valid checkpoint (or ``named``): ``(step, path, trainer_state)``.

        Invalid checkpoints, and valid ones whose loading fails on any rank, are skipped with a
        ``[train] skipping PATH: REASON`` line; the one before is tried next.
        """
        say = self.dist.is_main
        if named is not None:
            path = Path(named)
            step = _step_of(path)
            problem = checkpoint_problem(path, step) if step is not None else "not checkpoint-N"
            if problem is not None:
                raise ArgsError(f"resume_from_checkpoint {path}: {problem}")
            candidates = [(step, path)]
        else:
            valid, invalid = scan(self.out)
            for path, reason in invalid:
                if say:
                    print(f"[train] skipping {path}: {reason}", flush=True)
            candidates = valid[::-1]
        for step, path in candidates:
            error = self._load(path)
            (failed,) = self.dist.allmax([1.0 if error else 0.0])
            if not failed:
                return step, path, json.loads((path / "trainer_state.json").read_text())
            if error is None:
                error = "loading failed on another rank"
            if named is not None:
                raise ArgsError(f"resume_from_checkpoint {path}: {error}")
            if say:
                print(f"[train] skipping {path}: {error}", flush=True)
        return None

    def _load(self, path: Path) -> str | None:
        import torch

        try:
            loaded, _ = self.engine.load_checkpoint(str(path), tag="ds")
            if loaded is None:
                return "DeepSpeed found no engine state under ds/"
            rng = path / f"rng_state_{self.dist.rank}.pth"
            if rng.exists():
                set_rng_state(torch.load(rng, weights_only=False))
            else:  # saved by a job with fewer ranks: the weights still resume
                print(f"[train] {rng.name} not in {path}: rank {self.dist.rank} keeps its own "
                      "random state", flush=True)  # fmt: skip
            json.loads((path / "trainer_state.json").read_text())
        except Exception as e:  # any reason to fall back to the checkpoint before
            first = str(e).splitlines()[0] if str(e) else ""
            return f"loading failed: {type(e).__name__}: {first}"
        return None

    def save_final(self) -> None:
        """The trained model in ``output_dir`` in the layout it was loaded from."""
        from internvl_chat.model import save_model

        state = self._gathered_state()
        if self.dist.is_main:
            save_model(self.engine.module, self.out, state_dict=state, tokenizer=self.tokenizer)
        self.dist.barrier()


def _step_of(path: Path) -> int | None:
    rest = path.name[len(_PREFIX) :]
    return int(rest) if path.name.startswith(_PREFIX) and rest.isdigit() else None
