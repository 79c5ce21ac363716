"""What the job will meet on the site: the nodes' interpreter and Slurm's partition.

`node_python(spec)` names the interpreter the nodes run and says why that one. `probe(spec)`
looks, from the login node, at what can be seen from here (the interpreter's torch build,
the partition's time limit, CPUs and memory per node) and turns mismatches into problems
(a job Slurm could never start) or warnings (a job that would start and then not use the
hardware). Nothing here imports torch: the interpreter is asked in a subprocess, and torch's
own `version.py` is read as text.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from launcher.config.spec import JobSpec, Problem
from launcher.engines import get_engine
from launcher.plan.partition import (
    SINFO_FORMAT,
    Partition,
    Unknown,
    compare,
    read_partition,
    slurm_minutes,
    time_line,
    unknown_problem,
)

__all__ = [
    "NodePython", "Partition", "Unknown", "node_python", "nodes_python", "partition_info", "probe",
    "slurm_minutes",
]  # fmt: skip

# `source /env/bin/activate`, `. venv/bin/activate`, `conda activate NAME`, `mamba activate NAME`
_VENV_ACTIVATE = re.compile(r"^\s*(?:source|\.)\s+(\S+)/bin/activate\s*$")
_CONDA_ACTIVATE = re.compile(r"^\s*(?:conda|mamba|micromamba)\s+activate\s+\S+")


def node_python(spec: JobSpec) -> tuple[str, str]:
    """(the interpreter the nodes run, why that one).

    cluster.python wins; otherwise the environment cluster.setup activates (a venv's
    bin/python, or `python` on the PATH a conda activation leaves); otherwise the
    interpreter running the launcher.
    """
    c = spec.cluster
    if c.python:
        return c.python, "cluster.python"
    for line in reversed(c.setup):
        if m := _VENV_ACTIVATE.match(line):
            return f"{m.group(1)}/bin/python", f"activated by cluster.setup ({line.strip()})"
        if _CONDA_ACTIVATE.match(line):
            return "python", f"on PATH after cluster.setup ({line.strip()})"
    return sys.executable, "the launcher's own; set cluster.python to change it"


@dataclass(frozen=True, slots=True)
class TorchBuild:
    """torch as installed for one interpreter: version and the accelerators it was built for."""

    version: str | None
    """None: no torch in that environment."""
    cuda: str | None = None
    hip: str | None = None
    npu: bool = False

    def drives(self, accelerator: str) -> bool:
        if accelerator == "cpu":
            return self.version is not None
        if accelerator == "cuda":
            return bool(self.cuda or self.hip)
        return self.npu

    def describe(self) -> str:
        if self.version is None:
            return "no torch"
        built = [f"CUDA {self.cuda}"] if self.cuda else []
        built += [f"ROCm {self.hip}"] if self.hip else []
        built += ["torch_npu"] if self.npu else []
        return f"torch {self.version} ({', '.join(built) or 'CPU-only build'})"


# Run in the nodes' interpreter: stdlib only, torch is located but never imported.
_PROBE = """
import importlib.util as u
t = u.find_spec("torch")
print(t.origin if t and t.origin else "")
print("npu" if u.find_spec("torch_npu") else "")
"""


def torch_build(python: str, timeout_s: float = 30) -> TorchBuild | None:
    """What torch `python` has; None when that interpreter cannot be run from here."""
    exe = shutil.which(python) if os.sep not in python else python
    if not exe or not os.access(exe, os.X_OK):
        return None
    try:
        out = subprocess.run([exe, "-c", _PROBE], capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    lines = (out.stdout.splitlines() + ["", ""])[:2]
    if not lines[0]:
        return TorchBuild(version=None)
    try:
        text = (Path(lines[0]).parent / "version.py").read_text()
    except OSError:
        return TorchBuild(version="unknown")

    def attr(name: str) -> str | None:
        m = re.search(rf"^{name}(?::[^=]*)?\s*=\s*['\"]([^'\"]*)['\"]", text, re.M)
        return m.group(1) if m else None

    return TorchBuild(
        version=attr("__version__"), cuda=attr("cuda"), hip=attr("hip"), npu=lines[1] == "npu"
    )


@dataclass(frozen=True, slots=True)
class NodePython:
    """The nodes' interpreter, why that one, and its torch as seen from here: found once per
    launch (launcher.plan.check) and passed to everything that asks."""

    path: str
    why: str
    build: TorchBuild | None
    """None: that interpreter cannot be run from here."""


def nodes_python(spec: JobSpec) -> NodePython:
    """node_python(spec) with its torch probed (one subprocess)."""
    path, why = node_python(spec)
    return NodePython(path, why, torch_build(path))


def partition_info(partition: str | None, timeout_s: float = 20) -> Partition | Unknown | None:
    """The named partition (or the default one), Unknown when sinfo lists no such partition,
    None if sinfo can't say."""
    if shutil.which("sinfo") is None:
        return None
    argv = ["sinfo", "-h", "-o", SINFO_FORMAT]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0 or not out.stdout.strip():
        return None
    return read_partition(partition, out.stdout)


@dataclass(frozen=True, slots=True)
class NodeRequest:
    """What each node is asked for, resolved from hw and cluster (one task per node)."""

    cpus_per_task: int | None
    mem: str | None
    mem_per_gpu: str | None
    exclusive: bool
    time_min: int | None
    wckey: str | None


