"""The node pre-flight and the straggler detector on the real local Slurm cluster, with node2
made really slow: every process of the job on node2 is pinned (sched_setaffinity, what
`taskset -a -p` does) to one core that three spinning processes keep busy. The pinning is
re-applied while the job runs, so it holds under TaskPlugin=task/none and task/affinity (which
sets the tasks' CPUs when they start). Only our own job's processes are pinned; the spinners
are ours and stopped at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from slurm_cluster import node_processes, squeue_state, wait_until_gone
from test_faults_slurm import logs, wait_for

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from launcher.rundir import RunDir  # noqa: E402

NICE = 5
"""CFS weight 335 against 1024 for a nice-0 neighbour: about a third of its share of the core."""


class Slowdown:
    """node2's share of job `job_id` runs niced on one core with `spinners` busy loops beside it."""

    def __init__(self, conf: Path, node: str, job_id: str, spinners: int = 1):
        self.conf, self.node, self.job_id = conf, node, job_id
        self.core = max(os.sched_getaffinity(0))
        self.n_spinners = spinners
        self.spinners: list[subprocess.Popen] = []
        self.pinned: set[str] = set()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._pin_loop, daemon=True)

    def __enter__(self) -> Slowdown:
        for _ in range(self.n_spinners):
            p = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            os.sched_setaffinity(p.pid, {self.core})
            self.spinners.append(p)
        self.thread.start()
        return self

    def _pin_loop(self) -> None:
        while not self.done.is_set():
            for pid in node_processes(self.conf, self.node, self.job_id):
                if _comm(pid) == "slurmd":
                    continue  # the node's daemon serves other jobs: leave it
                # with autogroup scheduling, nice weighs a session against the others: the
                # step's session on node2 gets the lower weight as a whole
                with contextlib.suppress(OSError):
                    Path(f"/proc/{pid}/autogroup").write_text(str(NICE))
                for tid in _threads(pid):
                    try:
                        os.sched_setaffinity(tid, {self.core})
                        os.setpriority(os.PRIO_PROCESS, tid, NICE)
                        self.pinned.add(f"{pid}:{_comm(pid)}")
                    except OSError:
                        pass
            self.done.wait(0.25)

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join(5)
        for p in self.spinners:
            p.kill()
            p.wait()


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _threads(pid: int) -> list[int]:
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return []


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


