"""Process-group setup for one rank: torchrun's env, or a single process without it."""

from __future__ import annotations

import os
import socket
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def single_process_env() -> None:
    """Let `python -m internvl_chat.train` run as one process without torchrun."""
    if "RANK" not in os.environ:
        os.environ.update(
            RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1",
            MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()),
        )  # fmt: skip


def isolate_extension_builds() -> None:
    """One JIT build folder per DeepSpeed version (unless TORCH_EXTENSIONS_DIR is set).

    DeepSpeed compiles its CPU shm-comm op into torch's shared extension cache; another venv
    with a different DeepSpeed (the XTuner one) rebuilds the same name there, and a run then
    loads the other version's module and dies at init ("no attribute vector_kernel_level").
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        ds_version = version("deepspeed")
    except PackageNotFoundError:
        return
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "torch_extensions"
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(base / f"deepspeed-{ds_version}"))


def skip_cpu_shm_build() -> None:
    """Keep DeepSpeed from JIT-compiling its CPU shm-comm op when the comm backend starts.

    The op (a C++ build of about 3 min on a cold cache, needing a compiler) serves only
    `inference_all_reduce`; training collectives go through torch.distributed either way.
    Marking it incompatible makes `build_shm_op()` return None, DeepSpeed's own no-op path.
    """
    import deepspeed.ops
    from deepspeed.accelerator import get_accelerator

    builder = get_accelerator().create_op_builder("ShareMemCommBuilder")
    if builder is not None:
        deepspeed.ops.__compatible_ops__[builder.NAME] = False


def groups_inherit_timeout(timeout) -> None:
    """Make process groups created later (`new_group` without a timeout) use `timeout` too.

    torch gives such a group its backend's default (gloo 30 min, NCCL 10 min), not the world
    group's timeout, and DeepSpeed creates its data-parallel group that way (ZeRO's gradient
    reductions run on that clone of the world): a hung node then stalled the others for 30
    minutes whatever ddp_timeout said (found by freezing node2 in test_faults_node_stop).
    """
    from torch.distributed import distributed_c10d as c10d

    c10d.default_pg_timeout = timeout
    if hasattr(c10d, "default_pg_nccl_timeout"):
        c10d.default_pg_nccl_timeout = timeout


class Dist:
    """This rank's place in the job and the collectives the loop needs."""

    def __init__(self, timeout_s: float = 1800):
        from datetime import timedelta

        import deepspeed
        import torch
        import torch.distributed as dist

        single_process_env()
        cuda = torch.cuda.is_available()
        if not cuda:
            skip_cpu_shm_build()
        # The timeout bounds how long a collective waits for a dead or hung rank (ddp_timeout).
        timeout = timedelta(seconds=timeout_s)
        groups_inherit_timeout(timeout)
        deepspeed.init_distributed(dist_backend="nccl" if cuda else "gloo", timeout=timeout)
        self.torch, self.dist = torch, dist
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.local_rank = int(os.environ.get("LOCAL_RANK", 0))
        self.device = torch.device(f"cuda:{self.local_rank}") if cuda else torch.device("cpu")
        if cuda:
            torch.cuda.set_device(self.device)
        self.is_main = self.rank == 0
        if self.local_rank == 0 and hasattr(os, "sched_getaffinity"):
            # what Slurm's task binding left this node's training: the CPUs the plan asked for?
            cpus = sorted(os.sched_getaffinity(0))
            print(
                f"[train] rank {self.rank}: {len(cpus)} CPU(s) {cpus} (sched_getaffinity)",
                flush=True,
            )

    def allreduce(self, values: list[float], op=None) -> list[float]:
        t = self.torch.tensor(values, dtype=self.torch.float64, device=self.device)
        self.dist.all_reduce(t, op=op or self.dist.ReduceOp.SUM)
        return t.tolist()

    def allmax(self, values: list[float]) -> list[float]:
        return self.allreduce(values, op=self.dist.ReduceOp.MAX)

    def barrier(self) -> None:
        self.dist.barrier()
