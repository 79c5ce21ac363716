"""The local Slurm cluster runs real two-node jobs: srun, sbatch through submitit, no sacct.

.venv/bin/python -m pytest -q tests/test_slurm_cluster.py
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cloudpickle
import pytest
import submitit
from slurm_cluster import SCRIPT, SlurmCluster, submitit_results

# The job's Python cannot import this test module (tests/ is not on its path): ship functions whole.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.mark.slurm
def test_srun_runs_one_task_on_each_node(slurm_cluster: SlurmCluster):
    script = 'echo "$SLURMD_NODENAME $SLURM_NODEID $(scontrol show hostnames "$SLURM_JOB_NODELIST" | paste -sd,)"'
    out = slurm_cluster.run(
        ["srun", "-N2", "--ntasks-per-node=1", "--time=2", "-l", "bash", "-c", script]
    ).stdout
    rows = sorted(line.split() for line in out.splitlines())
    assert rows == [
        ["0:", "node1", "0", "node1,node2"],
        ["1:", "node2", "1", "node1,node2"],
    ], out


@pytest.mark.slurm
def test_nodes_are_addressed_on_loopback(slurm_cluster: SlurmCluster):
    out = slurm_cluster.run(["scontrol", "show", "node", "node1"]).stdout
    assert "NodeAddr=127.0.0.1" in out.split(), out


def _where_am_i() -> tuple[int, str, int]:
    import os

    import submitit

    env = submitit.JobEnvironment()
    return int(os.environ["SLURM_NODEID"]), os.environ["SLURMD_NODENAME"], env.global_rank


def _executor(folder: Path, nodes: int) -> submitit.SlurmExecutor:
    executor = submitit.SlurmExecutor(folder=folder)
    # The sbatch parameters the launcher uses, as this cluster accepts them.
    executor.update_parameters(
        job_name="vlm-slurm-test", partition="debug", nodes=nodes, ntasks_per_node=1,
        cpus_per_task=1, mem="1GB", time=5, signal_delay_s=30,
    )  # fmt: skip
    return executor


@pytest.mark.slurm
def test_submitit_two_node_job(slurm_cluster: SlurmCluster, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    job = _executor(tmp_path, nodes=2).submit(_where_am_i)
    script = Path(job.paths.submission_file).read_text()
    assert "#SBATCH --signal=USR2@30" in script and "#SBATCH --mem=1GB" in script, script
    results = submitit_results(job, slurm_cluster.env, timeout_s=120)
    assert sorted(results) == [(0, "node1", 0), (1, "node2", 1)], results


def _die_without_result() -> None:
    import os

    os._exit(3)


@pytest.mark.slurm
def test_job_that_dies_without_a_result_is_reported_not_awaited_forever(
    slurm_cluster: SlurmCluster, tmp_path: Path, monkeypatch
):
    # submitit's own job.result() would wait forever here: sacct fails, the state stays UNKNOWN.
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    job = _executor(tmp_path, nodes=1).submit(_die_without_result)
    with pytest.raises(RuntimeError, match=f"job {job.job_id} ended without a result"):
        submitit_results(job, slurm_cluster.env, timeout_s=120)
    assert not os.path.exists(job.paths.result_pickle)


@pytest.mark.parametrize(("ci", "expect"), [("true", "1 error"), ("", "1 skipped")])
def test_without_slurm_ci_fails_and_others_skip(ci: str, expect: str, tmp_path: Path):
    # No slurm_cluster fixture here: this runs a pytest of its own on a PATH without Slurm.
    test = f"{Path(__file__)}::test_nodes_are_addressed_on_loopback"
    env = {k: v for k, v in os.environ.items() if k not in ("SLURM_CONF", "CI")}
    env.update(PATH=str(tmp_path), CI=ci)
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert expect in out.stdout, out.stdout + out.stderr
    assert (out.returncode != 0) == (ci == "true"), out.stdout
    if ci == "true":
        assert "CI=true needs Slurm: Slurm not installed" in out.stdout, out.stdout


@pytest.mark.slurm
def test_start_again_is_a_quick_no_op(slurm_cluster: SlurmCluster):
    if slurm_cluster.conf.parent != Path(os.environ.get("VLM_SLURM_DIR", "/tmp/vlm-slurm")):
        pytest.skip(f"SLURM_CONF={slurm_cluster.conf} is not the local_cluster.sh cluster")
    start = subprocess.run(
        ["bash", str(SCRIPT), "start"], capture_output=True, text=True, timeout=60
    )
    assert start.returncode == 0, start.stderr
    assert start.stdout == f"export SLURM_CONF={slurm_cluster.conf}\n"
    assert "already running" in start.stderr, start.stderr
