"""The types that cross machines (launcher.contract) read back exactly what they wrote: every
saved plan.json round-trips through Plan.load and Plan.to_json byte for byte, with its Slurm
request and reliability settings typed, and the older plan.json files among the fixtures keep
their Slurm records; a Summary leaves out the keys its ending does not set."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from launcher.config.spec import ClusterSpec
from launcher.contract import RELIABILITY, Plan, Reliability, SlurmRequest, Summary

TESTS = Path(__file__).parent
SAVED = sorted(TESTS.glob("expected/*/*/plan.json"))
OLDER = sorted(TESTS.glob("fixtures/**/plan.json"))


def _id(path: Path) -> str:
    return str(path.parent.relative_to(TESTS))


@pytest.mark.parametrize("saved", SAVED, ids=_id)
def test_saved_plans_round_trip_byte_for_byte(tmp_path: Path, saved: Path):
    (tmp_path / "plan.json").write_text(saved.read_text())
    plan = Plan.load(tmp_path)
    assert plan.to_json() == saved.read_text()
    assert plan.slurm is None or isinstance(plan.slurm, SlurmRequest)
    assert plan.reliability is None or isinstance(plan.reliability, Reliability)


@pytest.mark.parametrize("older", OLDER, ids=_id)
def test_older_plans_keep_their_slurm_record(tmp_path: Path, older: Path):
    """Runs planned before sbatch's teardown existed have no "teardown": still none."""
    (tmp_path / "plan.json").write_text(older.read_text())
    record = json.loads(older.read_text())
    again = Plan.load(tmp_path).record()
    assert json.dumps(again["slurm"]) == json.dumps(record["slurm"])
    assert again["reliability"] == record.get("reliability")


def test_the_reliability_defaults_are_written_once():
    defaults = {f.name: f.default for f in dataclasses.fields(ClusterSpec)}
    for f in dataclasses.fields(Reliability):
        assert defaults[f.name] == getattr(RELIABILITY, f.name), f.name


def test_a_summary_leaves_out_what_its_ending_does_not_set():
    common = dict(status="stopped", reason="why", job_id=None, nodes=1, hostnames=("n1",),
                  started=1.0, ended=2.0, duration_s=1.0, restart=0, requeues=0, attempt=1,
                  steps=0, final_loss=None)  # fmt: skip
    record = Summary(**common).record()
    assert "returncode" not in record and record["hostnames"] == ["n1"]
    assert Summary(**common, returncode=None).record()["returncode"] is None
