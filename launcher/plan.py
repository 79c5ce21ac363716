"""Plan a job: pure rendering of argv, environment and files; nothing is written here.

`make_plan` returns a Plan whose `files` map run-dir-relative names to their exact text
(sbatch.sh as submitit will submit it, the DeepSpeed JSON, the meta JSON, engine files,
plan.json itself). RunDir.materialize writes them; launcher.dispatch submits. The batch script
and job.sh are rendered by launcher.jobscript; `Plan.load` reads plan.json back on the nodes.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from launcher import nodecheck, site, tracking
from launcher.derive import Derived
from launcher.engines import get_engine
from launcher.engines.base import NodeLaunch, PrepareStep
from launcher.jobscript import (
    node_python,
    render_job_sh,
    render_sbatch,
    slurm_parameters,
    wrapper_argv,
)
from launcher.rundir import RunDir
from launcher.spec import JobSpec

if TYPE_CHECKING:
    from launcher.check import Checked


@dataclass(frozen=True, slots=True, kw_only=True)
class MemoryEstimate:
    """The per-device memory estimate plan.json records (launcher/memory.py)."""

    per_device_gb: float
    device_gb: float
    fits: bool
    detail: str


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
    """How `python` was chosen (launcher.site.node_python)."""
    network: Mapping[str, Any]
    prepare: tuple[PrepareStep, ...]
    node_launch: tuple[NodeLaunch, ...]
    slurm: Mapping[str, Any] | None
    time_limit: str | None
    warnings: tuple[str, ...]
    reliability: Mapping[str, Any] | None = None
    """cluster.max_requeues, signal_delay_s, collective_timeout_s, requeue_on_node_failure,
    exclude_failed_nodes: what the node task and the sbatch teardown act on."""
    preflight: Mapping[str, Any] | None = None
    """The node pre-flight (launcher.nodecheck.plan_record), when the run asks for one."""
    megatron: Mapping[str, Any] | None = None
    """engine=mindspeed: its Megatron layout record (engines/mindspeed plan_record)."""
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
        out["slurm"] = self.slurm
        out["time_limit"] = self.time_limit
        out["warnings"] = list(self.warnings)
        out["reliability"] = dict(self.reliability) if self.reliability is not None else None
        if self.preflight is not None:
            out["preflight"] = self.preflight
        if self.megatron is not None:
            out["megatron"] = self.megatron
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
            slurm=r["slurm"],
            time_limit=r["time_limit"],
            warnings=tuple(r["warnings"]),
            reliability=r.get("reliability"),
            preflight=r.get("preflight"),
            megatron=megatron,
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


def reliability_env(spec: JobSpec) -> dict[str, str]:
    """Bound how long a dead rank can stall the others: collectives abort after
    cluster.collective_timeout_s instead of waiting (NCCL's default: 30 min)."""
    t = spec.cluster.collective_timeout_s
    if spec.hw.accelerator != "npu":
        return {"TORCH_NCCL_ASYNC_ERROR_HANDLING": "1"}
    return {
        "HCCL_ASYNC_ERROR_HANDLING": "1",
        "HCCL_EXEC_TIMEOUT": str(t),
        "HCCL_CONNECT_TIMEOUT": str(min(max(t, 120), 7200)),
    }


def _with_env(launch: NodeLaunch, defaults: dict[str, str]) -> NodeLaunch:
    """`defaults` under the engine's env (an hw preset's own value wins)."""
    return dataclasses.replace(launch, env={**defaults, **launch.env})


RELIABILITY_KEYS = (
    "max_requeues",
    "signal_delay_s",
    "collective_timeout_s",
    "requeue_on_node_failure",
    "exclude_failed_nodes",
)


def make_plan(
    spec: JobSpec, checked: Checked, config_yaml: str, provenance: dict[str, Any] | None = None
) -> Plan:
    """Pure: the plan of a checked spec, from the numbers the check stage computed."""
    assert checked.derived is not None and not checked.problems, "plan only a checked spec"
    derived = checked.derived
    run = RunDir(spec.run_dir)
    engine = get_engine(spec.model.engine)
    python = node_python(spec)
    files = {"config.yaml": config_yaml, **engine.files(spec, derived, run)}
    env = tracking.env(spec.tracking, run)  # what W&B / MLflow read on the nodes
    nodes = tuple(
        _with_env(engine.node_launch(spec, derived, run, r, python), reliability_env(spec) | env)
        for r in range(spec.nodes)
    )
    # the data pre-flight, when it runs on node 0, comes after the steps that build the model
    prepare = (*engine.prepare(spec, run, python), *checked.preflight.job_steps)
    slurm = None
    if spec.cluster.kind == "slurm":
        slurm = slurm_parameters(spec, run)
        files[run.sbatch_sh.name] = render_sbatch(spec, run, python)
    else:
        files[run.job_sh.name] = render_job_sh(spec, run, python)
    est = checked.memory
    m, par = spec.model, spec.parallelism
    plan = Plan(
        run_dir=str(run.root),
        engine=engine.name,
        dispatch=spec.cluster.kind,
        model=m.name,
        llm_family=m.llm_family,
        data=spec.data.name,
        hw=spec.hw.name,
        derived=derived,
        zero_stage=par.zero_stage,
        offload_optimizer=par.offload_optimizer,
        offload_param=par.offload_param,
        # what the engine trains in (the official code: bf16 on fp32 hardware without B1)
        precision=engine.precision(spec) if hasattr(engine, "precision") else spec.hw.precision,
        seq_len=spec.seq_len,
        lr=spec.lr,
        max_steps=spec.max_steps,
        epochs=spec.epochs,
        freeze_llm=m.freeze_llm,
        freeze_mlp=m.freeze_mlp,
        freeze_backbone=m.freeze_backbone,
        use_llm_lora=m.use_llm_lora,
        use_backbone_lora=m.use_backbone_lora,
        benchmark=spec.benchmark.name,
        python=python,
        python_source=site.node_python(spec)[1],
        network={k: v for k, v in spec.hw.network.items() if v is not None},
        prepare=prepare,
        node_launch=nodes,
        slurm=slurm,
        time_limit=(
            None
            if spec.cluster.kind == "local"
            else f"cluster.time_min={spec.cluster.time_min}"
            if spec.cluster.time_min is not None
            else "the partition's limit (no --time)"
        ),
        warnings=checked.warnings,
        reliability={k: getattr(spec.cluster, k) for k in RELIABILITY_KEYS},
        preflight=nodecheck.plan_record(spec, derived, run, python),
        megatron=engine.plan_record(spec, derived) if m.engine == "mindspeed" else None,
        wrapper_argv=tuple(wrapper_argv(spec, run)) if spec.cluster.kind == "wrapper" else None,
        memory_estimate=None
        if est is None
        else MemoryEstimate(
            per_device_gb=round(est.total_gb, 2),
            device_gb=spec.hw.memory_gb,
            fits=est.fits(spec.hw.memory_gb),
            detail=est.describe(),
        ),
        provenance=provenance or None,
        files=files,
        notes=(*checked.notes, *nodecheck.notes(spec)),
    )
    files[run.plan_json.name] = plan.to_json()
    return plan