def submit(run_dir: Path, cache: Path, *settings: str, env: dict[str, str]) -> str:
    r = subprocess.run(
        [sys.executable, "launch.py", "cluster=slurm", "hw=cpu", "nodes=2", *settings,
         "wait=false", f"run_dir={run_dir}", f"cache_dir={cache}"],
        cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return json.loads((run_dir / "job.json").read_text())["job_id"]


def status(run_dir: Path, env: dict[str, str]) -> str:
    out = subprocess.run([sys.executable, "launch.py", "status", str(run_dir)], cwd=REPO,
                         env={**os.environ, **env}, capture_output=True, text=True, timeout=120)  # fmt: skip
    return out.stdout


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.parametrize("on_fail", ["stop", "exclude"])
def test_preflight_names_the_slow_node_and_stops_or_requeues_without_it(
    slurm_cluster, tmp_path: Path, cache: Path, on_fail: str
):
    """node2 slowed from the start: the pre-flight names it with its matmul figure before any
    training. stop: the run ends failed with failure_class preflight; exclude: node 0 books a
    requeue event excluding node2 and Slurm holds the job with ExcNodeList=node2 (the shared
    cluster has two nodes, so the requeued 2-node job waits; the test cancels it)."""
    env = slurm_cluster.env
    run_dir = tmp_path / on_fail
    job_id = submit(run_dir, cache, "max_steps=2", "preflight=true",
                    f"preflight.on_fail={on_fail}", env=env)  # fmt: skip
    run = RunDir(run_dir)
    try:
        with Slowdown(slurm_cluster.conf, "node2", job_id) as slow:
            if on_fail == "stop":
                wait_until_gone(job_id, env, timeout_s=240)
            else:
                wait_for("the requeue", lambda: run.requeues(), run_dir, 240)
                wait_for("the hold", lambda: squeue_state(job_id, env) == "PENDING", run_dir, 60)
        assert slow.pinned, "nothing of the job was pinned on node2"
        print(
            f"\npinned on node2 (core {slow.core}): {sorted(slow.pinned)}; load {os.getloadavg()}"
        )
        found = json.loads(run.preflight_json.read_text())
        table = [n for n in found["nodes"]]
        print(f"\n[{on_fail}] pre-flight figures: " + json.dumps(
            {n["node"]: {"matmul_tflops": n["matmul_tflops"],
                         "link_busbw_gbps": n.get("link_busbw_gbps")} for n in table}))  # fmt: skip
        print(f"[{on_fail}] verdict: {json.dumps(found['verdict'])}")
        bad = found["verdict"]["bad"]
        assert [b["node"] for b in bad] == ["node2"], (found, logs(run_dir))
        node2 = next(n for n in table if n["node"] == "node2")
        assert f"matmul {min(node2['matmul_tflops']):.4g} TFLOP/s" in bad[0]["reasons"][0]
        assert not run.metrics_jsonl.exists(), "trained despite the pre-flight"
        if on_fail == "stop":
            summary = run.summary()
            print(f"[stop] summary: {summary['reason']} / {summary['action']}")
            assert summary["status"] == "failed" and summary["failure_class"] == "preflight"
            assert summary["node"] == "node2" and "node2: matmul" in summary["reason"]
            line = status(run_dir, env)
            print(f"[stop] status: {line.strip()}")
            assert "failure=preflight" in line and "preflight=node2-bad" in line
        else:
            (event,) = run.requeues()
            print(f"[exclude] requeue event: {json.dumps(event)}")
            assert event["kind"] == "preflight" and event["excluded"] == "node2"
            assert event["action"] == "requeued" and "node2: matmul" in event["reason"]
            job = slurm_cluster.run(["scontrol", "show", "job", job_id]).stdout
            print("[exclude] " + " ".join(w for w in job.split() if w.startswith(("JobState=", "ExcNodeList=", "Restarts="))))  # fmt: skip
            assert "ExcNodeList=node2" in job and "Restarts=1" in job
            assert run.summary() is None, "requeued, not ended"
    finally:
        subprocess.run(["scancel", job_id], env=env, capture_output=True)
        wait_until_gone(job_id, env, timeout_s=120)


@pytest.mark.slurm
@pytest.mark.slow
def test_a_node_that_turns_slow_mid_run_is_named_a_straggler(
    slurm_cluster, tmp_path: Path, cache: Path
):
    """node2 is slowed once step 3 of 14 is logged: the run completes, and summary.json, `status`
    and report.md name node2 as a straggler with its compute ratio and the TGS it costs."""
    env = slurm_cluster.env
    run_dir = tmp_path / "straggler"
    job_id = submit(run_dir, cache, "max_steps=14", env=env)
    run = RunDir(run_dir)
    try:
        wait_for("step 3", lambda: len(run.metrics()) >= 3, run_dir, 240, poll_s=0.2)
        with Slowdown(slurm_cluster.conf, "node2", job_id) as slow:
            wait_until_gone(job_id, env, timeout_s=240)
        assert slow.pinned
    finally:
        subprocess.run(["scancel", job_id], env=env, capture_output=True)
    summary = run.summary()
    assert summary["status"] == "completed", logs(run_dir)
    for r in (0, 1):
        times = [json.loads(x)["compute_s"] for x in run.node_steps(r).read_text().splitlines()]
        print(f"\nnode rank {r} forward s per step: " + " ".join(f"{t:.3f}" for t in times))
    print("[straggler] summary: " + json.dumps(summary["stragglers"]))
    (slow_node,) = summary["stragglers"]
    assert slow_node["node"] == "node2" and slow_node["ratio"] > 1.15
    assert 0 < slow_node["tgs_cost"] < 1
    line = status(run_dir, env)
    print(f"[straggler] status: {line.strip()}")
    assert f"straggler=node2({slow_node['ratio']:.2f}x" in line
    out = subprocess.run([sys.executable, "launch.py", "report", str(run_dir)], cwd=REPO,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr
    md = (run_dir / "report.md").read_text()
    assert "\n## Nodes\n" in md and "- straggler: node2 " in md, md


@pytest.mark.slurm
def test_a_running_job_requeues_itself_without_a_node(slurm_cluster, tmp_path: Path):
    """node_gate.requeue_excluding from inside a running job (what preflight.on_fail=exclude
    and cluster.exclude_failed_nodes do): Slurm refuses ExcNodeList on a running job, so the
    job is held, excluded and released; it is pending again with ExcNodeList=node2."""
    env = slurm_cluster.env
    call = "import os; from launcher.node.gate import requeue_excluding as r; "
    call += "print('error:', r(os.environ['SLURM_JOB_ID'], 'node2'))"
    script = tmp_path / "job.sh"
    script.write_text(
        "#!/bin/bash\n"
        f'if [ "${{SLURM_RESTART_COUNT:-0}}" = 0 ]; then cd {REPO} && {sys.executable} -c "{call}"; fi\n'
        "sleep 1\n"
    )
    out = tmp_path / "job.out"
    job_id = slurm_cluster.run(["sbatch", "--parsable", "-N1", "-w", "node1", "-o", str(out),
                                str(script)]).stdout.strip()  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            job = slurm_cluster.run(["scontrol", "show", "job", job_id]).stdout
            if "Restarts=1" in job and "JobState=PENDING" in job:
                break
            time.sleep(0.5)
        print("\n" + " ".join(w for w in job.split() if w.startswith(("JobState=", "ExcNodeList=", "Restarts="))))  # fmt: skip
        assert "Restarts=1" in job and "JobState=PENDING" in job, job + out.read_text()
        assert "ExcNodeList=node2" in job
        assert "error: None" in out.read_text()
    finally:
        subprocess.run(["scancel", job_id], env=env, capture_output=True)
