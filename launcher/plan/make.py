"""Plan a job: pure rendering of argv, environment and files; nothing is written here.

`make_plan` returns a Plan whose `files` map run-dir-relative names to their exact text
(sbatch.sh as submitit will submit it, the DeepSpeed JSON, the meta JSON, engine files,
plan.json itself). RunDir.materialize writes them; launcher.submit.dispatch submits. The batch script
and job.sh are rendered by launcher.plan.jobscript; `Plan.load` reads plan.json back on the nodes.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from launcher.config import tracking
from launcher.config.spec import JobSpec
from launcher.contract import MemoryEstimate, NodeLaunch, Plan, Reliability
from launcher.engines import get_engine
from launcher.node import nodecheck
from launcher.plan.jobscript import (
    render_job_sh,
    render_sbatch,
    slurm_parameters,
    wrapper_argv,
)
from launcher.rundir import RunDir

if TYPE_CHECKING:
    from launcher.plan.check import Checked


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


def make_plan(
    spec: JobSpec, checked: Checked, config_yaml: str, provenance: dict[str, Any] | None = None
) -> Plan:
    """Pure: the plan of a checked spec, from the numbers the check stage computed."""
    assert checked.derived is not None and not checked.problems, "plan only a checked spec"
    derived = checked.derived
    run = RunDir(spec.run_dir)
    engine = get_engine(spec.model.engine)
    assert checked.probed is not None and checked.meta is not None
    python = checked.probed.python.path
    files = {"config.yaml": config_yaml, **engine.files(spec, derived, run, checked.meta)}
    env = tracking.env(spec.tracking, run)  # what W&B / MLflow read on the nodes
    nodes = tuple(
        _with_env(engine.node_launch(spec, derived, run, r, python), reliability_env(spec) | env)
        for r in range(spec.nodes)
    )
    # the data pre-flight, when it runs on node 0, comes after the steps that build the model
    prepare = (*engine.prepare(spec, run, python), *checked.preflight.job_steps)
    slurm = None
    if spec.cluster.kind == "slurm":
        slurm = slurm_parameters(spec, run, python)
        files[run.sbatch_sh.name] = render_sbatch(slurm, run, python)
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
        precision=engine.precision(spec),
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
        python_source=checked.probed.python.why,
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
        reliability=Reliability(
            **{f.name: getattr(spec.cluster, f.name) for f in dataclasses.fields(Reliability)}
        ),
        preflight=nodecheck.plan_record(spec, derived, run, python),
        megatron=engine.plan_record(spec, derived),
        engine_env=None if (own := engine.own_env(spec)) is None else str(own),
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
