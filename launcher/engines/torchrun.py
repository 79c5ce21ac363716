"""The torchrun prefix every torchrun-based engine starts its nodes with (one place)."""

from __future__ import annotations

from launcher.contract import MASTER_ADDR, MASTER_PORT, Derived
from launcher.rundir import RunDir


def torchrun(python: str, derived: Derived, run: RunDir, node_rank: int) -> tuple[str, ...]:
    """`python -m torch.distributed.run` for one node; the entry script and its args follow."""
    return (
        python,
        "-m",
        "torch.distributed.run",
        f"--nnodes={derived.nodes}",
        f"--node_rank={node_rank}",
        f"--nproc_per_node={derived.gpus_per_node}",
        f"--master_addr={MASTER_ADDR}",
        f"--master_port={MASTER_PORT}",
        # per-rank stdout/stderr files, and every rank's lines (prefixed) in the node log
        f"--log-dir={run.node_ranks_dir(node_rank)}",
        "--tee=3",
    )
