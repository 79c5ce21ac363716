"""Per-node step compute time for the straggler detector (launcher.node.nodecheck.stragglers).

launcher.node.task sets VLM_STEP_TIMES (RUN_DIR/logs/node{R}.steps.jsonl) and VLM_NODE_NAME; local
rank 0 of each node then appends `{"step", "node", "compute_s"}` per optimizer step, where
compute_s is the forward time of its micro-batches. Forward only: backward's gradient
all-reduce makes every node wait for the slowest, which would hide who is slow.
"""

from __future__ import annotations

import json
import os
import time


class NodeTimes:
    def __init__(self, torch, device_type: str):
        path = os.environ.get("VLM_STEP_TIMES")
        on = bool(path) and os.environ.get("LOCAL_RANK", "0") == "0"
        self.file = open(path, "a", buffering=1) if on else None  # noqa: SIM115
        self.node = os.environ.get("VLM_NODE_NAME", "node")
        self.sync = torch.cuda.synchronize if device_type == "cuda" else (lambda: None)
        self.total, self.t0 = 0.0, 0.0

    def start(self) -> None:
        if self.file is not None:
            self.t0 = time.perf_counter()

    def stop(self) -> None:
        """After the forward; the device is synchronised only on the recording rank."""
        if self.file is not None:
            self.sync()
            self.total += time.perf_counter() - self.t0

    def step(self, step: int) -> None:
        if self.file is not None:
            rec = {"step": step, "node": self.node, "compute_s": round(self.total, 6)}
            self.file.write(json.dumps(rec) + "\n")
        self.total = 0.0
