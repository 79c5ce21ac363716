"""Shared pytest fixtures."""

import importlib.util
import os

import pytest
from slurm_cluster import SlurmCluster, SlurmUnavailable, find_or_start


@pytest.fixture(scope="session")
def slurm_cluster() -> SlurmCluster:
    """A running Slurm cluster ($SLURM_CONF, else slurm/local_cluster.sh start; left running).

    Skips where Slurm cannot run, except under CI=true, where that is a failure.
    """
    try:
        return find_or_start()
    except SlurmUnavailable as e:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true needs Slurm: {e}", pytrace=False)
        pytest.skip(str(e))
    except RuntimeError as e:
        pytest.fail(f"local Slurm cluster did not start:\n{e}", pytrace=False)


# Test modules that need only requirements-launcher.txt: tests/run.sh runs them (marker
# `launcher`) a second time inside .venv-launcher, the torch-free login-node env.
LAUNCHER_MODULES = frozenset(
    f"test_{n}.py"
    for n in [
        "benchmark_rules",
        "collect",
        "collect_mindspeed",
        "defaults",
        "failures",
        "flops",
        "launcher_env",
        "launcher_light",
        "mindspeed",
        "module_size",
        "nodecheck",
        "official_engine",
        "plan",
        "readme",
        "reliability",
        "report",
        "rundir",
        "settings",
        "site",
        "slurm_cluster",
        "stages",
        "sweep_fast",
        "train_args",
        "xtuner",
    ]
)


TORCH_FREE = importlib.util.find_spec("torch") is None


def pytest_ignore_collect(collection_path, config):
    """In the torch-free env, only the launcher modules are collected (the others import
    torch, transformers, numpy or PIL at module level)."""
    if TORCH_FREE and collection_path.suffix == ".py" and collection_path.name.startswith("test_"):
        return collection_path.name not in LAUNCHER_MODULES
    return None


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.name in LAUNCHER_MODULES:
            item.add_marker(pytest.mark.launcher)
