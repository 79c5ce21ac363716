"""Reliability, the pure parts: checkpoint validity, resume rendering, requeue bookkeeping,
status fields and the sbatch teardown's verdict (the Slurm fault runs: test_faults_slurm.py)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from launcher.node.checkpoints import (
    invalid_checkpoints,
    last_valid_step,
    newest_hf_checkpoint,
    newest_xtuner_checkpoint,
)
from launcher.node.requeue import requeue_kind, saved_for_requeue
from launcher.node.teardown import after_srun
from launcher.rundir import RunDir

REPO = Path(__file__).resolve().parent.parent


def make_ckpt(out: Path, step: int, files=None, marker=True) -> Path:
    d = out / f"checkpoint-{step}"
    d.mkdir(parents=True)
    files = files or {"model.safetensors": b"x" * 10, "ds/state.pt": b"y" * 3}
    for rel, data in files.items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_bytes(data)
    if marker:
        sizes = {rel: len(data) for rel, data in files.items()}
        (d / "COMPLETE.json").write_text(json.dumps({"step": step, "files": sizes}))
    return d


def test_complete_json_rule(tmp_path: Path):
    out = tmp_path / "output"
    make_ckpt(out, 5)
    make_ckpt(out, 10)
    assert last_valid_step(out) == 10
    (out / "checkpoint-10" / "model.safetensors").write_bytes(b"x" * 4)  # truncated
    make_ckpt(out, 15, marker=False)  # a save that never finished
    (out / "checkpoint-20.tmp-abc").mkdir()
    assert last_valid_step(out) == 5
    why = dict((p.name, r) for p, r in invalid_checkpoints(out))
    assert "4 bytes" in why["checkpoint-10"] and "no COMPLETE.json" in why["checkpoint-15"]
    assert last_valid_step(tmp_path / "nothing") is None


def test_newest_hf_and_xtuner_checkpoints(tmp_path: Path):
    out = tmp_path / "o"
    for n, complete in ((2, True), (4, False)):
        d = out / f"checkpoint-{n}"
        d.mkdir(parents=True)
        if complete:
            (d / "trainer_state.json").write_text("{}")
            (d / "latest").write_text("global_step2")
    assert newest_hf_checkpoint(out).name == "checkpoint-2"
    (out / "iter_8.pth").mkdir()
    (out / "iter_8.pth" / "mp_rank_00_model_states.pt").write_bytes(b"1")
    (out / "iter_16.pth").mkdir()  # empty: an interrupted DeepSpeed save
    assert newest_xtuner_checkpoint(out).name == "iter_8.pth"


def test_time_limit_or_preemption_as_submitit_decides():
    # 2-minute limit: any signal counts as the time limit (limit - 10 min < 0)
    assert requeue_kind(0, 2, now=30) == "time_limit"
    # 3-day limit: a signal after one hour is a preemption
    assert requeue_kind(0, 4320, now=3600) == "preempted"
    assert requeue_kind(0, 4320, now=4320 * 60 - 90) == "time_limit"
    # no limit at all (TimeLimit=UNLIMITED): there is nothing to run into
    assert requeue_kind(0, float("inf"), now=10**9) == "preempted"


TORCHRUN_REPORT = """Root Cause (first observed failure):
[0]:
  time      : 2026-12-03_16:43:27
  host      : localhost
  rank      : 1 (local_rank: 0)
  exitcode  : {code} (pid: 16153)
  error_file: <N/A>
