"""Rank 0's W&B or MLflow run (``report_to`` wandb / mlflow): the composed config as params and
every metrics-file record as metrics, at its optimizer step.

Where they go comes from the environment the launcher sets (launcher/config/tracking.py): W&B's
``WANDB_MODE/PROJECT/DIR/RUN_ID/...`` (offline unless asked), MLflow's ``MLFLOW_TRACKING_URI``
and ``MLFLOW_EXPERIMENT_NAME``. A resumed attempt continues the same run (same W&B id; the MLflow
run whose id RUN_DIR/tracking.json keeps) and logs only the steps past the last one the run
already has, so a step re-run after a requeue or `resume` is logged once (its first values).

Run as a script by the launcher's node side (launcher/node/tracking.py) for every engine:
``python tracking.py open RUN_DIR`` opens (or continues) the MLflow run with the composed config
as params and prints its id, which the engine's own tracker (HF's MLflowCallback, mmengine's
MLflowVisBackend) continues through ``MLFLOW_RUN_ID`` (W&B: the run of id WANDB_RUN_ID, which
the engine's ``wandb.init`` resumes); ``python tracking.py close RUN_DIR
STATUS`` ends it as the attempt ended (a crash: FAILED, even where mlflow's atexit said FINISHED).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

BACKENDS = ("wandb", "mlflow")
PREFIX = "launch"  # the composed config's key among the engine's own params (HF's, XTuner's)
STATE = "tracking.json"  # in the run dir: {"mlflow_run_id": ..., "last_step": N}


def read_state(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((run_dir / STATE).read_text())
    except (OSError, ValueError):
        return {}


def write_state(run_dir: Path, **values: Any) -> None:
    state = read_state(run_dir) | values
    tmp = run_dir / f".{STATE}.tmp"
    tmp.write_text(json.dumps(state) + "\n")
    tmp.replace(run_dir / STATE)


def load_params(params_file: str | Path | None) -> dict[str, Any]:
    if not params_file or not Path(params_file).is_file():
        return {}
    import yaml

    return yaml.safe_load(Path(params_file).read_text()) or {}


def mlflow_open(run_dir: Path, run_name: str, params: dict[str, Any]) -> tuple[Any, str, int]:
    """(client, run id, last step logged) of this run dir's MLflow run: the one whose id
    MLFLOW_RUN_ID or tracking.json names (set RUNNING again), else a new one named
    ``run_name`` with ``params`` flattened as its params, under ``launch.`` (``launch.model.name``)
    so that no engine's own params (HF's ``max_steps``, XTuner's ``model.type``) collide."""
    from mlflow.entities import Param
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    run_id = os.environ.get("MLFLOW_RUN_ID") or read_state(run_dir).get("mlflow_run_id")
    if run_id:
        client.update_run(run_id, status="RUNNING")
        metrics = client.get_run(run_id).data.metrics
        steps = [m.step for k in metrics for m in client.get_metric_history(run_id, k)]
        return client, run_id, max(steps, default=-1)
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "vlm-launch")
    exp = client.get_experiment_by_name(name)
    exp_id = exp.experiment_id if exp else client.create_experiment(name)
    tags = json.loads(os.environ.get("MLFLOW_TAGS", "{}"))
    run_id = client.create_run(exp_id, run_name=run_name, tags=tags).info.run_id
    flat = flatten(params, f"{PREFIX}.").items()
    batch = [Param(k, (v if isinstance(v, str) else json.dumps(v))[:6000]) for k, v in flat]
    for i in range(0, len(batch), 100):  # MLflow takes 100 params per batch
        client.log_batch(run_id, params=batch[i : i + 100])
    if run_dir.is_dir():
        write_state(run_dir, mlflow_run_id=run_id)
    return client, run_id, -1


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(data, dict):
        return {prefix.rstrip("."): data}
    out: dict[str, Any] = {}
    for k, v in data.items():
        out |= flatten(v, f"{prefix}{k}.") if isinstance(v, dict) and v else {f"{prefix}{k}": v}
    return out


