"""Why a run ended: a pure classifier over log text and exit codes (no I/O, no Slurm calls).

`classify(sources, returncodes=...)` reads the texts a failed run left (per-node logs, per-rank
logs, Slurm's batch log, sbatch's stderr) and returns the one `Failure` that explains it best:
a stable `failure_class`, a one-line `reason` that quotes the log line, the `source` it came
from and, where the log names it, the `node`.

Root causes outrank their consequences: an OOM on one rank shows up on the others as a
collective timeout or a closed connection, and a full disk as a failed save, so the classes
are tried in the order of `CLASSES` and the first that matches anywhere wins.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

# failure_class -> what it means (also the order in which they are tried)
CLASSES: dict[str, str] = {
    "submit_error": "Slurm refused the job (partition, GRES, account, QoS, node request)",
    "hardware_error": "the accelerator reported a hardware fault (Xid, ECC)",
    "oom_cuda": "a CUDA device ran out of memory",
    "oom_npu": "an Ascend NPU ran out of memory",
    "oom_host": "the host ran out of memory (the kernel's or Slurm's OOM killer)",
    "disk_full": "no space left on the device holding the run dir or its output",
    "output_unwritable": "the run dir or its output could not be written (permissions, read-only)",
    "xtuner_exit0": "xtuner train exited 0 but training failed (its log shows the error)",
    "data_error": "the training data could not be read",
    "collective_timeout": "a collective (NCCL/HCCL/gloo) timed out: a rank or node hung",
    "node_failure": "a node or one of its ranks died mid-run",
    "time_limit": "the job reached its Slurm time limit",
    "preempted": "Slurm preempted the job",
    "user_cancel": "the job was cancelled (scancel)",
    "training_error": "the training program failed (see the quoted line)",
}
# A sweep point that failed with one of these is infeasible as configured: retrying can't help.
INFEASIBLE = frozenset({"oom_cuda", "oom_npu", "oom_host"})

_NODE = r"(?P<node>[A-Za-z][\w.-]*)"
_RULES: dict[str, list[str]] = {
    "submit_error": [
        r"sbatch: error: Batch job submission failed: .*",
        r"sbatch: error: (?:Invalid|invalid) .*",
        r"srun: error: Unable to allocate resources: .*",
    ],
    "hardware_error": [
        r"NVRM: Xid \(.*",
        r"\bXid\b.*\b(?:13|31|43|45|48|63|64|74|79|92|94|95)\b.*",
        r".*uncorrectable ECC error.*",
        r".*\bECC error\b.*",
        r".*CUDA error: an illegal memory access was encountered.*",
        r".*(?:HBM|hbm) (?:multi-bit )?ECC.*",
    ],
    "oom_cuda": [
        r".*CUDA out of memory.*",
        r".*torch\.(?:cuda\.)?OutOfMemoryError.*",
        r".*CUBLAS_STATUS_ALLOC_FAILED.*",
    ],
    "oom_npu": [r".*NPU out of memory.*", r".*\bEL0004\b.*", r".*NPU.*(?:OOM|out of memory).*"],
    "oom_host": [
        r".*Detected \d+ oom[_-]kill event.*",
        r".*oom-kill.*",
        r".*Out of memory: Killed process.*",
        r".*DefaultCPUAllocator: (?:can't|not enough memory).*",
        r".*MemoryError.*",
        r".*OUT_OF_MEMORY.*",
    ],
    "disk_full": [r".*No space left on device.*", r".*\[Errno 28\].*", r".*Disk quota exceeded.*"],
    "output_unwritable": [
        r".*\[Errno 13\] Permission denied.*",
        r".*\[Errno 30\] Read-only file system.*",
        r".*cannot write checkpoint .*: Read-only file system.*",
        r".*cannot write checkpoint .*: Permission denied.*",
        r".*PermissionError.*",
    ],
    "data_error": [
        r".*cannot build the training data.*",
        r".*no usable samples.*",
        r".*too many bad samples.*",
        r".*invalid meta file.*",
        r".*image not found: .*",
        r".*JSONDecodeError.*",
        r".*\bbad JSON\b.*",
    ],
    "xtuner_exit0": [r".*xtuner train exited 0 but .*"],
    "collective_timeout": [
        r".*Watchdog caught collective operation timeout.*",
        r".*ProcessGroupNCCL.*[Tt]imeout.*",
        r".*(?:NCCL|HCCL|Gloo|gloo).*[Tt]imed? ?out.*",
        r".*Timed out waiting \d+ms.*",
        r".*DistBackendError.*[Tt]imeout.*",
        r".*HCCL_EXEC_TIMEOUT.*",
    ],
    "node_failure": [
        # srun's first word on a task: a task srun killed itself afterwards is a consequence
        rf"srun: error: {_NODE}: task \d+: (?:Killed|Terminated)$",
        r".*exitcode\s*:\s*-9 \(pid.*",
        r".*Signal 9 \(SIGKILL\) received by PID.*",
    ],
    "time_limit": [
        r".*CANCELLED AT \S+ DUE TO TIME LIMIT.*",
        r".*this job is timed-out\..*",
        r".*\bTIMEOUT\b.*",
    ],
    "preempted": [r".*CANCELLED AT \S+ DUE TO PREEMPTION.*", r".*this job is preempted\..*"],
    "user_cancel": [
        r".*\*\*\* (?:JOB|STEP) \S+ ON \S+ CANCELLED AT \S+ \*\*\*.*",
        r".*scancel: .*",
    ],
    "training_error": [
        r"(?!.*ChildFailedError)(?:\S+\.)?\w*(?:Error|Exception)\b:.*",
        r".*: bad arguments:.*",
        r".*exitcode\s*:\s*\d+ \(pid.*",
        r".*\btraining exited with status \d+.*",
    ],
}
# What the surviving ranks see when a peer died: weaker than any quoted cause (a rank's
# own traceback), so tried after every class.
_PEER_GONE = [
    r".*Connection closed by peer.*",
    r".*Connection reset by peer.*",
    r".*failed to recv, got 0 bytes.*",
]
# Slurm's own verdict that a node failed: the root cause of the collective timeout the live
# ranks then report, so tried before collective_timeout; srun's line first, since it names the
# failed node ("JOB N ON node1" names the batch host that printed the cancel, not the lost node).
_SLURM_NODE_FAIL = [
    [rf"srun: error: Node failure on {_NODE}.*"],
    [r".*\*\*\* JOB \d+ ON \S+ CANCELLED AT \S+ DUE TO NODE FAIL.*", r".*\bNODE_FAIL\b.*"],
]
_COMPILED = [(cls, [re.compile(p) for p in _RULES[cls]]) for cls in CLASSES]
_at = [c for c, _ in _COMPILED].index("collective_timeout")
_COMPILED[_at:_at] = [("node_failure", [re.compile(p) for p in ps]) for ps in _SLURM_NODE_FAIL]
_PEER_GONE_RE = [re.compile(p) for p in _PEER_GONE]
_COMPILED.append(("node_failure", _PEER_GONE_RE))
# Lines that look like errors but are not (warnings, our own echo of a command).
_IGNORE = re.compile(r"^\[launcher\] \$ |UserWarning|FutureWarning|DeprecationWarning")
_PREFIX = re.compile(r"^(?:\[default\d+\]:|\d+: )")


@dataclass(frozen=True, slots=True)
class Failure:
    failure_class: str
    reason: str
    """One line: what it means, then the quoted log line (or the exit status)."""
    source: str | None = None
    line: str | None = None
    node: str | None = None

    @property
    def infeasible(self) -> bool:
        return self.failure_class in INFEASIBLE

    def as_dict(self) -> dict[str, str | None]:
        return {
            "failure_class": self.failure_class,
            "reason": self.reason,
            "failure_source": self.source,
            "failure_node": self.node,
        }


def _clip(line: str, limit: int = 240) -> str:
    line = " ".join(line.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _node_from_source(source: str) -> str | None:
    m = re.search(r"node(\d+)\.log$", source)
    return None if m is None else f"node rank {m.group(1)}"


def _lines(text: str) -> list[str]:
    """Lines without torchrun's rank prefix; of srun's per-task verdicts only the first (the
    task that failed; srun killed the others because of it)."""
    out, seen_task = [], False
    for ln in text.splitlines():
        ln = _PREFIX.sub("", ln).strip()
        if _SRUN_TASK.match(ln):
            if seen_task:
                continue
            seen_task = True
        out.append(ln)
    return out


_SRUN_TASK = re.compile(r"srun: error: \S+: tasks? [\d,-]+: ")


def classify(
    sources: Mapping[str, str] | Iterable[tuple[str, str]],
    *,
    returncodes: Mapping[str, int | None] | None = None,
) -> Failure | None:
    """The best explanation found in `sources` (name -> text), or None when nothing matches
    and no exit status says it failed. `returncodes` (name -> status) only supply the last
    resort: "<name> exited with status N" / "killed by signal N"."""
    items = list(sources.items() if isinstance(sources, Mapping) else sources)
    lines_by_source = [(name, _lines(text)) for name, text in items]
    for cls, patterns in _COMPILED:
        for name, lines in lines_by_source:
            for ln in lines:
                if not ln or _IGNORE.search(ln):
                    continue
                if cls == "training_error" and any(p.match(ln) for p in _PEER_GONE_RE):
                    continue  # a consequence; tried last, as node_failure
                for pat in patterns:
                    m = pat.match(ln)
                    if m is None:
                        continue
                    node = m.groupdict().get("node") or _node_from_source(name)
                    where = f" on {node}" if node and node not in ln else ""
                    reason = f"{cls.replace('_', ' ')}{where}: {_clip(ln)}"
                    return Failure(cls, reason, name, _clip(ln), node)
    for name, rc in (returncodes or {}).items():
        if rc not in (0, None):
            how = f"killed by signal {-rc}" if rc < 0 else f"exited with status {rc}"
            return Failure("training_error", f"training error: {name} {how}", name, None, None)
    return None


def classify_submit_error(stderr: str) -> Failure | None:
    """sbatch's stderr when submission failed (bad partition, GRES, account, ...)."""
    found = classify({"sbatch": stderr})
    if found is not None and found.failure_class == "submit_error":
        return found
    text = _clip(stderr.strip().splitlines()[-1]) if stderr.strip() else "no message"
    return Failure("submit_error", f"submit error: {text}", "sbatch", text, None)
