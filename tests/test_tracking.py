"""tracking=tensorboard|wandb|mlflow|none: checked before anything is written, set on the nodes,
read back from MLflow's file store with MlflowClient (`read_back_mlflow`, called by
tests/test_e2e.py's local training run with tracking=mlflow) and from W&B's offline run files
(our trainer's tracker in the plan's environment: WANDB_MODE=offline, never the network)."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from launcher.config import compose as composing
from launcher.config.spec import ConfigError
from launcher.node import tracking as tracking_node
from launcher.submit.pipeline import plan_from_config

REPO = Path(__file__).resolve().parent.parent
LAUNCHER_PY = REPO / ".venv-launcher" / "bin" / "python"  # no wandb, no mlflow there


def _plan(tmp_path: Path, *overrides: str):
    cfg, problems = composing.compose(
        [
            *overrides,
            f"run_dir={tmp_path / 'run'}",
            f"cache_dir={tmp_path / 'cache'}",
            "check_data=false",
        ]
    )
    return plan_from_config(cfg, problems)


def test_every_problem_at_once_nothing_planned(tmp_path):
    cfg, problems = composing.compose(["tracking=wandb", "tracking.projct=x"])
    assert [(p.setting, p.message) for p in problems] == [
        ("tracking.projct", "unknown setting (did you mean 'tracking.project'?)")
    ]
    assert (
        not LAUNCHER_PY.exists()
        or "wandb"
        not in subprocess.run(
            [str(LAUNCHER_PY), "-m", "pip", "list"], capture_output=True, text=True
        ).stdout
    )
    bad = ["tracking=wandb", "tracking.uri=http://x", f"cluster.python={LAUNCHER_PY}"]
    with pytest.raises(ConfigError) as e:
        _plan(tmp_path, *bad)
    said = {p.setting: p.message for p in e.value.problems}
    assert said["tracking.uri"] == "an MLflow setting (backend wandb)"
    if LAUNCHER_PY.exists():  # the login-only env has neither package: a check problem
        assert "has no 'wandb': pip install wandb there" in said["tracking=wandb"]
    assert not (tmp_path / "run").exists()
    launcher_reqs = (REPO / "requirements-launcher.txt").read_text()
    assert "wandb" not in launcher_reqs and "mlflow" not in launcher_reqs


def test_plan_sets_each_engine_up(tmp_path):
    plan, _ = _plan(tmp_path, "tracking=wandb", "tracking.tags=[a,b]")
    env = plan.node_launch[0].env
    assert env["WANDB_MODE"] == "offline" and env["WANDB_TAGS"] == "a,b"
    assert env["WANDB_DIR"] == str(tmp_path / "run") and env["WANDB_NAME"] == "run"
    args = json.loads(plan.files["train_args.json"])
    assert (args["report_to"], args["run_name"]) == ("wandb", "run")
    plan, _ = _plan(tmp_path, "tracking=mlflow", "nodes=2")
    assert plan.node_launch[1].env["MLFLOW_TRACKING_URI"] == (tmp_path / "run" / "mlruns").as_uri()
    plan, _ = _plan(tmp_path, "tracking=none")
    assert json.loads(plan.files["train_args.json"])["report_to"] == "none"
    assert not any(k.startswith(("WANDB", "MLFLOW")) for k in plan.node_launch[0].env)
    # the official engine: only HF's names, so its own callbacks do the logging
    plan, _ = _plan(
        tmp_path, "model=internvl2_1b", "hw=h100", "model.engine=internvl_official",
        "model.internvl_root=/src/InternVL", "model.internvl_revision=head", "data=ui_dataset",
        "tracking=mlflow", f"cluster.python={sys.executable}", "dry_run=true",
    )  # fmt: skip
    args = json.loads(plan.files["train_args.json"])
    assert (args["report_to"], args["run_name"], "tracking_params" in args) == (
        "mlflow",
        "run",
        False,
    )


@pytest.mark.slow
@pytest.mark.xtuner
def test_xtuner_config_builds_the_visualizer(tmp_path):
    """The rendered config, read by mmengine in the XTuner env, builds LocalVisBackend (vis_data:
    metrics.jsonl) beside MLflow's backend pointed at the run dir's store."""
    xpy = REPO / ".venv-xtuner" / "bin" / "python"
    if not xpy.exists():
        pytest.skip("no .venv-xtuner (bash xtuner_cfgs/make_env.sh)")
    plan, _ = _plan(
        tmp_path, "model=tiny_llava", "data=synthetic_llava", "tracking=mlflow",
        "tracking.tags=[a]", f"+engine_args.xtuner_env={Path(sys.executable).parents[1]}", "dry_run=true",
    )  # fmt: skip
    for name, text in plan.files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    code = (
        "from mmengine.config import Config; from mmengine.registry import VISUALIZERS; "
        "c = Config.fromfile('xtuner_config.py'); "
        "v = VISUALIZERS.build(dict(**c.visualizer, name='t', save_dir='vis')); "
        "b = v._vis_backends['MLflowVisBackend']; "
        "print(sorted(v._vis_backends), b._tracking_uri, b._run_name, b._tags)"
    )
    r = subprocess.run([str(xpy), "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    uri = (tmp_path / "run" / "mlruns").as_uri()
    assert r.stdout.split() == [
        "['LocalVisBackend',",
        "'MLflowVisBackend']",
        uri,
        "run",
        "{'a':",
        "'true'}",
    ]


def read_back_mlflow(run_dir: Path, rows: list[dict], experiment: str = "vlm-launch") -> None:
    """The run's MLflow file store, read with MlflowClient, holds one finished run named after
    the run dir, the composed config as params and every metrics.jsonl record at its step.
    (tests/test_e2e.py's local run trains with tracking=mlflow and calls this.)"""
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    client = MlflowClient((run_dir / "mlruns").as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert (run.info.run_name, run.info.status) == (run_dir.name, "FINISHED")
    assert run.data.params["launch.model.name"] == "tiny_internvl"
    assert run.data.params["launch.max_steps"] == str(len(rows))
    assert json.loads((run_dir / "tracking.json").read_text())["mlflow_run_id"] == run.info.run_id
    for key in ("loss", "lr", "tokens_per_sec"):
        got = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]
        assert got == [(x["step"], pytest.approx(x[key])) for x in rows], key


def wandb_records(path: Path):
    """The records of a W&B offline run file (LevelDB-log framing: 32 KiB blocks of
    crc/length/type-prefixed chunks after a 7-byte ':W&B' header), as protobufs."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, buf = path.read_bytes(), 7, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:
            pos += 32768 - pos % 32768
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        buf, pos = buf + data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 0 and length == 0:
            break
        if kind in (1, 4):  # a whole record, or the last chunk of one
            rec = pb.Record()
            rec.ParseFromString(buf)
            buf = b""
            yield rec


def test_wandb_offline_run_read_back(tmp_path, monkeypatch):
    """Our trainer's tracker (rank 0's, torch-free) with real W&B, in the environment the plan
    sets for tracking=wandb: the offline run's files hold the run name, project, tags, the
    composed config and one history row per record, at its step."""
    plan, _ = _plan(tmp_path, "tracking=wandb", "tracking.tags=[sweep1]", "tracking.project=p1")
    for k, v in plan.node_launch[0].env.items():
        if k.startswith("WANDB_"):
            monkeypatch.setenv(k, v)
    assert os.environ["WANDB_MODE"] == "offline"  # never the network
    config = tmp_path / "config.yaml"
    config.write_text(plan.files["config.yaml"])
    (tmp_path / "run").mkdir()
    from internvl_chat.train.tracking import Tracker

    rows = [
        {"step": s, "loss": 2.0 / s, "lr": 1e-4, "tokens": 300 + s, "note": "x"} for s in (1, 2, 3)
    ]
    tracker = Tracker("wandb", "run", str(config))
    tracker.start()
    for rec in rows:
        tracker.log(rec)
    tracker.close()
    import wandb

    wandb.teardown()  # what the trainer's exit does: wait for W&B's service to write the file
    (path,) = (tmp_path / "run").glob("wandb/offline-run-*/run-*.wandb")
    history, meta = [], None
    for rec in wandb_records(path):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            meta = rec.run
        elif kind == "history":
            history.append(
                {
                    i.key or "/".join(i.nested_key): json.loads(i.value_json)
                    for i in rec.history.item
                }
            )
    assert (meta.display_name, meta.project, list(meta.tags)) == ("run", "p1", ["sweep1"])
    assert meta.run_id == "run"
    config = {i.key: json.loads(i.value_json) for i in meta.config.update}["launch"]
    assert config["model"]["name"] == "tiny_internvl" and config["tracking"]["backend"] == "wandb"
    got = [(h["_step"], h["loss"], h["tokens"], "note" in h) for h in history if "loss" in h]
    assert got == [(x["step"], pytest.approx(x["loss"]), x["tokens"], False) for x in rows]


@pytest.mark.slow
def test_official_engine_logs_through_hf_callbacks(tmp_path, monkeypatch):
    """The official engine trains with HF's Trainer, so its tracking is HF's own callback: given
    the plan's report_to, run_name and node env, HF's MLflowCallback writes the run into the
    run dir's file store (a one-layer model stands in for InternVL: the callback is the same)."""
    import torch
    from transformers import Trainer, TrainingArguments

    plan, _ = _plan(
        tmp_path, "model=internvl2_1b", "hw=h100", "model.engine=internvl_official",
        "model.internvl_root=/src/InternVL", "model.internvl_revision=head", "data=ui_dataset",
        "tracking=mlflow", "tracking.tags=[t1]", f"cluster.python={sys.executable}", "dry_run=true",
    )  # fmt: skip
    for k, v in plan.node_launch[0].env.items():
        if k.startswith("MLFLOW_"):
            monkeypatch.setenv(k, v)
    official = json.loads(plan.files["train_args.json"])
    run, tee = _node_side_run(tmp_path, plan)
    opened = tracking_node.open_run(run, plan, dict(os.environ), tee)  # node 0, before the engine
    monkeypatch.setenv("MLFLOW_RUN_ID", opened["MLFLOW_RUN_ID"])

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)

        def forward(self, x, labels=None):
            return {"loss": ((self.layer(x).squeeze(-1) - labels) ** 2).mean()}

    args = TrainingArguments(
        output_dir=str(tmp_path / "out"), report_to=official["report_to"],
        run_name=official["run_name"], max_steps=3, logging_steps=1,
        per_device_train_batch_size=4, save_strategy="no", use_cpu=True,
    )  # fmt: skip
    data = [{"x": torch.randn(4), "labels": torch.tensor(1.0)} for _ in range(12)]
    Trainer(model=Tiny(), args=args, train_dataset=data).train()
    tracking_node.close_run(run, plan, dict(os.environ) | opened, "FINISHED", tee)
    from mlflow.tracking import MlflowClient

    client = MlflowClient((tmp_path / "run" / "mlruns").as_uri())
    (got,) = client.search_runs([client.get_experiment_by_name("vlm-launch").experiment_id])
    assert (got.info.run_name, got.info.status, got.data.tags["t1"]) == ("run", "FINISHED", "true")
    assert [m.step for m in client.get_metric_history(got.info.run_id, "loss")] == [1, 2, 3]
    # our composed config beside HF's own TrainingArguments, in the same run
    params = got.data.params
    assert (params["launch.model.name"], params["launch.model.engine"]) == (
        "internvl2_1b",
        "internvl_official",
    )
    assert params["max_steps"] == "3" and params["launch.tracking.backend"] == "mlflow"
    # a second attempt that crashes: the same run continued, ended FAILED by node 0
    again = tracking_node.open_run(run, plan, dict(os.environ), tee)
    assert again == opened and client.get_run(got.info.run_id).info.status == "RUNNING"
    monkeypatch.setenv("MLFLOW_RUN_ID", again["MLFLOW_RUN_ID"])  # a new attempt's environment

    class Crash(Tiny):
        def forward(self, x, labels=None):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        Trainer(model=Crash(), args=args, train_dataset=data).train()
    tracking_node.close_run(run, plan, dict(os.environ) | again, "FAILED", tee)
    assert client.get_run(got.info.run_id).info.status == "FAILED"
    assert len(client.search_runs([got.info.experiment_id])) == 1


