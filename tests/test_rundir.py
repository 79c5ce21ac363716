"""RunDir: the one owner of run-dir paths and the only writer of summary.json.

The node's summary.json and logs/node{R}.exit.json shapes (keys and value types) are compared
with saved copies in tests/expected/run_dir/; regenerate deliberately with UPDATE_EXPECTED=1.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from launcher.config import compose as composing
from launcher.node.task import Rendezvous, run_node
from launcher.rundir import RunDir
from launcher.submit.pipeline import plan_from_config

EXPECTED = Path(__file__).parent / "expected" / "run_dir"


def shape(value, depth: int = 0):
    """Keys and JSON types; the contents of nested mappings below depth 1 vary by machine."""
    if isinstance(value, dict):
        return {k: shape(v, depth + 1) for k, v in sorted(value.items())} if depth < 2 else "object"
    names = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array"}
    return "null" if value is None else names[type(value)]


def compare(name: str, got) -> None:
    path = EXPECTED / name
    text = json.dumps(got, indent=2, sort_keys=True) + "\n"
    if os.environ.get("UPDATE_EXPECTED") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"no saved copy {path}; run with UPDATE_EXPECTED=1 to create it"
    assert text == path.read_text(), f"{path} differs (UPDATE_EXPECTED=1 to accept)"


@pytest.fixture
def planned(tmp_path: Path) -> RunDir:
    """A real planned run dir (tiny model, cluster=local) whose node command is a quick no-op."""
    cfg, problems = composing.compose(
        [
            "model=tiny_internvl",
            "data=synthetic",
            "hw=cpu",
            "cluster=local",
            "max_steps=2",
            "dry_run=true",
            f"run_dir={tmp_path / 'run'}",
            f"cache_dir={tmp_path / 'cache'}",
        ]
    )
    plan, _ = plan_from_config(cfg, problems)
    run = RunDir(plan.run_dir)
    run.materialize(plan.files)
    record = json.loads(run.plan_json.read_text())
    record["prepare"] = []
    record["node_launch"][0]["argv"] = [sys.executable, "-c", "print('trained')"]
    run.plan_json.write_text(json.dumps(record, indent=2) + "\n")
    return run


def test_node_outcome_files_have_the_saved_shapes(planned: RunDir):
    status = run_node(str(planned.root), Rendezvous(0, 1, "127.0.0.1", 29500))
    assert status == 0
    summary = planned.summary()
    assert summary["status"] == "completed" and summary["steps"] == 0
    got = shape(summary)
    # null on a clean checkout (CI's fresh clone), a hash with uncommitted edits: both valid
    diff = got["provenance"]["code_git_diff_sha256"]
    assert diff in ("string", "null")
    got["provenance"]["code_git_diff_sha256"] = "string|null"
    compare("summary.json", got)
    compare("node0.exit.json", shape(planned.read_json(planned.node_exit(0))))


def test_report_figures_merge_and_the_outcome_stays(tmp_path: Path):
    run = RunDir(tmp_path / "run")
    assert run.update_summary({"tgs": 1.0}) is False  # not ended: nothing written
    assert not run.summary_json.exists()
    run.write_summary({"status": "completed", "reason": "training finished"})
    assert run.update_summary({"tgs": 12.5, "verdict": "pass"}) is True
    run.write_summary({"status": "completed", "duration_s": 3.0})  # e.g. written again
    assert run.summary() == {
        "status": "completed",
        "reason": "training finished",
        "tgs": 12.5,
        "verdict": "pass",
        "duration_s": 3.0,
    }


def test_sweep_dirs_expand_in_natural_order(tmp_path: Path):
    for name in ("10", "2", "a"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "plan.json").write_text("{}")
    (tmp_path / "not_a_run").mkdir()
    assert [r.root.name for r in RunDir.under(tmp_path)] == ["2", "10", "a"]
    assert RunDir.under(tmp_path / "2") == [RunDir(tmp_path / "2")]


def test_metrics_read_mid_write_leave_out_only_the_unfinished_last_line(tmp_path: Path):
    run = RunDir(tmp_path)
    done = "".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in (1, 2))
    run.metrics_jsonl.write_text(done + '{"step": 3, "lo')  # rank 0 is writing step 3
    assert [m["step"] for m in run.metrics()] == [1, 2]
    run.metrics_jsonl.write_text(done)
    assert [m["step"] for m in run.metrics()] == [1, 2]
    run.metrics_jsonl.write_text(done.replace('"loss"', "loss"))  # corrupt, not unfinished
    with pytest.raises(ValueError):
        run.metrics()
