"""The node pre-flight's planning and verdict, and the straggler detector, on recorded figures.

The CPU figures were measured on the local 2-node Slurm cluster (tests/test_preflight_slurm.py
prints them; the machine's load average was 12): hw=cpu, one fp32 matmul thread per node,
node2 pinned and niced on a core shared with a spinning process. The GPU ones are made up for
an 8 x A800 node set with one throttled GPU, one slow link and one node short of a GPU, in the
shape node_check writes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from launcher.config import compose as composing
from launcher.node import nodecheck
from launcher.rundir import RunDir
from launcher.submit.pipeline import plan_from_config

REPO = Path(__file__).resolve().parent.parent
CPU_HW = {"name": "cpu", "accelerator": "cpu", "devices_per_node": 1, "memory_gb": 8,
          "peak_tflops": 0.1, "backend": "gloo"}  # fmt: skip
A800 = {"name": "a800", "accelerator": "cuda", "devices_per_node": 8, "memory_gb": 80,
        "peak_tflops": 312, "backend": "nccl"}  # fmt: skip
THRESHOLDS = {"on_fail": "exclude", "matmul_vs_median": 0.9, "matmul_vs_peak": 0.5,
              "busbw_vs_median": 0.8, "straggler_ratio": 1.15}  # fmt: skip


def node(rank: int, name: str, matmul: list[float], link: float | None = None, **facts) -> dict:
    out = {"node_rank": rank, "node": name, "hostname": name, "matmul_tflops": matmul,
           "facts": {"torch": "2.13.0+cpu", **facts}}  # fmt: skip
    if link is not None:
        out["link_busbw_gbps"] = link
    return out


def measured(hw: dict, *nodes: dict) -> dict:
    return {"hw": hw, "measured_at": 0.0, "duration_s": 4.2, "world_size": len(nodes),
            "allreduce_busbw_gbps": {"1048576": 0.07, "8388608": 0.19}, "nodes": list(nodes)}  # fmt: skip


def test_a_slow_cpu_node_is_named_with_its_matmul_figure_and_the_median():
    found = measured(CPU_HW, node(0, "node1", [0.016375]), node(1, "node2", [0.00479], 0.1051))
    bad = nodecheck.judge(found, THRESHOLDS)
    assert [b["node"] for b in bad] == ["node2"]
    (why,) = bad[0]["reasons"]
    assert why == "matmul 0.00479 TFLOP/s = 0.45 x the median node's 0.01058 (< 0.9)", why
    # a CPU's peak_tflops is nominal: 0.016 < 0.5 x 0.1 does not make node1 bad
    assert nodecheck.judge(found, THRESHOLDS | {"matmul_vs_median": 0.4}) == []


def test_gpu_nodes_are_judged_against_peak_devices_memory_and_the_median_link():
    found = measured(
        A800,
        node(0, "gpu01", [251.0] * 8, device_count=8, free_gb=[79.2] * 8),
        node(1, "gpu02", [249.5] * 7 + [160.0], 171.0, device_count=8, free_gb=[79.2] * 8),
        node(2, "gpu03", [250.1] * 8, 92.0, device_count=8, free_gb=[79.2] * 8),
        node(3, "gpu04", [252.3] * 8, 170.5, device_count=7, free_gb=[79.2] * 6 + [40.1]),
        node(4, "gpu05", [250.7] * 8, 172.2, device_count=8, free_gb=[79.2] * 8),
    )
    bad = {b["node"]: b["reasons"] for b in nodecheck.judge(found, THRESHOLDS)}
    assert sorted(bad) == ["gpu02", "gpu03", "gpu04"], bad
    assert bad["gpu02"] == ["matmul 160 TFLOP/s = 0.64 x the median node's 250.7 (< 0.9)"], (
        "the slowest GPU is the node's figure; 160 >= 0.5 x 312 passes the peak rule"
    )
    assert bad["gpu03"] == ["link busbw 92 GB/s = 0.54 x the median link's 170.8 (< 0.8)"]
    assert bad["gpu04"] == [
        "7 devices, hw=a800 has 8",
        "free device memory 40.1 GB < 0.8 x 80 GB",
    ]
    under_peak = measured(A800, node(0, "gpu01", [140.0] * 8), node(1, "gpu02", [141.0] * 8))
    assert {b["node"] for b in nodecheck.judge(under_peak, THRESHOLDS)} == {"gpu01", "gpu02"}


def test_stragglers_are_named_with_the_tgs_fraction_they_cost():
    times = {"node1": [0.101, 0.099, 0.100, 0.102], "node2": [0.100, 0.161, 0.160, 0.158]}
    (slow,) = nodecheck.stragglers(times, 1.15, step_time=0.9)
    assert slow["node"] == "node2" and slow["ratio"] == pytest.approx(1.582, abs=1e-3)
    # 3 x (0.159 - 0.1005) / 0.9, under 1 - 1/1.58
    assert slow["tgs_cost"] == pytest.approx(0.195, abs=1e-3)
    assert nodecheck.stragglers({"a": [1.0, 1.1], "b": [1.12, 1.1]}, 1.15, 2.0) == []
    assert nodecheck.stragglers({"a": [1.0]}, 1.15, 2.0) == [], "one node has no others"


def _plan(tmp_path: Path, *overrides: str):
    cfg, problems = composing.compose([*overrides, "dry_run=true", f"run_dir={tmp_path}/run"])
    return plan_from_config(cfg, problems)[0]


def test_on_for_benchmarks_with_exclude_off_otherwise_and_the_command_line_spelling(tmp_path):
    bench = ("benchmark=internvl_20b_tgs", "hw=a800", "nodes=4", "check_data=false")
    rec = _plan(tmp_path / "a", *bench).preflight
    assert rec["on_fail"] == "exclude" and rec["hw"]["peak_tflops"] == 312
    assert len(rec["argv"]) == 4
    assert "--node_rank=3" in rec["argv"][3] and "--nproc_per_node=8" in rec["argv"][3]
    assert rec["argv"][3][-3:] == ["-m", "internvl_chat.tools.node_check", f"{tmp_path}/a/run"]
    assert _plan(tmp_path / "b", *bench, "preflight.enabled=false").preflight is None
    assert _plan(tmp_path / "c", "nodes=2").preflight is None
    mine = _plan(tmp_path / "d", "nodes=2", "preflight.enabled=true", "preflight.on_fail=stop")
    assert mine.preflight["on_fail"] == "stop"
    assert nodecheck.alias("preflight=true") == "preflight.enabled=true"
    assert nodecheck.alias("preflight=False") == "preflight.enabled=false"
    assert nodecheck.alias("preflight.on_fail=warn") == "preflight.on_fail=warn"
    out = subprocess.run(
        [sys.executable, "launch.py", "preflight=true", "preflight.on_fail=bogus", "dry_run=true",
         f"run_dir={tmp_path}/e"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 2 and "preflight.on_fail" in out.stdout + out.stderr
    assert not (tmp_path / "e").exists()


def test_status_summary_and_report_show_the_verdict_and_stragglers(tmp_path: Path):
    run = RunDir(tmp_path / "run")
    run.logs_dir.mkdir(parents=True)
    run.plan_json.write_text(json.dumps({"preflight": THRESHOLDS}))
    found = measured(CPU_HW, node(0, "node1", [0.016375]), node(1, "node2", [0.00479], 0.1051))
    bad = nodecheck.judge(found, THRESHOLDS)
    found["verdict"] = {"on_fail": "warn", "bad": bad, "action": "warn"}
    run.preflight_json.write_text(json.dumps(found))
    for r, name, t in ((0, "node1", 0.1), (1, "node2", 0.2)):
        lines = [json.dumps({"step": s, "node": name, "compute_s": t}) for s in range(1, 6)]
        run.node_steps(r).write_text("\n".join(lines) + "\n")
    run.metrics_jsonl.write_text("".join(json.dumps({"step": s, "step_time": 1.0}) + "\n"
                                         for s in range(1, 6)))  # fmt: skip
    assert nodecheck.status_bits(run) == " preflight=node2-bad straggler=node2(2.00x,-30%TGS)"
    rows = nodecheck.preflight_table(run, "FAILED")
    assert rows[2] == "node2                0.00479           0.1051       -  2.13.0+cpu"
    fields = nodecheck.summary_fields(run)
    assert fields["preflight"]["bad"][0]["node"] == "node2"
    assert fields["stragglers"][0]["tgs_cost"] == pytest.approx(0.3)
    md = nodecheck.report_section([run.root])
    assert (
        md.startswith("\n## Nodes\n")
        and "\nnode2                0.00479           0.1051       -  2.13.0+cpu\n" in md
    )
    assert "- **node2**: matmul 0.00479 TFLOP/s" in md
    assert "- straggler: node2 2.00x the others' step compute (200.0 vs 100.0 ms)" in md
    assert nodecheck.report_section([tmp_path / "elsewhere"]) == ""