def _node_side_run(tmp_path: Path, plan):
    """The run dir as node 0 sees it (config.yaml written) and a node log."""
    from launcher.node.task import Tee
    from launcher.rundir import RunDir

    run = RunDir(tmp_path / "run")
    run.root.mkdir(parents=True, exist_ok=True)
    run.config_yaml.write_text(plan.files["config.yaml"])
    return run, Tee(tmp_path / "node0.log")


def test_mlflow_resumed_run_logs_each_step_once_crash_ends_failed(tmp_path, monkeypatch):
    """A requeued attempt (checkpoint-1, steps 2-3 trained again) continues the MLflow run that
    RUN_DIR/tracking.json names and logs each step once; an attempt that dies without closing
    its run is ended FAILED by node 0 (tracking.py close), not left RUNNING."""
    plan, _ = _plan(tmp_path, "tracking=mlflow")
    for k, v in plan.node_launch[0].env.items():
        if k.startswith("MLFLOW_"):
            monkeypatch.setenv(k, v)
    run, _tee = _node_side_run(tmp_path, plan)
    from internvl_chat.train.tracking import Tracker, main

    first = Tracker("mlflow", "run", str(run.config_yaml))
    first.start()
    for step in (1, 2, 3):
        first.log({"step": step, "loss": float(step)})
    first.close("KILLED")  # saved for a requeue after step 3; its checkpoint-1 is the newest
    second = Tracker("mlflow", "run", str(run.config_yaml))
    second.start()
    assert (second.run_id, second.last_step) == (first.run_id, 3)
    for step in (2, 3, 4):
        second.log({"step": step, "loss": 10.0 + step})
    # the process dies here (no close): node 0 ends the run as the attempt ended
    assert main(["close", str(run.root), "FAILED"]) == 0
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    (got,) = client.search_runs([client.get_experiment_by_name("vlm-launch").experiment_id])
    assert (got.info.run_id, got.info.status) == (first.run_id, "FAILED")
    history = sorted((m.step, m.value) for m in client.get_metric_history(got.info.run_id, "loss"))
    assert history == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 14.0)]
    assert got.data.params["launch.tracking.backend"] == "mlflow"
