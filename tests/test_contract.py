"""The types that cross machines (launcher.contract) read back exactly what they wrote: every
saved plan.json round-trips through Plan.load and Plan.to_json byte for byte, with its Slurm
request and reliability settings typed; a Summary leaves out the keys its ending does not set."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from launcher.config.spec import ClusterSpec
from launcher.contract import RELIABILITY, Plan, Reliability, SlurmRequest, Summary

EXPECTED = Path(__file__).parent / "expected"
PLANS = sorted(EXPECTED.glob("*/*/plan.json"))


@pytest.mark.parametrize("saved", PLANS, ids=lambda p: f"{p.parent.parent.name}/{p.parent.name}")
def test_saved_plans_round_trip_byte_for_byte(tmp_path: Path, saved: Path):
    (tmp_path / "plan.json").write_text(saved.read_text())
    plan = Plan.load(tmp_path)
    assert plan.to_json() == saved.read_text()
    assert plan.slurm is None or isinstance(plan.slurm, SlurmRequest)
    assert plan.reliability is None or isinstance(plan.reliability, Reliability)


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
