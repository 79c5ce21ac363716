"""Queued jobs are immutable: a job runs the code as it was at submit (RUN_DIR/code), not the
checkout as it is when Slurm starts the job."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from slurm_cluster import wait_until_gone

from launcher import snapshot

REPO = Path(__file__).resolve().parent.parent


def test_snapshot_hashes_content_and_states_the_git_revision(tmp_path: Path):
    snap = snapshot.take(REPO)
    assert {p.split("/")[0] for p in snap.files} == set(snapshot.CODE_DIRS)
    assert "launcher/node/task.py" in snap.files and not any("__pycache__" in p for p in snap.files)
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                          text=True).stdout.strip()  # fmt: skip
    assert snap.git_commit == head
    # a copy that differs in one byte has another hash; an identical copy has the same
    copy = tmp_path / "copy"
    for top in snapshot.CODE_DIRS:
        shutil.copytree(REPO / top, copy / top, ignore=shutil.ignore_patterns("__pycache__"))
    assert snapshot.take(copy).sha256 == snap.sha256 and snapshot.take(copy).git_commit is None
    (copy / "launcher" / "node" / "task.py").write_text(
        (REPO / "launcher" / "node" / "task.py").read_text() + "#"
    )
    assert snapshot.take(copy).sha256 != snap.sha256


@pytest.mark.slurm
@pytest.mark.slow
def test_an_edit_after_submit_does_not_reach_the_queued_job(slurm_cluster, tmp_path: Path):
    checkout = tmp_path / "checkout"
    for top in (*snapshot.CODE_DIRS, "conf"):
        shutil.copytree(REPO / top, checkout / top, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "launch.py", checkout / "launch.py")
    run_dir = tmp_path / "run"
    submit = subprocess.run(
        [sys.executable, "launch.py", "cluster=slurm", "hw=cpu", "model=tiny_internvl",
         "data=synthetic", "max_steps=2", "save_steps=100", f"run_dir={run_dir}",
         f"cache_dir={tmp_path}/cache", "cluster.sbatch_extra={begin: now+600}"],
        cwd=checkout, env=slurm_cluster.env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert submit.returncode == 0, submit.stdout[-3000:] + submit.stderr[-3000:]
    job_id = json.loads((run_dir / "job.json").read_text())["job_id"]
    # while it waits in the queue, the checkout is edited (a pull, a colleague's change):
    # the trainer and the node task of the checkout now fail at once
    for module in ("internvl_chat/train/__init__.py", "launcher/node/task.py"):
        (checkout / module).write_text("raise SystemExit('the edited checkout ran')\n")
    slurm_cluster.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"])
    wait_until_gone(job_id, slurm_cluster.env, timeout_s=600)
    logs = "".join(p.read_text() for p in sorted((run_dir / "logs").glob("node*.log")))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed", logs[-3000:]
    assert "the edited checkout ran" not in logs
    code = run_dir / "code"
    assert (code / "launcher" / "node" / "task.py").read_text() == (
        REPO / "launcher" / "node" / "task.py"
    ).read_text()
    recorded = json.loads((run_dir / "plan.json").read_text())["provenance"]
    assert recorded["code_sha256"] == snapshot.take(code).sha256 == snapshot.take(REPO).sha256
