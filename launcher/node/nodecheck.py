"""The node pre-flight and the straggler detector, launcher side (pure, no torch).

`preflight=true` (the default for benchmark=* runs) makes every node run
`internvl_chat.tools.node_check` in the job's own allocation before training (planned here,
run by launcher.node.gate); its figures land in RUN_DIR/preflight.json and `judge` names the
bad nodes. During the run each node's local rank 0 records its step compute time
(RUN_DIR/logs/node{R}.steps.jsonl) and `stragglers` names a node that is slower than the
others. `status`, summary.json and report.md show both (`status_bits`, `summary_fields`,
`report_section`).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from launcher.config.spec import JobSpec
from launcher.contract import Derived
from launcher.engines.torchrun import torchrun
from launcher.rundir import RunDir

PORT_OFFSET = -2500
"""The pre-flight's rendezvous port is the job's master port minus this much (27000-29499):
the training's torchrun starts on the job's own port while a slower node may still be
leaving the pre-flight's."""
MATMUL_S = {"cpu": 2.0, "cuda": 5.0, "npu": 5.0}
MESSAGE_BYTES = {"cpu": [1 << 20, 8 << 20], "cuda": [8 << 20, 64 << 20, 512 << 20]}
BACKWARD_FACTOR = 3.0
"""Forward + backward compute over forward alone (backward ~ 2x forward): the straggler's
extra forward time, times this, is what every step waits for it."""


def alias(arg: str) -> str:
    """`preflight=true|false` on the command line means `preflight.enabled=...`."""
    key, sep, value = arg.partition("=")
    if sep and key.lstrip("+") == "preflight" and value.lower() in ("true", "false"):
        return f"preflight.enabled={value.lower()}"
    return arg


def settings(spec: JobSpec) -> dict[str, Any] | None:
    """The pre-flight this run asks for (defaults resolved), or None when it is off."""
    p = spec.preflight
    benchmark = spec.benchmark.name != "none"
    if not (benchmark if p.enabled is None else p.enabled):
        return None
    return {
        "on_fail": p.on_fail or ("exclude" if benchmark else "warn"),
        "matmul_vs_median": p.matmul_vs_median,
        "matmul_vs_peak": p.matmul_vs_peak,
        "busbw_vs_median": p.busbw_vs_median,
        "straggler_ratio": p.straggler_ratio,
    }


def notes(spec: JobSpec) -> list[str]:
    """The plan summary's line about the node pre-flight, when the run has one."""
    found = settings(spec)
    if found is None:
        return []
    return [f"node pre-flight: every node measured before training, bad nodes: "
            f"on_fail={found['on_fail']} (preflight=false skips it)"]  # fmt: skip


def plan_record(spec: JobSpec, derived: Derived, run: RunDir, python: str) -> dict | None:
    """plan.json's "preflight": thresholds, what `hw` promises, and each node's argv."""
    found = settings(spec)
    if found is None:
        return None
    hw = spec.hw
    argv = []
    for r in range(derived.nodes):
        prefix = [a for a in torchrun(python, derived, run, r) if not a.startswith("--log-dir=")]
        log_dir = f"--log-dir={run.node_preflight_dir(r)}"
        argv.append([*prefix, log_dir, "-m", "internvl_chat.tools.node_check", str(run.root)])
    return {
        **found,
        "hw": {
            "name": hw.name,
            "accelerator": hw.accelerator,
            "devices_per_node": hw.devices_per_node,
            "memory_gb": hw.memory_gb,
            "peak_tflops": hw.peak_tflops,
            "backend": hw.dist_backend,
        },
        "matmul_s": MATMUL_S.get(hw.accelerator, 5.0),
        "message_bytes": MESSAGE_BYTES.get(hw.accelerator, MESSAGE_BYTES["cuda"]),
        "timeout_s": min(spec.cluster.collective_timeout_s, 300),
        "argv": argv,
    }