def _numbers(rec: dict) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in rec.items()
        if k != "step" and isinstance(v, int | float) and not isinstance(v, bool)
    }


class Tracker:
    """One tracker run; `log` takes the records the trainer writes to its metrics file."""

    def __init__(self, backend: str, run_name: str | None, params_file: str | None):
        self.backend, self.run_name = backend, run_name
        self.params_file = params_file
        self.run_dir = Path(params_file).parent if params_file else None
        self.run = self.client = self.run_id = None
        self.last_step = -1  # steps up to here are in the tracked run already

    def params(self) -> dict[str, Any]:
        return load_params(self.params_file)

    def start(self) -> None:
        if self.backend == "wandb":
            import wandb

            # project, entity, tags, mode, dir, id and resume come from WANDB_* variables
            self.run = wandb.init(name=self.run_name, config={PREFIX: self.params()})
            self.last_step = read_state(self.run_dir).get("last_step", -1) if self.run_dir else -1
        else:
            run_dir = self.run_dir or Path(".")
            opened = mlflow_open(run_dir, self.run_name or run_dir.name, self.params())
            self.client, self.run_id, self.last_step = opened

    def log(self, rec: dict) -> None:
        values, step = _numbers(rec), int(rec.get("step", 0))
        if step <= self.last_step:  # re-run after a requeue or resume: logged already
            return
        if self.run is not None:
            self.run.log(values, step=step)
            if self.run_dir and self.run_dir.is_dir():
                write_state(self.run_dir, last_step=step)
        elif self.client is not None:
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            metrics = [Metric(k, v, now, step) for k, v in values.items()]
            self.client.log_batch(self.run_id, metrics=metrics)
        self.last_step = step

    def close(self, status: str = "FINISHED") -> None:
        """End the run: FINISHED, FAILED (W&B: exit code 1) or KILLED (stopped for a requeue)."""
        if self.run is not None:
            self.run.finish(exit_code=0 if status == "FINISHED" else 1)
            self.run = None
        elif self.client is not None:
            self.client.set_terminated(self.run_id, status=status)
            self.client = None


def _wandb_touch(run_dir: Path, params: dict[str, Any] | None, exit_code: int) -> None:
    """Open this run dir's W&B run (its id: WANDB_RUN_ID, resume allowed), add ``params``
    under ``launch``, finish with ``exit_code``: the engine's own run continues it by id."""
    import wandb

    config = {PREFIX: params} if params is not None else None
    wandb.init(name=run_dir.name, config=config).finish(exit_code=exit_code)


def main(argv: list[str]) -> int:
    """``open RUN_DIR``: the composed config into the tracked run (MLflow: print its id);
    ``close RUN_DIR STATUS``: end the run with STATUS (FINISHED only ends an MLflow run its
    engine left RUNNING; FAILED and KILLED always hold; W&B: FAILED is a run exit code 1)."""
    if len(argv) < 2 or argv[0] not in ("open", "close"):
        print("usage: tracking.py open RUN_DIR | close RUN_DIR STATUS", file=sys.stderr)
        return 2
    run_dir, wandb = Path(argv[1]), bool(os.environ.get("WANDB_RUN_ID"))
    if argv[0] == "open":
        params = load_params(run_dir / "config.yaml")
        if wandb:
            _wandb_touch(run_dir, params, 0)
        else:
            print(mlflow_open(run_dir, run_dir.name, params)[1])
        return 0
    if wandb:
        if argv[2] == "FAILED":
            _wandb_touch(run_dir, None, 1)
        return 0
    run_id = os.environ.get("MLFLOW_RUN_ID") or read_state(run_dir).get("mlflow_run_id")
    if run_id:
        from mlflow.tracking import MlflowClient

        client = MlflowClient()
        # a crashed engine's run is RUNNING, or FINISHED by mlflow's atexit end_run()
        if argv[2] != "FINISHED" or client.get_run(run_id).info.status == "RUNNING":
            client.set_terminated(run_id, status=argv[2])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
