"""Node 0's side of tracking=wandb / tracking=mlflow, around every engine's training process.

Before the engine starts, `internvl_chat/train/tracking.py open` (run by the nodes' python, which
has the package) puts the composed config (RUN_DIR/config.yaml) into the tracked run, under
`launch`, whichever engine trains. MLflow: it creates the run named after the run dir, or
continues the one RUN_DIR/tracking.json names, and the engine's own tracker (HF's MLflowCallback,
mmengine's MLflowVisBackend, our trainer) continues it through MLFLOW_RUN_ID. W&B: it opens the
run of id WANDB_RUN_ID with the config and finishes; the engine's `wandb.init` resumes that id
(our trainer logs the config itself, so W&B's open is skipped for it). After the engine exits,
`close` ends the run as the attempt ended: FAILED after a crash (W&B: exit code 1), KILLED when
saved for a requeue, else FINISHED where the engine left it RUNNING.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from launcher.contract import Plan
    from launcher.node.task import Tee
    from launcher.rundir import RunDir

SCRIPT = Path(__file__).resolve().parents[2] / "internvl_chat" / "train" / "tracking.py"


def _backend(env: Mapping[str, str]) -> str | None:
    if env.get("WANDB_RUN_ID"):
        return "wandb"
    return "mlflow" if env.get("MLFLOW_TRACKING_URI") else None


def _python(plan: Plan, env: Mapping[str, str]) -> str | None:
    """The tracker's python: the engine's own env's (XTuner's), else the plan's (run with -I:
    the script's folder must not shadow modules mlflow imports)."""
    if plan.engine_env is not None:
        return shutil.which("python", path=str(Path(plan.engine_env) / "bin"))
    return plan.python


def _script(plan: Plan, env: Mapping[str, str], args: list[str], tee: Tee) -> str | None:
    python = _python(plan, env)
    if not python:
        return None
    try:
        proc = subprocess.run(
            [python, "-I", str(SCRIPT), *args], env=dict(env), capture_output=True, text=True,
            timeout=300,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as e:
        tee.write(f"[launcher] tracking {args[0]}: {e}\n")
        return None
    if proc.returncode != 0:
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        tee.write(f"[launcher] tracking {args[0]} failed ({proc.returncode}): {tail}\n")
        return None
    return proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""


def open_run(run: RunDir, plan: Plan, env: Mapping[str, str], tee: Tee) -> dict[str, str]:
    """What to add to the engine's environment (MLflow: MLFLOW_RUN_ID)."""
    backend = _backend(env)
    from launcher.engines import get_engine

    # our trainer's tracker logs the config and ends its W&B run itself
    if backend is None or (backend == "wandb" and get_engine(plan.engine).wandb_by_itself):
        return {}
    run_id = _script(plan, env, ["open", str(run.root)], tee)
    if backend == "wandb" or not run_id:
        return {}
    tee.write(f"[launcher] tracking: MLflow run {run_id}\n")
    return {"MLFLOW_RUN_ID": run_id}


def close_run(run: RunDir, plan: Plan, env: Mapping[str, str], status: str, tee: Tee) -> None:
    """End the tracked run as the attempt ended (FINISHED, FAILED or KILLED)."""
    backend = _backend(env)
    if backend == "mlflow" or (backend == "wandb" and status == "FAILED"):
        _script(plan, env, ["close", str(run.root), status], tee)
