"""Operating a run without Slurm: what `resume` allows and refuses (nothing written when it
refuses), what it sets aside, and the live figures of `status`, `status --watch`, `logs -f`
and the runs table (the real cancel -> resume on Slurm: test_resume_slurm.py)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from launcher.rundir import RunDir
from launcher.submit.progress import follow, live, progress_lines, runs_table, watch

REPO = Path(__file__).resolve().parent.parent


def launch(*args: str) -> subprocess.CompletedProcess[str]:
    """launch.py's verbs in this process (as `python launch.py ARGS` runs them)."""
    import contextlib

    import launch as entry

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        argv, sys.argv = sys.argv, ["launch.py", *args]
        try:
            rc = entry.main()
        except SystemExit as e:
            rc = e.code
        finally:
            sys.argv = argv
    return subprocess.CompletedProcess(args, rc, out.getvalue(), err.getvalue())


def planned(tmp_path: Path, *args: str, name: str = "run") -> RunDir:
    r = launch("dry_run=true", f"run_dir={tmp_path / name}", "max_steps=20", "save_steps=5", *args)
    assert r.returncode == 0, r.stderr
    return RunDir(tmp_path / name)


def test_resume_on_the_command_line():
    r = subprocess.run([sys.executable, "launch.py", "resume", "--help"], cwd=REPO,
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0 and "python launch.py resume RUN_DIR" in r.stdout


def ended(run: RunDir, status: str = "failed", pid: int = 2**22 + 7, **summary) -> None:
    """As if the run's local job (a pid long gone) ended with `status`."""
    run.job_json.write_text(json.dumps({"kind": "local", "pid": pid, "submitted": 1000.0}))
    if status:
        run.summary_json.write_text(json.dumps({"status": status, "reason": "boom", **summary}))


def listing(run: RunDir) -> dict[str, str]:
    return {
        p.relative_to(run.root).as_posix(): p.read_text()
        for p in sorted(run.root.rglob("*"))
        if p.is_file()
    }


def test_resume_refuses_what_would_invalidate_the_checkpoint_all_at_once(tmp_path: Path):
    run = planned(tmp_path, "nodes=2")
    ended(run)
    before = listing(run)
    r = launch("resume", str(run.root), "nodes=4", "model.freeze_llm=true", "data.num_samples=9",
               "per_device_batch_size=4", "parallelism.zero_stage=3", "lr=2e-3", "seed=1",
               "max_stepz=30", "model=internvl2_1b", "cluster.partition=p")  # fmt: skip
    assert r.returncode == 2, r.stdout + r.stderr
    err = r.stderr
    for setting, why in (
        ("nodes", "ZeRO stage 2 partitions the optimizer state"),
        ("model.freeze_llm", "freezing or unfreezing"),
        ("data.num_samples", "data position"),
        ("per_device_batch_size", "micro-batches"),
        ("parallelism.zero_stage", "laid out for this parallelism"),
        ("lr", "scheduler state"),
        ("seed", "same samples"),
        ("max_stepz", "did you mean 'max_steps'"),
        ("model", "not config groups"),
    ):
        assert f"- {setting}: " in err and why in err, (setting, err)
    assert "cluster.partition" not in err  # allowed: where it runs, not what was saved
    assert listing(run) == before  # nothing moved or written


def test_resume_refuses_runs_that_are_planned_running_or_done(tmp_path: Path):
    dry = planned(tmp_path, name="dry")
    r = launch("resume", str(dry.root))
    assert r.returncode == 2 and "planned only" in r.stderr, r.stderr
    running = planned(tmp_path, name="running")
    ended(running, status="", pid=os.getpid())  # this test's own pid: alive
    r = launch("resume", str(running.root))
    assert r.returncode == 2 and "still RUNNING: cancel it first" in r.stderr, r.stderr
    done = planned(tmp_path, name="done")
    ended(done, status="completed", steps=20)
    r = launch("resume", str(done.root))
    assert r.returncode == 2 and "already completed (20 steps)" in r.stderr, r.stderr
    r = launch("resume", str(done.root), "max_steps=30", "dry_run=true")
    assert r.returncode == 0, r.stderr
    r = launch("resume", str(tmp_path / "nowhere"))
    assert r.returncode == 2 and "not a run dir" in r.stderr
    import fcntl

    fd = os.open(done.root, os.O_RDONLY)  # another resume of the run holds its lock
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        r = launch("resume", str(done.root), "max_steps=30", "dry_run=true")
        assert r.returncode == 2 and "another resume" in r.stderr, r.stderr
    finally:
        os.close(fd)


def test_resume_sets_the_ended_attempt_aside_and_replans_allowed_changes(tmp_path: Path):
    from launcher.submit.resume import commit, describe, prepare

    run = planned(tmp_path, "cluster.max_requeues=1")
    ended(run, status="stopped")
    run.add_requeue({"restart": 0, "kind": "time_limit", "action": "requeued"})
    (run.logs_dir / "node0.exit.json").write_text("{}")
    (run.output_dir / "checkpoint-5").mkdir(parents=True)  # no COMPLETE.json: not valid
    old_args = run.train_args_json.read_text()
    r = prepare(str(run.root), ["max_steps=40", "save_steps=10", "cluster.max_requeues=2"])
    assert r.from_step is None and r.replanned
    assert r.changed == ("cluster.max_requeues", "max_steps", "save_steps")
    assert "step 0 (no valid checkpoint yet)" in "\n".join(describe(r))
    commit(r)
    keep = run.attempt_dir(1)
    assert sorted(p.name for p in keep.iterdir()) == [
        "config.yaml", "job.json", "node0.exit.json", "plan.json", "requeues.jsonl",
        "summary.json", "train_args.json",
    ]  # fmt: skip
    assert not run.summary_json.exists() and not run.job_json.exists()
    assert (keep / "train_args.json").read_text() == old_args
    args = json.loads(run.train_args_json.read_text())
    assert (args["max_steps"], args["save_steps"]) == (40, 10)
    assert json.loads(run.plan_json.read_text())["reliability"]["max_requeues"] == 2
    (event,) = run.resumes()
    assert event["attempt"] == 2 and event["previous"]["state"] == "STOPPED"
    # the requeue budget starts again; the history still counts the one before
    assert run.requeues() == [] and run.requeues_total() == 1 and run.attempt() == 2
    # set aside but never submitted (sbatch refused it): the resume can be run again
    assert prepare(str(run.root), []).previous["state"] == "NOT-SUBMITTED"


def write_metrics(run: RunDir, steps: int, step_time: float = 2.0) -> None:
    rows = [
        {"step": s, "loss": 3.0 - s / 10, "step_time": step_time, "tokens_per_sec": 400.0 + s}
        for s in range(1, steps + 1)
    ]
    run.metrics_jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_live_figures_eta_and_stall(tmp_path: Path):
    run = planned(tmp_path, "nodes=2")  # world size 2 (hw=cpu: one device per node)
    ended(run, status="")
    write_metrics(run, 5)
    last = run.metrics_jsonl.stat().st_mtime
    p = live(run, now=last + 3)
    assert (p["step"], p["total"], p["percent"]) == (5, 20, 25.0)
    assert p["tokens_per_sec"] == 403.5 and p["tgs"] == 403.5 / 2  # median of steps 2..5
    assert p["eta_s"] == 15 * 2.0 and not p["stalled"]
    assert "step 5/20 (25%)  loss 2.5000" in progress_lines(run, now=last + 3)[0]
    stalled = progress_lines(run, now=last + 11)
    assert len(stalled) == 2 and "no step for 11 s" in stalled[1], stalled


def test_runs_table_is_newest_first(tmp_path: Path):
    old = planned(tmp_path, name="old")
    new = planned(tmp_path, name="new")
    for run, at in ((old, 1000.0), (new, 2000.0)):
        run.job_json.write_text(json.dumps({"kind": "local", "pid": 1, "submitted": at}))
        write_metrics(run, 3)
    text = runs_table([old, new], lambda r: "COMPLETED", now=2100.0)
    head, first, second = text.splitlines()
    assert head.split() == ["run", "state", "steps", "loss", "TGS", "started", "duration"]
    assert first.startswith("new") and "3/20" in first and "0:01:40" in first
    assert second.startswith("old") and "0:18:20" in second


class Plain(io.StringIO):
    def isatty(self) -> bool:
        return False


def test_watch_prints_plain_blocks_when_not_a_tty():
    frames = iter([("a", False), ("b", True)])
    out = Plain()
    assert watch(lambda: next(frames), 0.01, out=out) == 0
    text = out.getvalue()
    assert "\x1b[" not in text and text.count("--- ") == 2 and "a\n" in text and "b\n" in text


class _Started(io.StringIO):
    """A StringIO that says when the first text arrived."""

    def __init__(self):
        super().__init__()
        self.started = threading.Event()

    def write(self, s: str) -> int:
        self.started.set()
        return super().write(s)


def test_follow_prints_what_the_log_gets_until_the_job_ends(tmp_path: Path):
    log = tmp_path / "node0.log"
    log.write_text("old 1\nold 2\n")
    done = threading.Event()
    out = _Started()

    def writer():
        out.started.wait(10)  # follow has printed the tail; CI on 4671eb1 wrote "new 0" first
        with log.open("a") as f:
            for i in range(5):
                f.write(f"new {i}\n")
                f.flush()
                time.sleep(0.05)
        done.set()

    t = threading.Thread(target=writer)
    t.start()
    assert follow(log, 1, lambda: not done.is_set(), poll_s=0.02, out=out) == 0
    t.join()
    assert out.getvalue() == "old 2\n" + "".join(f"new {i}\n" for i in range(5))


@pytest.mark.parametrize(
    "verb", [["logs", "-f", "--node", "3"], ["status", "--watch", "--interval", "0.1"]]
)
def test_follow_and_watch_on_a_run_that_never_ran(tmp_path: Path, verb: list[str]):
    run = planned(tmp_path)
    r = launch(verb[0], str(run.root), *verb[1:])
    if verb[0] == "logs":
        assert r.returncode == 2 and "--node 3: the run has nodes 0..0" in r.stderr
    else:
        assert r.returncode == 0 and r.stdout.count("PLANNED") == 1, r.stdout


def test_xtuner_metrics_of_a_resumed_run_hold_each_step_once():
    """Each start of `xtuner train` writes its own vis_data; a resumed one from iter 5 on."""
    from launcher.engines.xtuner.finalize import merged_records

    first = [{"step": i, "loss": 1.0} for i in range(1, 8)]  # cancelled after iter 7
    second = [{"step": i, "loss": 2.0} for i in range(5, 11)]  # resumed from iter_4.pth
    rows = merged_records([first, [], second])
    assert [r["step"] for r in rows] == list(range(1, 11))
    assert [r["loss"] for r in rows] == [1.0] * 4 + [2.0] * 6


@pytest.mark.slow
def test_resume_verb_continues_a_failed_mindspeed_run_with_load(tmp_path: Path, monkeypatch):
    """MindSpeed through `resume` (the Ascend stand-ins of tests/fakes, cluster=local): a run
    that died after iteration 4 (checkpoint at 3) continues from 3 with --load, every
    iteration once in metrics.jsonl, as attempt 2."""
    from test_mindspeed_slurm import FAKES, ascend_env, make_inputs

    from launcher.node.checkpoints import last_step
    from launcher.node.task import Rendezvous, free_port, run_node

    hf, root, meta = make_inputs(tmp_path)
    run = planned(tmp_path, "model=internvl2_8b", "model.engine=mindspeed", f"model.path={hf}",
                  f"model.mindspeed_root={root}", "hw=ascend910b", "hw.devices_per_node=2",
                  "hw.gres=null", "hw.env.ASCEND_RT_VISIBLE_DEVICES='0,1'", "cluster=local",
                  "cluster.setup=[]", "parallelism=megatron", "parallelism.pp=2",
                  "per_device_batch_size=1", "gradient_accumulation_steps=2", "data=meta_file",
                  f"data.meta_file={meta}", "check_data=false", "max_steps=6", "save_steps=3",
                  f"cache_dir={tmp_path / 'cache'}")  # fmt: skip
    monkeypatch.setenv("PATH", f"{FAKES}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_PRETRAIN_DIE_AFTER", "4")
    assert run_node(str(run.root), Rendezvous(0, 1, "127.0.0.1", free_port())) == 1
    ended(run, status="")  # the local job that ran it has gone; summary.json says failed
    assert last_step(run, "mindspeed") == 3
    monkeypatch.delenv("FAKE_PRETRAIN_DIE_AFTER")
    monkeypatch.setenv("PYTHONPATH", ascend_env(dict(os.environ))["PYTHONPATH"])  # torch_npu
    r = launch("resume", str(run.root), "dry_run=false", "wait=true")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "attempt 2 continues from step 3" in r.stdout and "--load" in r.stdout, r.stdout
    assert "loading checkpoint at iteration 3" in run.node_log(0).read_text()
    assert [m["step"] for m in run.metrics()] == [1, 2, 3, 4, 5, 6]
    summary = run.summary()
    assert summary["status"] == "completed" and summary["attempt"] == 2, summary
    assert json.loads((run.attempt_dir(1) / "summary.json").read_text())["status"] == "failed"


@pytest.mark.parametrize(
    ("engine", "settings", "argument"),
    [
        ("internvl_official",
         ("model=internvl2_1b", "model.engine=internvl_official", "data=ui_dataset", "hw=h100",
          "cluster=slurm"),
         "resume_from_checkpoint"),
        ("xtuner", ("model=tiny_llava", "cluster=local", "hw=cpu"), "load_from"),
    ],
)  # fmt: skip
def test_resume_names_each_engines_checkpoint_and_argument(
    tmp_path: Path, engine: str, settings: tuple[str, ...], argument: str
):
    """The official script and XTuner resume from the checkpoint `resume` names, through the
    argument the node's resume_argv gives them (test_reliability: what that renders)."""
    from launcher.engines import get_engine
    from launcher.submit.resume import commit, describe, prepare

    extra = (f"model.internvl_root={tmp_path}",) if engine == "internvl_official" else ()
    run = planned(tmp_path, *settings, *extra)
    ended(run)
    if engine == "xtuner":
        (run.output_dir / "iter_8.pth").mkdir(parents=True)
        (run.output_dir / "iter_8.pth" / "model.pt").write_bytes(b"1")
        newest, argv = run.output_dir / "iter_8.pth", ["xtuner", "train", str(run.xtuner_config)]
    else:
        newest = run.output_dir / "checkpoint-8"
        (newest / "global_step8").mkdir(parents=True)
        (newest / "trainer_state.json").write_text("{}")
        argv = ["torchrun", "x.py", str(run.train_args_json)]
    r = prepare(str(run.root), ["save_total_limit=3"])
    assert r.from_step == 8 and argument in "\n".join(describe(r))
    commit(r)
    new, note = get_engine(engine).resume_argv(run, argv)
    assert new != argv and str(newest) in note
    resumed = run.xtuner_resume_config if engine == "xtuner" else run.train_args_resume_json
    assert str(newest) in resumed.read_text()
