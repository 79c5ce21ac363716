"""What the job meets on the site: the nodes' interpreter, the partition, the Slurm request."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from test_plan import make_plan

from launcher.config import compose as composing
from launcher.config.spec import ConfigError
from launcher.plan import site
from launcher.submit.pipeline import plan_from_config


@pytest.mark.parametrize(
    "text,minutes",
    [("infinite", None), ("30", 30), ("30:00", 30), ("4:00:00", 240), ("1-00:00:00", 1440),
     ("2-12:30:00", 3630), ("10:30", 11)],
)  # fmt: skip
def test_slurm_time_limits(text: str, minutes: int | None):
    assert site.slurm_minutes(text) == minutes


@pytest.mark.parametrize(
    "setup,python",
    [
        ("[module load cuda, source /env/bin/activate]", "/env/bin/python"),
        ("['. /opt/venv/bin/activate']", "/opt/venv/bin/python"),
        ("[module load anaconda, conda activate internvl]", "python"),
    ],
)
def test_the_env_setup_activates_is_what_the_nodes_run(tmp_path: Path, setup: str, python: str):
    plan, _ = make_plan(tmp_path, "model=internvl_20b", "hw=a800", "dry_run=true",
                        f"cluster.setup={setup}")  # fmt: skip
    assert plan.python == python
    assert f"'{python}' -u -m submitit" in plan.files["sbatch.sh"] or (
        f" {python} -u -m submitit" in plan.files["sbatch.sh"]
    )


def test_a_cpu_torch_for_a_gpu_hw_is_a_warning(tmp_path: Path):
    build = site.torch_build(sys.executable)
    if build is None or build.version is None or build.cuda:
        pytest.skip("needs this interpreter to hold a CPU-only torch")
    # the nodes' python left at its default: the launcher's own
    cfg, problems = composing.compose(
        ["model=internvl_20b", "hw=a800", "dry_run=true", f"run_dir={tmp_path}/run"]
    )
    plan, _ = plan_from_config(cfg, problems)
    assert plan.python == sys.executable
    warning = [w for w in plan.warnings if w.startswith("cluster.python:")]
    assert warning and "CPU-only build" in warning[0] and "hw=a800 needs a CUDA build" in warning[0]
    assert any(n.startswith(f"python on the nodes: {sys.executable}") for n in plan.notes)


def test_torch_build_is_read_without_running_torch(tmp_path: Path):
    assert site.torch_build(str(tmp_path / "no" / "python")) is None
    fake = tmp_path / "env"
    (fake / "torch").mkdir(parents=True)
    (fake / "torch" / "__init__.py").write_text("raise SystemExit('torch must not be imported')\n")
    (fake / "torch" / "version.py").write_text(
        "__version__ = '2.5.1+cu121'\ncuda: Optional[str] = '12.1'\n"
    )
    script = tmp_path / "python"
    script.write_text(f'#!/bin/sh\nPYTHONPATH={fake} exec {sys.executable} "$@"\n')
    script.chmod(0o755)
    build = site.torch_build(str(script))
    assert build == site.TorchBuild(version="2.5.1+cu121", cuda="12.1")
    assert build.drives("cuda") and not build.drives("npu")


def test_cpus_memory_and_exclusive_are_overridable(tmp_path: Path):
    plan, _ = make_plan(tmp_path, "model=internvl_20b", "hw=a800", "dry_run=true",
                        "hw.cpus_per_node=64", "cluster.mem_per_gpu_gb=96",
                        "cluster.exclusive=false")  # fmt: skip
    sbatch = plan.files["sbatch.sh"]
    assert "#SBATCH --cpus-per-task=64\n" in sbatch
    assert "#SBATCH --mem-per-gpu=96G\n" in sbatch and "--mem=" not in sbatch
    assert "--exclusive" not in sbatch and "--time" not in sbatch and "--wckey" not in sbatch


@pytest.mark.slurm
def test_a_partition_that_cannot_run_the_job_is_refused(tmp_path: Path, slurm_cluster, monkeypatch):
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    args = ["model=internvl_20b", "hw=a800", "nodes=4", "cluster.time_min=100000"]
    with pytest.raises(ConfigError) as e:
        make_plan(tmp_path, *args, "hw.node_mem_gb=100000")
    settings = {p.setting for p in e.value.problems}
    assert {"nodes", "hw.cpus_per_node", "hw.node_mem_gb", "hw.gres"} <= settings
    plan, _ = make_plan(tmp_path, *args, "dry_run=true", run_dir=tmp_path / "dry")
    assert any("(dry run: Slurm would refuse it)" in w and "hw.cpus_per_node" in w
               for w in plan.warnings)  # fmt: skip
    assert any(n.startswith("checked:") and "partition debug (sinfo)" in n for n in plan.notes)
