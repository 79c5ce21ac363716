"""engine=internvl_official really trains (issue 19): the official code of shared/upstream,
an edited copy in the run dir, .venv-internvl on the nodes.

- preempted after its checkpoint at step 3 and started again on the same run dir (what a
  requeue does), it resumes from checkpoint-3 (`resume_from_checkpoint`), logs 4..6, and
  metrics.jsonl has every step once; `status` says completed;
- on the local 2-node Slurm cluster, the README's seed-000 command (pin, ZeRO-2, 20 steps)
  completes with a falling loss, every step in metrics.jsonl and the edits diff in the run dir.
Needs .venv-internvl (bash setup.sh --official): skips without it, fails under CI=true.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from launcher.config import compose
from launcher.node.checkpoints import newest_hf_checkpoint
from launcher.node.task import Rendezvous, free_port, run_node
from launcher.rundir import RunDir
from launcher.submit.pipeline import run

REPO = Path(__file__).resolve().parents[1]
UPSTREAM = REPO.parent / "shared" / "upstream"
PIN = UPSTREAM / "InternVL-764fdc9"
OFFICIAL_PY = REPO / ".venv-internvl" / "bin" / "python"


def need_official() -> None:
    missing = [p for p in (OFFICIAL_PY, PIN) if not p.exists()]
    if missing:
        msg = f"{missing[0]} is absent (bash setup.sh --official; shared/upstream checkouts)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _kill_after_checkpoint(output: Path, step: int, deadline: float) -> None:
    from launcher.node.requeue import CHILD

    while time.monotonic() < deadline:
        found = newest_hf_checkpoint(output)
        if found is not None and found.name == f"checkpoint-{step}" and CHILD.proc is not None:
            os.kill(CHILD.proc.pid, signal.SIGTERM)  # torchrun passes it to its worker
            return
        time.sleep(0.2)


@pytest.mark.slow
def test_preempted_official_run_resumes_from_its_checkpoint(tmp_path: Path):
    need_official()
    run_dir = tmp_path / "run"
    cfg, problems = compose.compose([
        "model=tiny_internvl", "model.engine=internvl_official", f"model.internvl_root={PIN}",
        "model.internvl_revision=pin", "+engine_args.official_fp32_load=true", "hw=cpu",
        "cluster=local", "parallelism=zero1", "data.num_samples=32", "max_steps=6",
        "save_steps=3", "dry_run=true", f"run_dir={run_dir}", f"cache_dir={tmp_path / 'cache'}",
    ])  # fmt: skip
    assert not problems and run(cfg, problems) == 0  # plan written, nothing started
    watcher = threading.Thread(
        target=_kill_after_checkpoint,
        args=(run_dir / "output", 3, time.monotonic() + 600),
        daemon=True,
    )
    watcher.start()
    assert run_node(str(run_dir), Rendezvous(0, 1, "127.0.0.1", free_port())) == 1
    watcher.join()
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "failed"
    assert [r["step"] for r in metrics(run_dir)][:3] == [1, 2, 3]

    assert run_node(str(run_dir), Rendezvous(0, 1, "127.0.0.1", free_port())) == 0
    log = (run_dir / "logs" / "node0.log").read_text()
    assert f"resuming from {run_dir}/output/checkpoint-3 (--resume_from_checkpoint)" in log
    resumed = json.loads(RunDir(run_dir).train_args_resume_json.read_text())
    assert resumed["resume_from_checkpoint"] == str(run_dir / "output" / "checkpoint-3")
    rows = metrics(run_dir)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 6, summary
    status = subprocess.run(
        [sys.executable, "launch.py", "status", str(run_dir)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert status.stdout.startswith("COMPLETED"), status.stdout + status.stderr
    assert list((run_dir / "output" / "runs").glob("*/events.out.tfevents.*"))  # TensorBoard


@pytest.mark.slow
@pytest.mark.slurm
def test_seed000_command_on_the_local_slurm_cluster(slurm_cluster, tmp_path: Path):
    need_official()
    run_dir = tmp_path / "run"
    r = subprocess.run(
        [
            sys.executable, "launch.py", "model=tiny_internvl", "model.engine=internvl_official",
            "model.internvl_root=../shared/upstream/InternVL-764fdc9",
            "model.internvl_revision=pin", "cluster=slurm", "hw=cpu", "nodes=2",
            "parallelism=zero2", "max_steps=20", "wait=true", f"run_dir={run_dir}",
            f"cache_dir={tmp_path / 'cache'}",
        ],
        cwd=REPO, capture_output=True, text=True, timeout=1500,
        env=slurm_cluster.env,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    rows = metrics(run_dir)
    assert [m["step"] for m in rows] == list(range(1, 21))
    assert sum(m["loss"] for m in rows[-5:]) < sum(m["loss"] for m in rows[:5])
    assert "- E3: " in (run_dir / "official_edits.md").read_text()
    assert (
        "+++ b/internvl_chat/internvl/dist_utils.py"
        in (run_dir / "official_edits.patch").read_text()
    )
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 20, summary