"""


def test_torchrun_exit_1_over_workers_that_saved_reads_as_saved(tmp_path: Path):
    """torchrun exits 1 when its workers exit 75; with the stop file written that is a save."""
    run = RunDir(tmp_path)
    assert not saved_for_requeue(run, TORCHRUN_REPORT.format(code=75))  # nobody asked to stop
    run.stop_file.parent.mkdir(parents=True)
    run.stop_file.write_text("{}")
    assert saved_for_requeue(run, TORCHRUN_REPORT.format(code=75))
    assert not saved_for_requeue(run, TORCHRUN_REPORT.format(code=-9))  # a crash stays one
    assert not saved_for_requeue(run, "Killed\n")


def plan_run(tmp_path: Path, *args: str) -> RunDir:
    run_dir = tmp_path / "run"
    r = subprocess.run(
        [sys.executable, "launch.py", "dry_run=true", f"run_dir={run_dir}", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    return RunDir(run_dir)


def test_plan_renders_signal_timeouts_and_stop_file(tmp_path: Path):
    run = plan_run(
        tmp_path,
        "cluster=slurm",
        "hw=a800",
        "nodes=2",
        "model=internvl2_1b",
        "data=synthetic",  # a real model trains on generated data only when asked to
        "cluster.signal_delay_s=240",
        "cluster.collective_timeout_s=120",
    )
    sbatch = run.sbatch_sh.read_text()
    assert "#SBATCH --signal=USR2@240" in sbatch
    assert "--kill-on-bad-exit=1" in sbatch
    assert "-m launcher.node" in sbatch.split("# teardown")[1] and "--after-srun=$?" in sbatch
    args = json.loads(run.train_args_json.read_text())
    assert args["ddp_timeout"] == 120 and args["stop_file"] == str(run.stop_file)
    plan = json.loads(run.plan_json.read_text())
    assert plan["node_launch"][1]["env"]["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == "1"
    assert plan["reliability"]["collective_timeout_s"] == 120


def test_bad_reliability_settings_are_refused(tmp_path: Path):
    r = subprocess.run(
        [sys.executable, "launch.py", "dry_run=true", f"run_dir={tmp_path / 'r'}",
         "cluster=slurm", "hw=a800", "model=internvl2_1b", "cluster.time_min=1",
         "cluster.signal_delay_s=90", "cluster.collective_timeout_s=1"],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == 2
    assert "cluster.signal_delay_s" in r.stderr and "cluster.collective_timeout_s" in r.stderr
    assert not (tmp_path / "r").exists()


def test_official_engine_resumes_from_the_newest_checkpoint(tmp_path: Path):
    from launcher.engines import get_engine

    run = plan_run(
        tmp_path, "model=internvl2_1b", "model.engine=internvl_official",
        f"model.internvl_root={tmp_path}", "data=ui_dataset", "hw=h100", "cluster=slurm",
    )  # fmt: skip
    engine = get_engine("internvl_official")
    argv = ["torchrun", "x.py", str(run.train_args_json)]
    assert engine.resume_argv(run, argv) == (argv, None)
    d = run.output_dir / "checkpoint-6"
    (d / "global_step6").mkdir(parents=True)
    (d / "trainer_state.json").write_text("{}")
    new, note = engine.resume_argv(run, argv)
    assert new[-1] == str(run.train_args_resume_json) and "checkpoint-6" in note
    args = json.loads(run.train_args_resume_json.read_text())
    assert args["resume_from_checkpoint"] == str(d)
    assert args["overwrite_output_dir"] is False


XTUNER_PY = REPO / ".venv-xtuner" / "bin" / "python"


@pytest.mark.skipif(not XTUNER_PY.exists(), reason="no .venv-xtuner")
def test_xtuner_resume_config_as_mmengine_loads_it(tmp_path: Path):
    from launcher.engines import get_engine

    run = plan_run(tmp_path, "model=tiny_llava", "cluster=local", "hw=cpu")
    (run.output_dir / "iter_4.pth").mkdir(parents=True)
    (run.output_dir / "iter_4.pth" / "model.pt").write_bytes(b"1")
    argv = ["xtuner", "train", str(run.xtuner_config), "--work-dir", str(run.output_dir)]
    new, note = get_engine("xtuner").resume_argv(run, argv)
    assert new[2] == str(run.xtuner_resume_config) and "iter_4.pth" in note
    code = (
        "import sys; from mmengine.config import Config; c = Config.fromfile(sys.argv[1]); "
        "print(c.resume, c.load_from, c.train_dataloader.batch_size, c.env_cfg.dist_cfg.timeout)"
    )
    out = subprocess.run(
        [str(XTUNER_PY), "-c", code, str(run.xtuner_resume_config)],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    resume, load_from, batch, timeout = out.stdout.split()
    want_batch = json.loads(run.plan_json.read_text())["per_device_batch_size"]
    assert (resume, load_from, int(batch)) == (
        "True",
        str(run.output_dir / "iter_4.pth"),
        want_batch,
    )
    assert (
        int(timeout) == json.loads(run.plan_json.read_text())["reliability"]["collective_timeout_s"]
    )


def test_teardown_names_the_failed_node_and_status_shows_it(tmp_path: Path, monkeypatch):
    run = plan_run(
        tmp_path, "cluster=slurm", "hw=cpu", "nodes=2", "cluster.requeue_on_node_failure=false"
    )
    run.submitit_dir.mkdir()
    (run.submitit_dir / "41_0_log.out").write_text(
        "srun: error: node2: task 1: Killed\nsrun: Terminating StepId=41.0\n"
    )
    run.node_log(0).write_text("[default0]:{'loss': 2.0}\n")
    make_ckpt(run.output_dir, 5)
    run.metrics_jsonl.write_text(
        "".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in (1, 2, 3, 4, 5, 6, 7))
    )
    monkeypatch.delenv("SLURM_JOB_NODELIST", raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "41")
    assert after_srun(str(run.root), 137) == 137
    s = run.summary()
    assert s["status"] == "failed" and s["failure_class"] == "node_failure"
    assert "node2" in s["reason"] and s["failure_node"] == "node2"
    assert s["action"] == "stopped: requeue_on_node_failure is off" and s["requeues"] == 0
    (run.job_json).write_text(json.dumps({"kind": "local", "pid": 999999999}))
    out = subprocess.run(
        [sys.executable, "launch.py", "status", str(run.root)], cwd=REPO, capture_output=True,
        text=True, env={**os.environ},
    )  # fmt: skip
    line = out.stdout.strip()
    assert line.startswith("FAILED"), out
    for part in ("requeues=0", "checkpoint=5", "metrics_step=7", "failure=node_failure"):
        assert part in line, line


def test_an_oom_is_the_points_verdict_not_requeued_and_the_report_says_so(
    tmp_path: Path, monkeypatch
):
    run = plan_run(tmp_path, "cluster=slurm", "hw=cpu", "nodes=2")  # requeue_on_node_failure on
    run.submitit_dir.mkdir()
    (run.submitit_dir / "42_0_log.out").write_text("srun: error: node2: task 1: Exited\n")
    run.node_log(1).write_text(
        "[default0]:torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB\n"
    )
    run.metrics_jsonl.write_text(json.dumps({"step": 1, "loss": 2.0}) + "\n")
    monkeypatch.delenv("SLURM_JOB_NODELIST", raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    assert after_srun(str(run.root), 1) == 1
    s = run.summary()
    assert s["failure_class"] == "oom_cuda" and "CUDA out of memory" in s["reason"]
    assert s["action"].startswith("point infeasible: not retried") and s["requeues"] == 0
    assert run.requeues() == []
    out = subprocess.run([sys.executable, "launch.py", "report", str(run.root)], cwd=REPO,
                         capture_output=True, text=True)  # fmt: skip
    assert "infeasible, not retried" in (run.root / "report.md").read_text(), out


def test_each_attempt_is_judged_by_its_own_lines_of_the_appended_logs(tmp_path: Path, monkeypatch):
    """A requeued job appends to the same node and submitit logs. Attempt 1 lost node2 (Slurm's
    node failure); attempt 2 ended with an error of its own: the teardown must not requeue it
    again as attempt 1's node failure, and the next attempt's start books Slurm's own requeue
    of attempt 1 with the cause that attempt's lines give, naming node2."""
    from launcher.node.attempt import diagnose
    from launcher.node.requeue import new_attempt

    run = plan_run(tmp_path, "cluster=slurm", "hw=cpu", "nodes=2")
    run.submitit_dir.mkdir()
    start = "submitit INFO (2026-12-03 20:13:01,467) - Starting with JobEnvironment(job_id=85)\n"
    node = "[launcher] node 0/2 on vm master 127.0.0.1:29585 job 85\n"
    (run.submitit_dir / "85_0_log.out").write_text(  # task 0's log has node 0's lines too
        start + node + "srun: error: Node failure on node2\n" + start + node
    )
    run.node_log(0).write_text(
        node + "[default0]:[rank0]: RuntimeError: Timed out waiting 20000ms for recv\n" + node
    )
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    new_attempt(run, ("node1", "node2"))
    (event,) = run.requeues()
    assert event["kind"] == "node_failure" and event["node"] == "node2", event
    assert diagnose(run, ("node1", "node2")) is None  # attempt 2 has said nothing wrong yet
    with (run.node_log(0)).open("a") as f:
        f.write("[default0]:ZeroDivisionError: division by zero\n")
    found = diagnose(run, ("node1", "node2"))
    assert found.failure_class == "training_error" and "ZeroDivision" in found.reason, found


