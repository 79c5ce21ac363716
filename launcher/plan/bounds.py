"""Numbers no site can satisfy, refused before anything is built from them.

`bounds(spec)` runs first in the check stage: a negative memory size, zero devices, or a node
count no Slurm cluster has. Several later steps build one thing per node or per rank (the
per-node launch records, the divisors of the world size), so a spec with `nodes=10**20` must
stop here, at once, instead of growing until the machine runs out of memory. The limits are
far above the largest clusters and nodes in service (about 10,000 nodes of 8 devices, a few
hundred cores and a few TB of memory per node); they catch typos, not ambitions.
"""

from __future__ import annotations

from launcher.config.spec import JobSpec, Problem

MAX_NODES = 16384
MAX_DEVICES_PER_NODE = 64
MAX_CPUS_PER_NODE = 4096
MAX_NODE_MEM_GB = 64 * 1024
MAX_TIME_MIN = 365 * 24 * 60


def _range(setting: str, value: float | None, low: float, high: float, unit: str) -> list[Problem]:
    if value is None or low <= value <= high:
        return []
    got = f"{value:g}" if isinstance(value, float) else str(value)
    return [Problem(setting, f"must be between {low:g} and {high:g} {unit}, got {got}")]


def bounds(spec: JobSpec) -> list[Problem]:
    """Every out-of-range count and size at once (each names its setting and the range)."""
    hw, c = spec.hw, spec.cluster
    return [
        *_range("nodes", spec.nodes, 1, MAX_NODES, "nodes"),
        *_range("hw.devices_per_node", hw.devices_per_node, 1, MAX_DEVICES_PER_NODE, "devices"),
        *_range("hw.cpus_per_node", hw.cpus_per_node, 1, MAX_CPUS_PER_NODE, "CPUs"),
        *_range("hw.node_mem_gb", hw.node_mem_gb, 1, MAX_NODE_MEM_GB, "GB"),
        *_range("hw.memory_gb", hw.memory_gb, 0.001, MAX_NODE_MEM_GB, "GB per device"),
        *_range("hw.peak_tflops", hw.peak_tflops, 0.001, 10**6, "TFLOPs"),
        *_range("cluster.mem_gb", c.mem_gb, 0, MAX_NODE_MEM_GB, "GB (0: all of the node's)"),
        *_range("cluster.mem_per_gpu_gb", c.mem_per_gpu_gb, 1, MAX_NODE_MEM_GB, "GB"),
        *_range("cluster.time_min", c.time_min, 1, MAX_TIME_MIN, "minutes"),
    ]


def too_big(spec: JobSpec) -> bool:
    """True when nodes or devices are above range: nothing sized by them may be built."""
    return spec.nodes > MAX_NODES or spec.hw.devices_per_node > MAX_DEVICES_PER_NODE
