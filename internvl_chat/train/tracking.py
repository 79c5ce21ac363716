"""Rank 0's W&B or MLflow run (``report_to`` wandb / mlflow): the composed config as params and
every metrics-file record as metrics, at its optimizer step.

Where they go comes from the environment the launcher sets (launcher/tracking.py): W&B's
``WANDB_MODE/PROJECT/DIR/RUN_ID/...`` (offline unless asked), MLflow's ``MLFLOW_TRACKING_URI``
and ``MLFLOW_EXPERIMENT_NAME``. A resumed attempt continues the same run (same W&B id, the
MLflow run of the same name), so each step is logged once per attempt that reaches it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

BACKENDS = ("wandb", "mlflow")


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
        self.run = self.client = self.run_id = None

    def params(self) -> dict[str, Any]:
        if not self.params_file or not Path(self.params_file).is_file():
            return {}
        import yaml

        return yaml.safe_load(Path(self.params_file).read_text()) or {}

    def start(self) -> None:
        if self.backend == "wandb":
            import wandb

            # project, entity, tags, mode, dir, id and resume come from WANDB_* variables
            self.run = wandb.init(name=self.run_name, config=self.params())
        else:
            from mlflow.tracking import MlflowClient

            self.client = client = MlflowClient()
            name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "vlm-launch")
            exp = client.get_experiment_by_name(name)
            exp_id = exp.experiment_id if exp else client.create_experiment(name)
            earlier = client.search_runs(
                [exp_id], filter_string=f"attributes.run_name = '{self.run_name}'"
            )
            if earlier:  # a resumed attempt: the same run, its params already logged
                self.run_id = earlier[0].info.run_id
                client.update_run(self.run_id, status="RUNNING")
                return
            tags = json.loads(os.environ.get("MLFLOW_TAGS", "{}"))
            self.run_id = client.create_run(exp_id, run_name=self.run_name, tags=tags).info.run_id
            from mlflow.entities import Param

            flat = flatten(self.params()).items()
            params = [
                Param(k, (v if isinstance(v, str) else json.dumps(v))[:6000]) for k, v in flat
            ]
            for i in range(0, len(params), 100):  # MLflow takes 100 params per batch
                client.log_batch(self.run_id, params=params[i : i + 100])

    def log(self, rec: dict) -> None:
        values, step = _numbers(rec), int(rec.get("step", 0))
        if self.run is not None:
            self.run.log(values, step=step)
        elif self.client is not None:
            import time

            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            metrics = [Metric(k, v, now, step) for k, v in values.items()]
            self.client.log_batch(self.run_id, metrics=metrics)

    def close(self, status: str = "FINISHED") -> None:
        if self.run is not None:
            self.run.finish(exit_code=0 if status == "FINISHED" else 1)
            self.run = None
        elif self.client is not None:
            self.client.set_terminated(self.run_id, status=status)
            self.client = None