def _gb(value: float) -> str:
    return "0" if value == 0 else f"{value:g}G"


def slurm_request(spec: JobSpec) -> NodeRequest:
    c, hw = spec.cluster, spec.hw
    mem_gb = c.mem_gb if c.mem_gb is not None else hw.node_mem_gb
    per_gpu = c.mem_per_gpu_gb
    exclusive = c.exclusive if c.exclusive is not None else hw.accelerator != "cpu"
    return NodeRequest(
        cpus_per_task=hw.cpus_per_node,
        mem=None if per_gpu is not None or mem_gb is None else _gb(mem_gb),
        mem_per_gpu=None if per_gpu is None else _gb(per_gpu),
        exclusive=exclusive,
        time_min=c.time_min,
        wckey=c.wckey,
    )


@dataclass(slots=True)
class SiteReport:
    """What probing the site found: summary lines, problems and warnings."""

    python: NodePython
    """The nodes' interpreter and its torch: probed once, passed to every later stage."""
    lines: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    partition: Partition | Unknown | None = None
    """What sinfo said of the partition (None: not asked, or no answer); dispatch reuses it."""
    unknown_partition: Problem | None = None
    """sinfo answered without the partition asked for: refused on a dry run too (a typo, and
    sinfo answering means this is the cluster the plan is for)."""


def probe(spec: JobSpec) -> SiteReport:
    """Look at the interpreter and (cluster=slurm) the partition, from this machine.

    A partition that could never run the job is a problem for a real submit and a warning
    for a dry run (which is often made away from the cluster it plans for); a partition that
    sinfo answers without is a problem for both.
    """
    rep = SiteReport(python=nodes_python(spec))
    _probe_python(spec, rep.python, rep)
    if spec.cluster.kind in ("slurm", "wrapper"):
        _probe_partition(spec, rep)
        if spec.dry_run:
            rep.warnings += [f"{p} (dry run: Slurm would refuse it)" for p in rep.problems]
            rep.problems = []
        rep.problems += [rep.unknown_partition] if rep.unknown_partition else []
    _network_line(spec, rep)
    return rep


def _probe_python(spec: JobSpec, nodes: NodePython, rep: SiteReport) -> None:
    python, why, build = nodes.path, nodes.why, nodes.build
    hw = spec.hw
    if build is None:
        rep.checked.append("interpreter (not here)")
        rep.lines.append(
            f"python on the nodes: {python} ({why}); not runnable here, its torch is unchecked"
        )
        return
    rep.lines.append(f"python on the nodes: {python} ({why}): {build.describe()}")
    rep.checked.append("interpreter")
    if get_engine(spec.model.engine).own_env(spec) is not None:
        return  # the engine trains from its own environment (XTuner: engine_args.xtuner_env)
    if not build.drives(hw.accelerator):
        need = {"cuda": "a CUDA build", "npu": "torch_npu", "cpu": "torch"}[hw.accelerator]
        msg = (
            f"{python} has {build.describe()}, but hw={hw.name} needs {need}; point "
            "cluster.python (or a cluster.setup activation) at the nodes' training environment"
        )
        if spec.dry_run:  # a real submit refuses it: the job would fail after the queue wait
            rep.warnings.append(f"cluster.python: {msg} (dry run: a real submit refuses this)")
        else:
            rep.problems.append(Problem("cluster.python", msg))


def _probe_partition(spec: JobSpec, rep: SiteReport) -> None:
    c = spec.cluster
    req = slurm_request(spec)
    part = rep.partition = partition_info(c.partition)
    label = f"partition {c.partition}" if c.partition else "the default partition"
    if isinstance(part, Unknown):
        rep.unknown_partition = unknown_problem(part)
        rep.checked.append("partition (sinfo)")
        return
    if part is None:
        how = (
            "sinfo is not on PATH here" if shutil.which("sinfo") is None else "sinfo did not answer"
        )
        limit = (
            f"cluster.time_min={req.time_min}"
            if req.time_min is not None
            else f"{label}'s limit ({how})"
        )
        rep.lines.append(f"time limit: {limit}")
        rep.checked.append("partition (no sinfo answer here)")
        return
    rep.checked.append(f"partition {part.name} (sinfo)")
    rep.lines.append(f"time limit: {time_line(part, req.time_min)}")
    mem_gb = c.mem_gb if c.mem_gb is not None else spec.hw.node_mem_gb
    rep.problems += compare(spec, req.cpus_per_task, mem_gb if req.mem else None, part)


def _network_line(spec: JobSpec, rep: SiteReport) -> None:
    hw = spec.hw
    if hw.accelerator == "cpu" and not hw.network:
        return
    lib = "HCCL" if hw.dist_backend == "hccl" else "NCCL"
    set_ = {k: v for k, v in hw.network.items() if v is not None}
    unset = [k for k, v in hw.network.items() if v is None]
    text = " ".join(f"{k}={shlex.quote(v)}" for k, v in set_.items()) or "nothing set"
    if unset:
        text += f"; unset ({lib} picks): {', '.join(unset)} (hw.network.NAME=VALUE)"
    rep.lines.append(f"network: {text}")
