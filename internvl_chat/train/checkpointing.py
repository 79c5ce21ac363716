"""Checkpoints of a run: ``output_dir/checkpoint-N`` (save, find, resume) and the final model.

A checkpoint is written under a temporary name and renamed into place, so a visible
``checkpoint-N`` is complete. It holds the DeepSpeed engine state (``ds/``: weights,
optimizer, scheduler), the model in its own layout (so any checkpoint can be loaded or chatted
with) and ``trainer_state.json``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path


def complete_checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    """``checkpoint-N`` folders that were renamed into place (hence complete), oldest first."""
    found = []
    if output_dir.is_dir():
        for p in output_dir.iterdir():
            name = p.name
            complete = p.is_dir() and (p / "trainer_state.json").exists()
            if complete and name.startswith("checkpoint-") and name[11:].isdigit():
                found.append((int(name[11:]), p))
    return sorted(found)


class Checkpointer:
    """Saves and restores one run's state; every rank calls every method (collectives)."""

    def __init__(self, engine, dist, out: Path, *, tokenizer, zero_stage: int,
                 save_total_limit: int | None):  # fmt: skip
        self.engine, self.dist, self.out = engine, dist, out
        self.tokenizer, self.zero_stage, self.limit = tokenizer, zero_stage, save_total_limit

    def _gathered_state(self) -> dict | None:
        """Full weights in the model's own names (rank 0), gathered under ZeRO-3."""
        if self.zero_stage == 3:
            sd = self.engine._zero3_consolidated_16bit_state_dict()
            return sd if self.dist.is_main else None
        return self.engine.module.state_dict() if self.dist.is_main else None

    def save(self, step: int, epoch: float) -> None:
        from internvl_chat.model import save_model

        final = self.out / f"checkpoint-{step}"
        tmp = self.out / f".tmp-checkpoint-{step}"
        if self.dist.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        self.dist.barrier()
        self.engine.save_checkpoint(str(tmp), tag="ds")
        state = self._gathered_state()
        if self.dist.is_main:
            save_model(self.engine.module, tmp, state_dict=state, tokenizer=self.tokenizer)
            (tmp / "trainer_state.json").write_text(
                json.dumps({"global_step": step, "epoch": epoch}) + "\n"
            )
            shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)
            if self.limit:
                for _, old in complete_checkpoints(self.out)[: -self.limit]:
                    shutil.rmtree(old, ignore_errors=True)
        self.dist.barrier()

    def resume(self) -> tuple[int, Path] | None:
        """Load the newest complete checkpoint into the engine; its step and path, or None."""
        found = complete_checkpoints(self.out)
        if not found:
            return None
        step, path = found[-1]
        self.engine.load_checkpoint(str(path), tag="ds")
        return step, path

    def save_final(self) -> None:
        """The trained model in ``output_dir`` in the layout it was loaded from."""
        from internvl_chat.model import save_model

        state = self._gathered_state()
        if self.dist.is_main:
            save_model(self.engine.module, self.out, state_dict=state, tokenizer=self.tokenizer)
        self.dist.barrier()
