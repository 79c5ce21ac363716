"""The types that cross machines: login (plan) -> node -> report.

`Plan` is plan.json (written at submit time, read back by the nodes, the engines' outcome and
finalize, `status`, `resume` and `report`); `Derived` carries the batch numbers inside it;
`NodeLaunch` / `PrepareStep` are what a node runs; `Outcome` is an engine's verdict on its
child's exit. This module imports nothing of the launcher but leaf helpers (launcher.rundir),
so every stage can import it without cycles (tests/test_stages.py).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from launcher.rundir import RunDir


@dataclass(frozen=True, slots=True, kw_only=True)
class Derived:
    """Numbers computed once, with exact division, and printed once."""

    nodes: int
    gpus_per_node: int
    world_size: int
    per_device_batch_size: int
    gradient_accumulation_steps: int
    global_batch_size: int
    model_parallel_size: int = 1
    """tp x pp x cp (Megatron-style engines); the batch counts data-parallel ranks only."""
    optimizer_steps: int | None = None
    """Optimizer steps the run takes (launcher.plan.steps; None: the data's size is unknown here)."""

    @property
    def data_parallel_size(self) -> int:
        return self.world_size // self.model_parallel_size

    def summary(self) -> str:
        dp = (
            f" = data parallel {self.data_parallel_size} x model parallel {self.model_parallel_size}"
            if self.model_parallel_size > 1
            else ""
        )
        return (
            f"world size {self.world_size} ({self.nodes} node(s) x {self.gpus_per_node}){dp}, "
            f"per-device batch {self.per_device_batch_size}, "
            f"accumulation {self.gradient_accumulation_steps}, "
            f"global batch {self.global_batch_size}"
        )


class _Omitted:
    def __repr__(self) -> str:
        return "OMITTED"


OMITTED: Any = _Omitted()
"""A key a record leaves out (absent, not null): what an ending or an older plan.json lacks."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SlurmRequest:
    """What cluster=slurm asks of Slurm: submitit SlurmExecutor's parameters (plan.json "slurm").

    `parameters()` is the mapping submitit takes and plan.json records: the required ones in
    this order, then the optional ones that are set. OMITTED: not in an older plan.json."""

    job_name: str
    nodes: int
    ntasks_per_node: int
    time: int | None = OMITTED
    """--time in minutes; None leaves the flag out (the partition's limit)."""
    wckey: str | None = OMITTED
    signal_delay_s: int = OMITTED
    stderr_to_stdout: bool = OMITTED
    setup: tuple[str, ...] = OMITTED
    srun_args: tuple[str, ...] = OMITTED
    teardown: tuple[str, ...] = OMITTED
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    exclude: str | None = None
    constraint: str | None = None
    gres: str | None = None
    cpus_per_task: int | None = None
    mem: str | None = None
    mem_per_gpu: str | None = None
    exclusive: bool | None = None
    """True asks --exclusive; None leaves it out."""
    additional_parameters: Mapping[str, str] | None = None
    """Site-only sbatch options (cluster.sbatch_extra)."""
    unknown: Mapping[str, Any] = field(default_factory=dict)
    """Keys of a plan.json from another version, kept as they were."""

    def parameters(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self)[:-1]:
            value = getattr(self, f.name)
            if value is OMITTED or (f.name in _SLURM_OPTIONAL and value is None):
                continue
            if isinstance(value, tuple):
                value = list(value)
            out[f.name] = dict(value) if isinstance(value, Mapping) else value
        return out | dict(self.unknown)

    @classmethod
    def from_parameters(cls, r: Mapping[str, Any]) -> SlurmRequest:
        known = {f.name for f in dataclasses.fields(cls)} - {"unknown"}
        lists = ("setup", "srun_args", "teardown")
        typed = {k: tuple(v) if k in lists else v for k, v in r.items() if k in known}
        return cls(**typed, unknown={k: v for k, v in r.items() if k not in known})


_SLURM_OPTIONAL = (
    "partition", "account", "qos", "exclude", "constraint", "gres", "cpus_per_task", "mem",
    "mem_per_gpu", "exclusive", "additional_parameters",
)  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class Reliability:
    """What the node task and the sbatch teardown act on (plan.json "reliability"). The
    defaults are cluster.*'s (launcher.config.spec.ClusterSpec takes them from here)."""

    max_requeues: int = 3
    """How often one run is requeued (time limit, preemption, node failure) before it stops."""
    signal_delay_s: int = 90
    """Slurm signals the job (USR2) this long before its time limit: the time to save and requeue."""
    collective_timeout_s: int = 600
    """A collective that waits longer fails the job (ddp_timeout, NCCL/HCCL/gloo timeouts)."""
    requeue_on_node_failure: bool = True
    """Requeue (within max_requeues) when a node or rank dies, resuming from the last checkpoint."""
    exclude_failed_nodes: bool = False
    """On such a requeue, also keep the failed node out of the job (scontrol ExcNodeList)."""


RELIABILITY = Reliability()
"""The defaults (what a plan.json without a "reliability" record ran with)."""


MASTER_ADDR = "{master_addr}"
MASTER_PORT = "{master_port}"


@dataclass(frozen=True, slots=True)
class NodeLaunch:
    """The command one node runs: an argument list and the environment it adds."""

    node_rank: int
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PrepareStep:
    """A command run once, on node 0, before training; skipped when `creates` exists."""

    argv: tuple[str, ...]
    creates: str


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class MemoryEstimate:
    """The per-device memory estimate plan.json records (launcher/plan/memory.py)."""

    per_device_gb: float
    device_gb: float
    fits: bool
    detail: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Summary:
    """summary.json's outcome: how one attempt ended. Built by launcher.node.attempt.summary and
    written by the node side only (RunDir.write_summary); `report` adds its figures beside
    these keys (RunDir.update_summary)."""

    status: str
    """completed, failed, stopped or cancelled."""
    reason: str
    job_id: str | None
    nodes: int
    hostnames: tuple[str, ...]
    started: float
    ended: float
    duration_s: float
    restart: int
    """Slurm's requeues of this job so far (SLURM_RESTART_COUNT)."""
    requeues: int
    attempt: int
    steps: int
    """metrics.jsonl's records when the attempt ended (report writes the last step number)."""
    final_loss: float | None
    failure_class: str | None = None
    action: str | None = None
    returncode: int | None = OMITTED
    node: str | None = OMITTED
    failure_source: str | None = OMITTED
    failure_node: str | None = OMITTED
    exit_reason: str = OMITTED
    """The engine's own verdict when the logs name another cause."""
    provenance: Mapping[str, Any] = OMITTED
    preflight: Any = OMITTED
    """The node pre-flight's verdict; it and the two below: launcher.node.nodecheck.summary_fields."""
    excluded_nodes: list[str] = OMITTED
    stragglers: list[Any] = OMITTED

    def record(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["hostnames"] = list(self.hostnames)
        return {k: v for k, v in out.items() if v is not OMITTED}


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """Everything plan.json records, plus the `files` to write (plan.json among them).

    The login side builds it (make_plan); the nodes, the engines' outcome/finalize and report
    read it back with `Plan.load(run_dir)`, the one place that knows plan.json's keys.
    """

    run_dir: str
    engine: str
    dispatch: str
    model: str
    llm_family: str
    data: str
    hw: str
    derived: Derived
    """In plan.json as the top-level keys nodes, gpus_per_node, world_size, ... global_batch_size."""
    zero_stage: int
    offload_optimizer: bool
    offload_param: bool
    precision: str
    seq_len: int
    lr: float
    max_steps: int | None
    epochs: float
    freeze_llm: bool
    freeze_mlp: bool
    freeze_backbone: bool
    use_llm_lora: int
    use_backbone_lora: int
    benchmark: str
    python: str
    python_source: str
    """How `python` was chosen (launcher.plan.site.node_python)."""
    network: Mapping[str, Any]
    prepare: tuple[PrepareStep, ...]
    node_launch: tuple[NodeLaunch, ...]
    slurm: SlurmRequest | None
    time_limit: str | None
    warnings: tuple[str, ...]
    reliability: Reliability | None = None
    """None only in a plan.json written without one: the defaults (RELIABILITY) apply."""
    preflight: Mapping[str, Any] | None = None
    """The node pre-flight (launcher.node.nodecheck.plan_record), when the run asks for one."""
    megatron: Mapping[str, Any] | None = None
    """engine=mindspeed: its Megatron layout record (engines/mindspeed plan_record)."""
    engine_env: str | None = None
    """The environment the engine runs from on the nodes (XTuner's: its `xtuner`, its python),
    when not `python`'s (Engine.own_env); in plan.json only when set."""
    wrapper_argv: tuple[str, ...] | None = None
    memory_estimate: MemoryEstimate | None = None
    provenance: Mapping[str, Any] | None = None
    files: Mapping[str, str] = field(default_factory=dict)
    """Run-dir-relative name -> text; not part of plan.json (Plan.load leaves it empty)."""
    notes: tuple[str, ...] = ()
    """Summary lines besides the batch numbers: what was asked of Slurm, checked, exported
    (printed at submit time; not part of plan.json)."""

    def summary(self) -> str:
        return self.derived.summary()

    def record(self) -> dict[str, Any]:
        """plan.json's content: the numbers, the per-node commands, and what dispatch will do."""
        d = self.derived
        out: dict[str, Any] = {
            "run_dir": self.run_dir,
            "engine": self.engine,
            "dispatch": self.dispatch,
            "model": self.model,
            "llm_family": self.llm_family,
            "data": self.data,
            "hw": self.hw,
            "nodes": d.nodes,
            "gpus_per_node": d.gpus_per_node,
            "world_size": d.world_size,
            "per_device_batch_size": d.per_device_batch_size,
            "gradient_accumulation_steps": d.gradient_accumulation_steps,
            "global_batch_size": d.global_batch_size,
            "optimizer_steps": d.optimizer_steps,
        }
        out |= {name: getattr(self, name) for name in _PLAIN}
        out["python_source"] = self.python_source
        out["network"] = dict(self.network)
        out["prepare"] = [dataclasses.asdict(p) for p in self.prepare]
        out["node_launch"] = [
            {"node_rank": n.node_rank, "argv": list(n.argv), "env": dict(n.env)}
            for n in self.node_launch
        ]
        out["slurm"] = None if self.slurm is None else self.slurm.parameters()
        out["time_limit"] = self.time_limit
        out["warnings"] = list(self.warnings)
        rel = self.reliability
        out["reliability"] = None if rel is None else dataclasses.asdict(rel)
        if self.preflight is not None:
            out["preflight"] = self.preflight
        if self.megatron is not None:
            out["megatron"] = self.megatron
        if self.engine_env is not None:
            out["engine_env"] = self.engine_env
        if self.wrapper_argv is not None:
            out["wrapper_argv"] = list(self.wrapper_argv)
        mem = self.memory_estimate
        out["memory_estimate"] = None if mem is None else dataclasses.asdict(mem)
        if self.provenance:
            out["provenance"] = self.provenance
        return out

    def to_json(self) -> str:
        return json.dumps(self.record(), indent=2) + "\n"

    @classmethod
    def load(cls, run_dir: str | os.PathLike[str]) -> Plan:
        """Read RUN_DIR/plan.json back into the dataclasses that wrote it."""
        r = json.loads(RunDir(run_dir).plan_json.read_text())
        megatron = r.get("megatron")
        dp = megatron.get("data_parallel_size") if megatron else None
        derived = Derived(
            nodes=r["nodes"],
            gpus_per_node=r["gpus_per_node"],
            world_size=r["world_size"],
            per_device_batch_size=r["per_device_batch_size"],
            gradient_accumulation_steps=r["gradient_accumulation_steps"],
            global_batch_size=r["global_batch_size"],
            model_parallel_size=r["world_size"] // dp if dp else 1,
            optimizer_steps=r.get("optimizer_steps"),
        )
        mem = r.get("memory_estimate")
        wrapper = r.get("wrapper_argv")
        return cls(
            run_dir=r["run_dir"],
            engine=r["engine"],
            dispatch=r["dispatch"],
            model=r["model"],
            llm_family=r["llm_family"],
            data=r["data"],
            hw=r["hw"],
            derived=derived,
            **{name: r[name] for name in _PLAIN},
            python_source=r["python_source"],
            network=r["network"],
            prepare=tuple(
                PrepareStep(argv=tuple(p["argv"]), creates=p["creates"]) for p in r["prepare"]
            ),
            node_launch=tuple(
                NodeLaunch(node_rank=n["node_rank"], argv=tuple(n["argv"]), env=dict(n["env"]))
                for n in r["node_launch"]
            ),
            slurm=None if r["slurm"] is None else SlurmRequest.from_parameters(r["slurm"]),
            time_limit=r["time_limit"],
            warnings=tuple(r["warnings"]),
            reliability=Reliability(**r["reliability"]) if r.get("reliability") else None,
            preflight=r.get("preflight"),
            megatron=megatron,
            engine_env=r.get("engine_env"),
            wrapper_argv=tuple(wrapper) if wrapper is not None else None,
            memory_estimate=MemoryEstimate(**mem) if mem else None,
            provenance=r.get("provenance"),
        )


# Plan fields plan.json holds under their own name, in this order after the derived numbers.
_PLAIN = (
    "zero_stage",
    "offload_optimizer",
    "offload_param",
    "precision",
    "seq_len",
    "lr",
    "max_steps",
    "epochs",
    "freeze_llm",
    "freeze_mlp",
    "freeze_backbone",
    "use_llm_lora",
    "use_backbone_lora",
    "benchmark",
    "python",
)
