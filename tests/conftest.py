"""Shared pytest fixtures."""

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
