"""A full disk under the output dir mid-run (a small tmpfs mounted there): the failure is
classified disk_full with the line that says so, and what was written before is intact."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from launcher.node.checkpoints import valid_checkpoints  # noqa: E402

TMPFS_MB = 30
"""A tiny-InternVL checkpoint (weights + ZeRO optimizer states) is about 13 MB: two fit."""


def start_local_run(run_dir: Path, cache: Path) -> tuple[int, Path]:
    """Submit a 30-step local run (a checkpoint every 3) without waiting: (pid, output dir)."""
    r = subprocess.run(
        [sys.executable, "launch.py", "cluster=local", "hw=cpu", "max_steps=30",
         "save_steps=3", "save_total_limit=3", "wait=false", f"run_dir={run_dir}",
         f"cache_dir={cache}"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return json.loads((run_dir / "job.json").read_text())["pid"], run_dir / "output"


def node_log_tail(run_dir: Path) -> str:
    log = run_dir / "logs" / "node0.log"
    return log.read_text(errors="replace")[-3000:] if log.exists() else "(no node0.log)"


def mount_tmpfs(out: Path, size_mb: int, pid: int) -> None:
    """A tmpfs of size_mb over the output dir before the trainer writes there (node 0 is still
    preparing); where mount is refused the run is stopped and the test skips (fails in CI)."""
    out.mkdir(exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(out)],
        capture_output=True, text=True,
    )  # fmt: skip
    if mounted.returncode != 0:
        os.kill(pid, 15)
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true needs mount (root): {mounted.stderr}")
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")


@pytest.mark.slow
def test_a_full_output_disk_is_disk_full_and_loses_nothing_written_before(tmp_path: Path):
    run_dir = tmp_path / "diskfull"
    pid, out = start_local_run(run_dir, tmp_path / "cache")
    mount_tmpfs(out, TMPFS_MB, pid)
    try:
        deadline = time.monotonic() + 240
        while (run_dir / "summary.json").exists() is False or Path(f"/proc/{pid}").exists():
            assert time.monotonic() < deadline, "the run did not end"
            time.sleep(0.5)
        summary = json.loads((run_dir / "summary.json").read_text())
        saved = valid_checkpoints(out)
        rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    finally:
        subprocess.run(["umount", "-l", str(out)], capture_output=True)
    assert summary["status"] == "failed" and summary["failure_class"] == "disk_full", summary
    assert "No space left on device" in summary["reason"], summary
    assert "cannot write checkpoint" in summary["reason"], summary  # which write, quoted
    # nothing before the fault is lost: the checkpoints that fit, every step logged until then
    assert [n for n, _ in saved] == [3, 6], saved
    assert [m["step"] for m in rows] == list(range(1, len(rows) + 1)) and len(rows) >= 6, rows


@pytest.mark.slow
def test_an_output_dir_turned_read_only_is_output_unwritable_and_loses_nothing(tmp_path: Path):
    """The output dir's filesystem goes read-only after the first checkpoint (a tmpfs
    remounted ro: root ignores chmod): the next save fails, classified output_unwritable."""
    run_dir = tmp_path / "readonly"
    pid, out = start_local_run(run_dir, tmp_path / "cache")
    mount_tmpfs(out, 300, pid)
    try:
        deadline = time.monotonic() + 240
        while not [n for n, _ in valid_checkpoints(out)]:
            assert time.monotonic() < deadline and Path(f"/proc/{pid}").exists(), "no checkpoint"
            time.sleep(0.2)
        ro = subprocess.run(["mount", "-o", "remount,ro", str(out)], capture_output=True,
                            text=True)  # fmt: skip
        assert ro.returncode == 0, ro.stderr
        while (run_dir / "summary.json").exists() is False or Path(f"/proc/{pid}").exists():
            assert time.monotonic() < deadline, "the run did not end"
            time.sleep(0.5)
        summary = json.loads((run_dir / "summary.json").read_text())
        saved = valid_checkpoints(out)
        rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    finally:
        subprocess.run(["umount", "-l", str(out)], capture_output=True)
    why = (summary.get("reason"), summary.get("exit_reason"), node_log_tail(run_dir))
    assert summary["status"] == "failed", why
    assert summary["failure_class"] == "output_unwritable", why
    assert "Read-only file system" in summary["reason"], why
    assert [n for n, _ in saved][:1] == [3], saved  # what was saved before is still valid
    assert [m["step"] for m in rows] == list(range(1, len(rows) + 1)) and len(rows) >= 3, rows