@pytest.mark.parametrize(
    ("overrides", "restarts", "earlier", "goes_on", "why"),
    [
        ((), 1, 0, True, None),
        (("cluster.requeue_on_node_failure=false",), 1, 0, False, "requeue_on_node_failure is off"),
        (("cluster.max_requeues=1",), 2, 1, False, "max_requeues (1) reached"),
    ],
)
def test_slurms_own_requeue_after_a_node_failure_obeys_the_runs_settings(
    tmp_path: Path, monkeypatch, overrides, restarts, earlier, goes_on, why
):
    """Slurm requeues a job whose node it declared down itself (JobRequeue=1). The batch
    script's check before srun books that requeue with its cause and, where the run asked for
    no requeue on node failure (or has used up max_requeues), stops there: summary.json says
    node_failure on node2 and why, and no node starts; node 0 then books nothing twice."""
    from launcher.node.requeue import new_attempt
    from launcher.node.teardown import before_srun

    run = plan_run(tmp_path, "cluster=slurm", "hw=cpu", "nodes=2", *overrides)
    run.submitit_dir.mkdir()
    start = "submitit INFO (2026-12-03 20:13:01,467) - Starting with JobEnvironment(job_id=86)\n"
    (run.submitit_dir / "86_0_log.out").write_text(start + "srun: error: Node failure on node2\n")
    for i in range(earlier):
        run.add_requeue({"restart": i, "kind": "preempted", "action": "requeued"})
    make_ckpt(run.output_dir, 3)
    monkeypatch.delenv("SLURM_JOB_NODELIST", raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "86")
    monkeypatch.setenv("SLURM_RESTART_COUNT", str(restarts))
    assert before_srun(str(run.root)) == (0 if goes_on else 1)
    event = run.requeues()[-1]
    assert len(run.requeues()) == earlier + 1, run.requeues()
    assert event["kind"] == "node_failure" and event["node"] == "node2", event
    assert event["restart"] == restarts - 1 and event["resume_step"] == 3, event
    if goes_on:
        assert event["action"] == "requeued" and run.summary() is None
        new_attempt(run, ("node1", "node2"))
        assert len(run.requeues()) == earlier + 1  # booked once
        return
    assert event["action"].startswith(f"stopped: {why}"), event
    s = run.summary()
    assert s["status"] == "failed" and s["failure_class"] == "node_failure", s
    assert "Node failure on node2" in s["reason"] and s["action"] == event["action"], s
