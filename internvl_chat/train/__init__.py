"""Node-side trainer: InternVL chat finetune with a plain DeepSpeed loop.

`torchrun --nproc_per_node N -m internvl_chat.train RUN_DIR/train_args.json`
(or `python -m internvl_chat.train ARGS.json` for one process without torchrun)

ARGS.json is one flat object with the official argument names (docs/DESIGN.md, "Contract:
internvl_chat.train"). Outputs: HF-Trainer-style log lines on stdout (rank 0),
``metrics_file`` JSON Lines (one object per optimizer step), TensorBoard events under
``output_dir/runs``, ``output_dir/checkpoint-N`` every ``save_steps``, and the final model in
``output_dir`` in the layout it was loaded from.

Reliability (docs/DESIGN.md, contract with the launcher): the run always resumes from the
newest valid checkpoint in ``output_dir`` (or ``resume_from_checkpoint``); on a stop request
(``stop_file`` exists, or SIGUSR1) every rank saves at the next optimizer step and the process
exits 75. Exit codes: 0 finished all steps, 75 saved on request (requeue), 2 bad arguments,
1 any other failure (a checkpoint that cannot be written prints
``[train] error: cannot write checkpoint PATH: REASON``).

Modules: ``args`` (the contract, torch-free), ``schedule``, ``build`` (model, data,
optimizer), ``distributed``, ``checkpointing``, ``metrics`` and ``trainer`` (the loop).
"""

from __future__ import annotations

import sys

from internvl_chat.train.args import ArgsError, TrainArgs, parse_args, read_args

__all__ = ["ArgsError", "TrainArgs", "main", "parse_args", "read_args", "run"]


def run(a: TrainArgs) -> dict:
    """Train with the given arguments (see :func:`internvl_chat.train.trainer.run`)."""
    from internvl_chat.train.trainer import run as _run

    return _run(a)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or not argv[0].endswith(".json"):
        print("usage: python -m internvl_chat.train ARGS.json", file=sys.stderr)
        return 2
    from internvl_chat.train.checkpointing import CheckpointWriteError
    from internvl_chat.train.stop import EXIT_REQUEUE, StopRequested

    try:
        args = read_args(argv[0])
        run(args)
    except ArgsError as e:
        # one line, so the launcher's failure reason carries the offending setting
        problems = "; ".join(ln.strip() for ln in str(e).splitlines() if ln.strip())
        print(f"internvl_chat.train: bad arguments: {problems}", file=sys.stderr)
        return 2
    except StopRequested:
        return EXIT_REQUEUE
    except CheckpointWriteError as e:
        print(f"[train] error: {e}", file=sys.stderr, flush=True)
        return 1
    return 0