def judge(found: dict, rec: dict) -> list[dict]:
    """The bad nodes of a pre-flight (preflight.json's figures, the plan's thresholds), each
    with the reasons quoting its figures. Pure: every node computes the same answer."""
    hw = found["hw"]
    nodes = found["nodes"]
    matmul = {n["node_rank"]: min(n["matmul_tflops"]) for n in nodes}
    med = statistics.median(matmul.values())
    links = {n["node_rank"]: n["link_busbw_gbps"] for n in nodes if "link_busbw_gbps" in n}
    link_med = statistics.median(links.values()) if links else None
    bad = []
    for n in nodes:
        r, why = n["node_rank"], []
        facts = n.get("facts") or {}
        if hw["accelerator"] != "cpu":
            count = facts.get("device_count")
            if count is not None and count < hw["devices_per_node"]:
                why.append(f"{count} devices, hw={hw['name']} has {hw['devices_per_node']}")
            low = [f for f in facts.get("free_gb", []) if f < 0.8 * hw["memory_gb"]]
            if low:
                why.append(f"free device memory {min(low):.1f} GB < 0.8 x {hw['memory_gb']} GB")
            if matmul[r] < rec["matmul_vs_peak"] * hw["peak_tflops"]:
                why.append(f"matmul {matmul[r]:.4g} TFLOP/s < {rec['matmul_vs_peak']} x "
                           f"hw peak {hw['peak_tflops']}")  # fmt: skip
        if matmul[r] < rec["matmul_vs_median"] * med:
            why.append(f"matmul {matmul[r]:.4g} TFLOP/s = {matmul[r] / med:.2f} x the median "
                       f"node's {med:.4g} (< {rec['matmul_vs_median']})")  # fmt: skip
        if r in links and link_med and links[r] < rec["busbw_vs_median"] * link_med:
            why.append(f"link busbw {links[r]:.4g} GB/s = {links[r] / link_med:.2f} x the median "
                       f"link's {link_med:.4g} (< {rec['busbw_vs_median']})")  # fmt: skip
        if why:
            bad.append({"node": n["node"], "node_rank": r, "reasons": why})
    return bad


def table(found: dict) -> list[str]:
    """One line per node: matmul (slowest device), link bus bandwidth, devices."""
    lines = [f"{'node':<12} {'matmul TFLOP/s':>15} {'link busbw GB/s':>16} devices  torch"]
    for n in found["nodes"]:
        facts = n.get("facts") or {}
        link = n.get("link_busbw_gbps")
        lines.append(
            f"{n['node']:<12} {min(n['matmul_tflops']):>15.4g} "
            f"{'-' if link is None else f'{link:.4g}':>16} "
            f"{facts.get('device_count', '-')!s:>7}  {facts.get('torch', '-')}"
        )
    bw = ", ".join(f"{int(k) >> 20} MiB {v:.4g}" for k, v in found["allreduce_busbw_gbps"].items())
    lines.append(f"all-reduce busbw over {found['world_size']} ranks (GB/s): {bw}")
    return lines


def stragglers(times: dict[str, list[float]], ratio: float, step_time: float | None) -> list[dict]:
    """Nodes whose median step compute time is over `ratio` x the median of the others'
    medians, with the fraction of TGS each costs: its extra compute (forward x
    BACKWARD_FACTOR) over the step time, at most 1 - 1/its ratio."""
    med = {node: statistics.median(ts) for node, ts in times.items() if ts}
    out = []
    for node, m in med.items():
        others = [v for k, v in med.items() if k != node]
        if not others:
            continue
        ref = statistics.median(others)
        if ref > 0 and m > ratio * ref:
            cost = 1 - ref / m
            if step_time:
                cost = min(cost, BACKWARD_FACTOR * (m - ref) / step_time)
            out.append({"node": node, "median_compute_s": round(m, 6),
                        "others_median_s": round(ref, 6), "ratio": round(m / ref, 3),
                        "tgs_cost": round(cost, 4)})  # fmt: skip
    return out


