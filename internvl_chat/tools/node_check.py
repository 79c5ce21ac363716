"""The node pre-flight's measurements, run in the job's own allocation before training.

    torchrun --nnodes=N --node_rank=R --nproc_per_node=D ... -m internvl_chat.tools.node_check RUN_DIR

(launcher.node.nodecheck plans the argv, launcher.node.gate runs it on every node and judges the
figures). Every rank measures its device: a matmul throughput test (bf16 on GPUs/NPUs, fp32
on CPU) for `seconds`; the devices and their free memory (nvidia-smi / npu-smi where present,
CPU count and memory on CPU) on local rank 0; then every rank joins an all-reduce over all
nodes and devices (the job's backend) at a few message sizes, and one between node 0 and each
other node (its link), reported as nccl-tests' bus bandwidth: busbw = algbw x 2(n-1)/n.
Global rank 0 writes RUN_DIR/preflight.json, then every rank leaves together.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import time
from datetime import timedelta

WINDOW_S = 0.2
"""One timed matmul window; the figure is the median window, so a short hiccup does not decide."""


def _device(torch, accelerator: str, local_rank: int):
    if accelerator == "cuda":
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    if accelerator == "npu":
        import torch_npu  # noqa: F401

        torch.npu.set_device(local_rank)
        return torch.device("npu", local_rank)
    return torch.device("cpu")


def _sync(torch, accelerator: str) -> None:
    if accelerator == "cuda":
        torch.cuda.synchronize()
    elif accelerator == "npu":
        torch.npu.synchronize()


def matmul_tflops(torch, device, accelerator: str, seconds: float) -> float:
    """Dense matmul throughput of one device, in TFLOP/s (median of WINDOW_S windows)."""
    gpu = accelerator != "cpu"
    n = 4096 if gpu else 256
    dtype = torch.bfloat16 if gpu else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):  # warm-up: kernels chosen, caches filled
        a @ b
    _sync(torch, accelerator)
    rates, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline or len(rates) < 3:
        t0, count = time.perf_counter(), 0
        while time.perf_counter() - t0 < WINDOW_S:
            for _ in range(8):
                a @ b
            _sync(torch, accelerator)
            count += 8
        rates.append(2 * n**3 * count / (time.perf_counter() - t0) / 1e12)
    return statistics.median(rates)


def _smi(accelerator: str) -> dict:
    """Driver and per-device memory as the vendor tool reports them, where it is installed."""
    if accelerator == "cuda" and shutil.which("nvidia-smi"):
        q = "--query-gpu=index,name,memory.total,memory.free,driver_version"
        out = subprocess.run(["nvidia-smi", q, "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
        rows = [[c.strip() for c in ln.split(",")] for ln in out.stdout.splitlines() if ln]
        return {
            "tool": "nvidia-smi",
            "driver": rows[0][4] if rows else None,
            "devices": [
                {"index": int(r[0]), "name": r[1], "total_gb": float(r[2]) / 1024,
                 "free_gb": float(r[3]) / 1024} for r in rows
            ],
        }  # fmt: skip
    if accelerator == "npu" and shutil.which("npu-smi"):
        out = subprocess.run(["npu-smi", "info"], capture_output=True, text=True, timeout=60)
        return {"tool": "npu-smi", "text": out.stdout[-4000:]}
    return {}


def device_facts(torch, accelerator: str) -> dict:
    """What this node has: devices, their free memory, the driver and the torch build."""
    facts = {"torch": torch.__version__, "python": platform.python_version()}
    if accelerator == "cuda":
        facts["cuda"] = torch.version.cuda
        facts["device_count"] = torch.cuda.device_count()
        free = [torch.cuda.mem_get_info(i)[0] / 2**30 for i in range(facts["device_count"])]
        facts["free_gb"] = [round(f, 2) for f in free]
    elif accelerator == "npu":
        facts["device_count"] = torch.npu.device_count()
    else:
        facts["device_count"] = len(os.sched_getaffinity(0))  # the CPUs this task may use
        pages = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        facts["free_gb"] = [round(pages / 2**30, 2)]
    facts |= _smi(accelerator)
    return facts


def busbw_gbps(torch, dist, device, nbytes: int, group=None, iters: int = 5) -> float:
    """nccl-tests' bus bandwidth of an all-reduce of `nbytes` over `group`, in GB/s."""
    n = dist.get_world_size(group)
    x = torch.ones(nbytes // 4, dtype=torch.float32, device=device)
    dist.all_reduce(x, group=group)  # warm-up: connections made
    dist.barrier(group=group)
    t0 = time.perf_counter()
    for _ in range(iters):
        dist.all_reduce(x, group=group)
    if device.type != "cpu":
        torch.cuda.synchronize() if device.type == "cuda" else torch.npu.synchronize()
    algbw = nbytes * iters / (time.perf_counter() - t0) / 1e9
    return algbw * 2 * (n - 1) / n if n > 1 else algbw


def main(argv: list[str] | None = None) -> int:
    import torch
    import torch.distributed as dist

    from launcher.rundir import RunDir, write_json_atomic

    run = RunDir((argv or sys.argv[1:])[0])
    rec = json.loads(run.plan_json.read_text())["preflight"]
    hw = rec["hw"]
    accelerator = hw["accelerator"]
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank, per_node = int(os.environ["LOCAL_RANK"]), int(os.environ["LOCAL_WORLD_SIZE"])
    node_rank = rank // per_node
    device = _device(torch, accelerator, local_rank)
    dist.init_process_group(hw["backend"], timeout=timedelta(seconds=rec["timeout_s"]))
    name = os.environ.get("VLM_NODE_NAME") or socket.gethostname()
    started = time.time()
    mine = {
        "node_rank": node_rank,
        "local_rank": local_rank,
        "node": name,
        "hostname": socket.gethostname(),
        "matmul_tflops": round(matmul_tflops(torch, device, accelerator, rec["matmul_s"]), 6),
    }
    if local_rank == 0:
        mine["facts"] = device_facts(torch, accelerator)
    sizes = rec["message_bytes"]
    mine["allreduce_busbw_gbps"] = {
        str(s): round(busbw_gbps(torch, dist, device, s), 4) for s in sizes
    }
    # node 0's first rank with each other node's first rank: that node's link
    link = {}
    for other in range(1, world // per_node):
        group = dist.new_group([0, other * per_node])
        if rank in (0, other * per_node):
            link[other] = round(busbw_gbps(torch, dist, device, sizes[-1], group), 4)
        dist.barrier()
    mine["link_busbw_gbps"] = link
    gathered: list[dict] = [{} for _ in range(world)]
    dist.all_gather_object(gathered, mine)
    if rank == 0:
        write_json_atomic(run.preflight_json, _aggregate(gathered, rec, started))
    dist.barrier()  # every node finds preflight.json once its torchrun returns
    dist.destroy_process_group()
    return 0


def _aggregate(ranks: list[dict], rec: dict, started: float) -> dict:
    """Per node: its devices' figures and facts; node 0's link figures go to the other node."""
    nodes: dict[int, dict] = {}
    for r in ranks:
        node = nodes.setdefault(r["node_rank"], {"node_rank": r["node_rank"], "node": r["node"],
                                                 "hostname": r["hostname"], "matmul_tflops": []})  # fmt: skip
        node["matmul_tflops"].append(r["matmul_tflops"])
        if "facts" in r:
            node["facts"] = r["facts"]
    for r in ranks:
        for other, bw in r["link_busbw_gbps"].items():
            nodes[int(other)]["link_busbw_gbps"] = bw
    allreduce = ranks[0]["allreduce_busbw_gbps"]
    return {
        "hw": rec["hw"],
        "measured_at": started,
        "duration_s": round(time.time() - started, 2),
        "world_size": len(ranks),
        "allreduce_busbw_gbps": allreduce,
        "nodes": [nodes[k] for k in sorted(nodes)],
    }


if __name__ == "__main__":
    sys.exit(main())
