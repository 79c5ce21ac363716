"""Experiment tracking, the `tracking` config group: tensorboard (default), wandb, mlflow, none.

Every engine gets the same choice: our trainer logs the metrics.jsonl records and the composed
config itself (internvl_chat/train/tracking.py), the official engine through HF's `report_to`
callbacks, XTuner through mmengine's visualizer backends. The run name is the run dir's name.
What the nodes need is set in their environment (`env`): W&B offline unless
`tracking.mode=online`; MLflow in a file store in the run dir unless `tracking.uri=` names a
server. The packages live in the nodes' environment only, never in the launcher's.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from launcher.problems import Problem

if TYPE_CHECKING:
    from launcher.config.spec import JobSpec
    from launcher.rundir import RunDir


@dataclass(frozen=True, slots=True, kw_only=True)
class TrackingSpec:
    name: str = "tensorboard"
    """The option chosen (conf/tracking/NAME.yaml)."""
    backend: Literal["tensorboard", "wandb", "mlflow", "none"] = "tensorboard"
    """Where metrics go besides metrics.jsonl: TensorBoard events in output/runs, W&B, MLflow."""
    project: str = "vlm-launch"
    """W&B project / MLflow experiment name."""
    entity: str | None = None
    """W&B entity (team or user); null: the account's default."""
    tags: tuple[str, ...] = ()
    """W&B tags / MLflow run tags (tag=true)."""
    mode: Literal["offline", "online"] = "offline"
    """W&B: offline writes RUN_DIR/wandb only (`wandb sync` it later); online syncs live."""
    uri: str | None = None
    """MLflow tracking URI; null: a file store in RUN_DIR/mlruns."""


# The module each backend needs in the nodes' python.
PACKAGES = {"wandb": "wandb", "mlflow": "mlflow"}


def report_to(t: TrackingSpec) -> str:
    """HF TrainingArguments.report_to for this choice (our trainer reads the same name)."""
    return t.backend


def mlflow_uri(t: TrackingSpec, run: RunDir) -> str:
    return t.uri or run.mlruns_dir.as_uri()


def run_id(run: RunDir) -> str:
    """A W&B run id stable for the run dir, so a resumed attempt continues the same run."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", run.root.name)[:64]


def env(t: TrackingSpec, run: RunDir) -> dict[str, str]:
    """What every engine's tracker reads on the nodes (W&B's and MLflow's own variables)."""
    if t.backend == "wandb":
        out = {
            "WANDB_MODE": t.mode,
            "WANDB_PROJECT": t.project,
            "WANDB_DIR": str(run.root),
            "WANDB_NAME": run.root.name,
            "WANDB_RUN_ID": run_id(run),
            "WANDB_RESUME": "allow",
            "WANDB_SILENT": "true",
        }
        if t.entity:
            out["WANDB_ENTITY"] = t.entity
        if t.tags:
            out["WANDB_TAGS"] = ",".join(t.tags)
        return out
    if t.backend == "mlflow":
        out = {
            "MLFLOW_TRACKING_URI": mlflow_uri(t, run),
            "MLFLOW_EXPERIMENT_NAME": t.project,
        }
        if t.uri is None:  # MLflow 3 refuses its file store unless asked for it
            out["MLFLOW_ALLOW_FILE_STORE"] = "true"
        if t.tags:
            out["MLFLOW_TAGS"] = "{" + ", ".join(f'"{x}": "true"' for x in t.tags) + "}"
        return out
    return {}


def check(spec: JobSpec, python: str, *, supported: bool = True) -> list[Problem]:
    """Settings of another backend are refused, and the backend's package must be importable by
    the python that runs the tracker on the nodes (the XTuner env's for model.engine=xtuner);
    an interpreter this machine cannot run is not checked. `python` is the tracker's
    interpreter (launcher.plan.check.tracker_python); `supported` is False for an engine
    without tracking (Engine.tracks)."""
    t = spec.tracking
    package = PACKAGES.get(t.backend)
    problems = []
    if not supported and t.backend in PACKAGES:
        message = f"not supported for model.engine={spec.model.engine}"
        problems.append(Problem(f"tracking={t.name}", message))
        return problems
    if t.backend != "wandb" and (t.entity or t.mode != "offline"):
        problems.append(
            Problem("tracking", f"entity and mode are W&B settings (backend {t.backend})")
        )
    if t.backend != "mlflow" and t.uri:
        problems.append(Problem("tracking.uri", f"an MLflow setting (backend {t.backend})"))
    exe = shutil.which(python) if os.sep not in python else python
    if package is None or exe is None or not os.access(exe, os.X_OK):
        return problems
    code = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({package!r}) is None)"
    try:
        found = subprocess.run([exe, "-c", code], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return problems
    if not found:
        problems.append(
            Problem(
                f"tracking={t.name}",
                f"{python} (the nodes' python for model.engine={spec.model.engine}) has no "
                f"{package!r}: pip install {package} there, or pick another tracking",
            )
        )
    return problems


def xtuner_visualizer(t: TrackingSpec, run: RunDir) -> str:
    """Lines for xtuner_config.py: mmengine's visualizer with LocalVisBackend (its vis_data
    becomes metrics.jsonl) and the tracker's backend, which gets the same scalars at the same
    iterations and XTuner's own config as params; '' for tensorboard (mmengine's default
    LocalVisBackend is kept as it was) and none."""
    if t.backend not in PACKAGES:
        return ""
    if t.backend == "wandb":  # project, entity, tags, mode, id: the WANDB_* variables; dir:
        # mmengine would put it under output/*/vis_data, away from the run's RUN_DIR/wandb
        init = {"name": run.root.name, "dir": str(run.root)}
        cls, kwargs = "WandbVisBackend", {"init_kwargs": init}
    else:
        tags = dict.fromkeys(t.tags, "true") or None
        cls = "MLflowVisBackend"
        kwargs = {"exp_name": t.project, "run_name": run.root.name, "tags": tags}
        kwargs["tracking_uri"] = mlflow_uri(t, run)
    return (
        f"\n# tracking={t.name} (launcher/config/tracking.py)\n"
        f"from mmengine.visualization import LocalVisBackend, {cls}, Visualizer\n\n"
        "visualizer = dict(type=Visualizer, vis_backends=[dict(type=LocalVisBackend), "
        f"dict(type={cls}, {', '.join(f'{k}={v!r}' for k, v in kwargs.items())})])\n"
    )
