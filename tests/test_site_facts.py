"""Slurm facts: absurd numbers refused at once, the partition read as sinfo reports it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from test_plan import make_plan

from launcher.config.spec import ConfigError
from launcher.plan.partition import Partition, Unknown, compare, read_partition, time_line

# `sinfo -h -o SINFO_FORMAT` on a GPU site: one line per node state, so a partition repeats.
SINFO = """\
gpu*|2-00:00:00|4:00:00|128|1031000|12|gpu:a800:8(S:0-1)|1-8
gpu*|2-00:00:00|4:00:00|96|515000|4|gpu:a800:8(S:0-1)|1-8
cpu|infinite|n/a|64|250000|20|(null)|1-infinite
"""


def test_sinfo_lines_of_one_partition_are_added_up():
    part = read_partition(None, SINFO)
    assert isinstance(part, Partition)
    assert (part.name, part.nodes, part.cpus, part.mem_mb) == ("gpu", 16, 96, 515000)
    assert (part.max_job_nodes, part.gres) == (8, "gpu:a800:8(S:0-1)")
    assert read_partition("nope", SINFO) == Unknown("nope", ("gpu", "cpu"))


def test_the_time_limit_shown_is_default_time_without_time_min():
    gpu, cpu = read_partition("gpu", SINFO), read_partition("cpu", SINFO)
    assert (gpu.applies, gpu.applies_min, cpu.applies) == ("4:00:00", 240, "infinite")
    assert time_line(gpu, None).startswith("partition gpu's DefaultTime 4:00:00 (no --time")
    assert time_line(gpu, 600) == "cluster.time_min=600 (partition gpu allows 2-00:00:00)"


def test_requests_beyond_the_partition_are_refused(tmp_path: Path):
    _, spec = make_plan(tmp_path, "model=internvl_20b", "hw=a800", "nodes=16", "dry_run=true",
                        "hw.gres=gpu:a800:8")  # fmt: skip
    gpu, cpu = read_partition("gpu", SINFO), read_partition("cpu", SINFO)
    assert {p.setting for p in compare(spec, 80, 500, gpu)} == {"nodes"}  # 16 > 8 per job
    assert {p.setting for p in compare(spec, 128, 1000, gpu)} == {
        "nodes", "hw.cpus_per_node", "hw.node_mem_gb"}  # fmt: skip
    gres = [p for p in compare(spec, 8, 10, cpu) if p.setting == "hw.gres"]
    assert gres and "offer no GRES" in gres[0].message


@pytest.mark.parametrize(
    "override,setting",
    [("nodes=100000000000000000000000", "nodes"), ("nodes=100000000", "nodes"),
     ("nodes=-2", "nodes"), ("hw.devices_per_node=100000", "hw.devices_per_node"),
     ("hw.cpus_per_node=100000", "hw.cpus_per_node"), ("cluster.mem_gb=-1", "cluster.mem_gb"),
     ("hw.node_mem_gb=-5", "hw.node_mem_gb"), ("cluster.time_min=-1", "cluster.time_min"),
     ("cluster.mem_per_gpu_gb=0", "cluster.mem_per_gpu_gb")],
)  # fmt: skip
def test_absurd_numbers_are_refused_at_once(tmp_path: Path, override: str, setting: str):
    start = time.monotonic()
    with pytest.raises(ConfigError) as e:
        make_plan(tmp_path, "model=internvl_20b", "hw=a800", "dry_run=true", override)
    assert time.monotonic() - start < 10
    assert setting in {p.setting for p in e.value.problems}
    assert not (tmp_path / "run").exists()


@pytest.mark.slurm
def test_an_unknown_partition_is_refused_listing_the_real_ones(
    tmp_path: Path, slurm_cluster, monkeypatch
):
    """sinfo answering means this is the cluster: a typo is refused on a dry run too."""
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    with pytest.raises(ConfigError) as e:
        make_plan(tmp_path, "model=tiny_internvl", "cluster=slurm", "hw=cpu", "dry_run=true",
                  "cluster.partition=nonexistent")  # fmt: skip
    [p] = [p for p in e.value.problems if p.setting == "cluster.partition"]
    listed = slurm_cluster.run(["sinfo", "-h", "-o", "%R"]).stdout.split()
    assert "'nonexistent' is not a partition" in p.message and listed
    assert all(name in p.message for name in listed)
    assert not (tmp_path / "run").exists()
