"""On the nodes: `python -m launcher.node RUN_DIR` and the `NodeTask` submitit pickles run
one node's share of a planned job (rendezvous, prepare steps, the engine, requeue).
Never imports launcher.plan or launcher.submit (tests/test_stages.py).

`launcher.node.NodeTask` is the name queued jobs' pickles hold; it resolves lazily so that
importing a node module (launcher.node.checkpoints, say) does not import the whole task.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name in ("NodeTask", "main", "run_node"):
        from launcher.node import task

        return getattr(task, name)
    raise AttributeError(f"module 'launcher.node' has no attribute {name!r}")
