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

from launcher.spec import JobSpec, Problem

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
class Partition:
    """One Slurm partition as sinfo reports it (the smallest node where nodes differ)."""

    name: str
    time_limit: str
    """sinfo's text: infinite, 1-00:00:00, 4:00:00, 30:00."""
    cpus: int | None
    mem_mb: int | None
    nodes: int | None

    @property
    def time_limit_min(self) -> int | None:
        """Minutes, or None for no limit."""
        return slurm_minutes(self.time_limit)


def slurm_minutes(text: str) -> int | None:
    """Slurm's [D-]HH:MM:SS / MM:SS / MM in minutes; None for infinite/unknown."""
    text = text.strip()
    if text.lower() in ("infinite", "unlimited", "n/a", ""):
        return None
    days, _, rest = text.rpartition("-")
    parts = [int(p) for p in rest.split(":")]
    if len(parts) == 3:
        h, m, s = parts
    elif len(parts) == 2:
        h, (m, s) = 0, parts
    else:
        h, m, s = 0, parts[0], 0
    return (int(days or 0) * 24 + h) * 60 + m + (1 if s else 0)


def _leading_int(text: str) -> int | None:
    m = re.match(r"\d+", text)
    return int(m.group()) if m else None


def partition_info(partition: str | None, timeout_s: float = 20) -> Partition | None:
    """The named partition (or the default one, marked * by sinfo); None if sinfo can't say."""
    if shutil.which("sinfo") is None:
        return None
    argv = ["sinfo", "-h", "-o", "%P|%l|%c|%m|%D"]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    for line in out.stdout.splitlines():
        fields = line.strip().split("|")
        if len(fields) != 5:
            continue
        name = fields[0]
        default = name.endswith("*")
        name = name.rstrip("*")
        if name == partition or (partition is None and default):
            return Partition(
                name=name,
                time_limit=fields[1],
                cpus=_leading_int(fields[2]),
                mem_mb=_leading_int(fields[3]),
                nodes=_leading_int(fields[4]),
            )
    return None


@dataclass(frozen=True, slots=True)
class SlurmRequest:
    """What each node is asked for, resolved from hw and cluster (one task per node)."""

    cpus_per_task: int | None
    mem: str | None
    mem_per_gpu: str | None
    exclusive: bool
    time_min: int | None
    wckey: str | None


def _gb(value: float) -> str:
    return "0" if value == 0 else f"{value:g}G"


def slurm_request(spec: JobSpec) -> SlurmRequest:
    c, hw = spec.cluster, spec.hw
    mem_gb = c.mem_gb if c.mem_gb is not None else hw.node_mem_gb
    per_gpu = c.mem_per_gpu_gb
    exclusive = c.exclusive if c.exclusive is not None else hw.accelerator != "cpu"
    return SlurmRequest(
        cpus_per_task=hw.cpus_per_node,
        mem=None if per_gpu is not None or mem_gb is None else _gb(mem_gb),
        mem_per_gpu=None if per_gpu is None else _gb(per_gpu),
        exclusive=exclusive,
        time_min=c.time_min,
        wckey=c.wckey,
    )


def request_flags(req: SlurmRequest) -> list[str]:
    """The request as sbatch flags, for the plan summary."""
    out = [f"--cpus-per-task={req.cpus_per_task}"] if req.cpus_per_task else []
    out += [f"--mem={req.mem}"] if req.mem else []
    out += [f"--mem-per-gpu={req.mem_per_gpu}"] if req.mem_per_gpu else []
    out += ["--exclusive"] if req.exclusive else []
    out += [f"--time={req.time_min}"] if req.time_min is not None else []
    out += [f"--wckey={req.wckey}"] if req.wckey else []
    return out


@dataclass(slots=True)
class SiteReport:
    """What probing the site found: summary lines, problems and warnings."""

    lines: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def probe(spec: JobSpec) -> SiteReport:
    """Look at the interpreter and (cluster=slurm) the partition, from this machine.

    A partition that could never run the job is a problem for a real submit and a warning
    for a dry run (which is often made away from the cluster it plans for).
    """
    rep = SiteReport()
    _probe_python(spec, rep)
    if spec.cluster.kind in ("slurm", "wrapper"):
        _probe_partition(spec, rep)
        if spec.dry_run:
            rep.warnings += [f"{p} (dry run: Slurm would refuse it)" for p in rep.problems]
            rep.problems = []
    _network_line(spec, rep)
    return rep


def _probe_python(spec: JobSpec, rep: SiteReport) -> None:
    python, why = node_python(spec)
    hw = spec.hw
    build = torch_build(python)
    if build is None:
        rep.checked.append("interpreter (not here)")
        rep.lines.append(
            f"python on the nodes: {python} ({why}); not runnable here, its torch is unchecked"
        )
        return
    rep.lines.append(f"python on the nodes: {python} ({why}): {build.describe()}")
    rep.checked.append("interpreter")
    engine = spec.model.engine
    if engine == "xtuner":
        return  # XTuner runs from its own environment (engine_args.xtuner_env)
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
    part = partition_info(c.partition)
    label = f"partition {c.partition}" if c.partition else "the default partition"
    if part is None:
        how = (
            "sinfo is not on PATH here"
            if shutil.which("sinfo") is None
            else "sinfo did not list it"
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
    if req.time_min is None:
        rep.lines.append(f"time limit: partition {part.name}'s ({part.time_limit}, from sinfo)")
    else:
        rep.lines.append(
            f"time limit: cluster.time_min={req.time_min} (partition {part.name} allows {part.time_limit})"
        )
        most = part.time_limit_min
        if most is not None and req.time_min > most:
            rep.problems.append(
                Problem(
                    "cluster.time_min",
                    f"{req.time_min} min exceeds partition {part.name}'s limit {part.time_limit} "
                    f"({most} min); the job would never start (null uses the partition's limit)",
                )
            )
    if part.nodes is not None and spec.nodes > part.nodes:
        rep.problems.append(
            Problem("nodes", f"{spec.nodes} nodes, but partition {part.name} has {part.nodes}")
        )
    if req.cpus_per_task and part.cpus is not None and req.cpus_per_task > part.cpus:
        rep.problems.append(
            Problem(
                "hw.cpus_per_node",
                f"asks {req.cpus_per_task} CPUs per node; partition {part.name}'s nodes have "
                f"{part.cpus} (sinfo)",
            )
        )
    mem_gb = spec.cluster.mem_gb if spec.cluster.mem_gb is not None else spec.hw.node_mem_gb
    if req.mem and mem_gb and part.mem_mb is not None and mem_gb * 1024 > part.mem_mb:
        setting = "cluster.mem_gb" if spec.cluster.mem_gb is not None else "hw.node_mem_gb"
        rep.problems.append(
            Problem(
                setting,
                f"asks {mem_gb:g} GB per node; partition {part.name}'s nodes have "
                f"{part.mem_mb / 1024:.0f} GB (sinfo); lower it, or cluster.mem_gb=0 for all of it",
            )
        )


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