def step_times(run: RunDir) -> dict[str, list[float]]:
    """Each node's recorded step compute times (logs/node{R}.steps.jsonl), by node name."""
    out: dict[str, list[float]] = {}
    for path in sorted(run.logs_dir.glob("node*.steps.jsonl")):
        text = path.read_text()
        lines = text.splitlines()
        if lines and not text.endswith("\n"):
            lines.pop()  # being written
        for line in lines:
            rec = json.loads(line)
            out.setdefault(rec["node"], []).append(rec["compute_s"])
    return out


def run_stragglers(run: RunDir, ratio: float | None = None) -> list[dict]:
    """The run's stragglers so far (threshold: the plan's, else PreflightSpec's default)."""
    from launcher.config.spec import PreflightSpec

    if ratio is None:
        plan = json.loads(run.plan_json.read_text()) if run.plan_json.exists() else {}
        ratio = (plan.get("preflight") or {}).get("straggler_ratio")
        ratio = ratio or PreflightSpec().straggler_ratio
    times = step_times(run)
    if len(times) < 2:
        return []
    steps = [r["step_time"] for r in run.metrics() if r.get("step_time")]
    return stragglers(times, ratio, statistics.median(steps) if steps else None)


def read(run: RunDir) -> dict | None:
    path = run.preflight_json
    return json.loads(path.read_text()) if path.exists() else None


def summary_fields(run: RunDir) -> dict[str, Any]:
    """summary.json's node fields: the pre-flight's verdict, excluded nodes, stragglers."""
    out: dict[str, Any] = {}
    found = read(run)
    if found is not None and "verdict" in found:
        out["preflight"] = found["verdict"]
    excluded = [e["excluded"] for e in run.requeues() if e.get("kind") == "preflight"]
    if excluded:
        out["excluded_nodes"] = excluded
    slow = run_stragglers(run)
    if slow or step_times(run):
        out["stragglers"] = slow
    return out


def _straggler_text(s: dict) -> str:
    return (f"{s['node']} {s['ratio']:.2f}x the others' step compute "
            f"({s['median_compute_s'] * 1e3:.1f} vs {s['others_median_s'] * 1e3:.1f} ms), "
            f"costs ~{s['tgs_cost'] * 100:.0f}% of TGS")  # fmt: skip


def status_bits(run: RunDir) -> str:
    """What `status` adds to a run's line: the pre-flight's verdict and the stragglers so far."""
    out = ""
    found = read(run)
    if found is not None:
        bad = (found.get("verdict") or {}).get("bad")
        out += " preflight=" + (",".join(b["node"] for b in bad) + "-bad" if bad else "ok")
    for s in run_stragglers(run):
        out += f" straggler={s['node']}({s['ratio']:.2f}x,-{s['tgs_cost'] * 100:.0f}%TGS)"
    return out


def preflight_table(run: RunDir, state: str) -> list[str]:
    """`status`'s lines under a run's line: the pre-flight's table, once measured."""
    found = read(run)
    return table(found) if found is not None else []


def report_section(paths: list[Path]) -> str:
    """report.md's "Nodes" section for the run dirs among `paths`; "" when none measured any."""
    parts = []
    for path in paths:
        run = RunDir(path)
        found, slow = read(run), run_stragglers(run) if run.plan_json.exists() else []
        if found is None and not slow:
            continue
        parts.append(f"\n### {path.name}\n\n")
        if found is not None:
            v = found.get("verdict") or {}
            parts.append("Pre-flight (" + f"on_fail={v.get('on_fail', '-')}, "
                         f"{found['duration_s']} s):\n\n```\n" + "\n".join(table(found)) + "\n```\n")  # fmt: skip
            for b in v.get("bad", []):
                parts.append(
                    f"- **{b['node']}**: " + "; ".join(b["reasons"]) + f" ({v.get('action')})\n"
                )
        excluded = [e for e in run.requeues() if e.get("kind") == "preflight"]
        parts += [
            f"- excluded {e['excluded']} and requeued (restart {e['restart']})\n" for e in excluded
        ]
        parts += [f"- straggler: {_straggler_text(s)}\n" for s in slow]
        if found is not None and not slow:
            parts.append("- no stragglers\n")
    return "\n## Nodes\n" + "".join(parts) if parts else ""
