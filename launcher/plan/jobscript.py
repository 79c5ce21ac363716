"""How a job reaches its nodes, rendered as text: submitit's sbatch parameters and the batch
script exactly as SlurmExecutor submits it (cluster=slurm), the job.sh payload for cluster=local
and cluster=wrapper, and the wrapper's argv. Pure: make_plan puts the texts into the plan's files.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from launcher.config.spec import JobSpec
from launcher.contract import SlurmRequest
from launcher.plan import site
from launcher.rundir import RunDir

REPO = Path(__file__).resolve().parents[2]


def quote(argv: list[str] | tuple[str, ...]) -> str:
    """The one place an argument list becomes shell text."""
    return " ".join(shlex.quote(str(a)) for a in argv)


def _env_setup_lines(spec: JobSpec, run: RunDir) -> list[str]:
    """Shell lines every node runs first: the site's setup, then our code on PYTHONPATH: the
    copy in the run dir (launcher.snapshot), so edits to the checkout after submit are not run."""
    code = shlex.quote(str(run.code_dir))
    return [
        *spec.cluster.setup,
        f"cd {code}",
        f"export PYTHONPATH={code}${{PYTHONPATH:+:$PYTHONPATH}}",
    ]


def slurm_parameters(spec: JobSpec, run: RunDir, python: str) -> SlurmRequest:
    """submitit SlurmExecutor parameters: one task per node, each running launcher.node.task
    (`python`: the nodes' interpreter, launcher.plan.site.node_python)."""
    c, hw = spec.cluster, spec.hw
    req = site.slurm_request(spec)
    batch_node = quote(batch_node_argv(python, run))
    return SlurmRequest(
        job_name=f"vlm-{spec.model.name}",
        nodes=spec.nodes,
        ntasks_per_node=1,
        # None leaves the flag out: no --time is the partition's limit, no --wckey none
        time=req.time_min,
        wckey=req.wckey,
        signal_delay_s=c.signal_delay_s,
        stderr_to_stdout=True,
        setup=(
            *_env_setup_lines(spec, run),
            # a requeued attempt: stop here if the run did not ask for it (Slurm requeues a
            # job whose node went down itself), before any node starts
            f'if [ "${{SLURM_RESTART_COUNT:-0}}" != 0 ]; then '
            f"{batch_node} --before-srun || exit $?; fi",
        ),
        # one node's task failing ends the step at once instead of leaving the others to hang
        srun_args=("--kill-on-bad-exit=1",),
        # after srun, on the batch host: when node 0 could not say how the job ended (a node
        # or rank died, srun killed the rest), classify it and requeue or write the summary
        teardown=(f"{batch_node} --after-srun=$?",),
        partition=c.partition,
        account=c.account,
        qos=c.qos,
        exclude=c.exclude,
        constraint=c.constraint,
        gres=hw.gres,
        cpus_per_task=req.cpus_per_task,
        mem=req.mem,
        mem_per_gpu=req.mem_per_gpu,
        exclusive=True if req.exclusive else None,
        additional_parameters=dict(c.sbatch_extra) if c.sbatch_extra else None,
    )


def sbatch_flags(params: dict[str, Any]) -> str:
    """What the allocation asks for, as the sbatch flags a person would type."""
    names = ("nodes", "partition", "account", "qos", "gres", "cpus_per_task", "mem",
             "mem_per_gpu", "exclusive", "time", "wckey", "constraint", "exclude")  # fmt: skip
    flags = []
    for name in names:
        value = params.get(name)
        if value is None:
            continue
        flag = "--" + name.replace("_", "-")
        flags.append(flag if value is True else f"{flag}={value}")
    flags += [f"--{k}={v}" for k, v in sorted((params.get("additional_parameters") or {}).items())]
    if params.get("time") is None:
        flags.append("(no --time: the partition's limit)")
    return " ".join(flags)


def batch_node_argv(python: str, run: RunDir) -> list[str]:
    """`python -m launcher.node RUN_DIR` as the batch script runs it (before and after srun)."""
    return [python, "-u", "-m", "launcher.node", str(run.root)]


def render_sbatch(request: SlurmRequest, run: RunDir, python: str) -> str:
    """The batch script exactly as submitit's SlurmExecutor will submit `request`."""
    from submitit.slurm.slurm import _make_sbatch_string

    folder = run.submitit_dir
    command = " ".join(
        [shlex.quote(python), "-u -m submitit.core._submit", shlex.quote(str(folder))]
    )
    return _make_sbatch_string(command=command, folder=folder, **request.parameters())


def render_job_sh(spec: JobSpec, run: RunDir, python: str) -> str:
    """The payload for cluster=local (processes on this machine) and cluster=wrapper (srun)."""
    lines = ["#!/bin/bash", f"# {spec.cluster.kind} dispatch of {run.root}", "set -uo pipefail"]
    lines += _env_setup_lines(spec, run)
    node = [python, "-u", "-m", "launcher.node", str(run.root)]
    if spec.cluster.kind == "wrapper":
        c, hw = spec.cluster, spec.hw
        srun = ["srun", f"--nodes={spec.nodes}", "--ntasks-per-node=1", "--kill-on-bad-exit=1"]
        srun += [f"--partition={c.partition}"] if c.partition else []
        srun += [f"--gres={hw.gres}"] if hw.gres else []
        srun += [f"--cpus-per-task={hw.cpus_per_node}"] if hw.cpus_per_node else []
        srun += [f"--{k.replace('_', '-')}={v}" for k, v in sorted((c.sbatch_extra or {}).items())]
        lines.append("exec " + quote([*srun, *node, "--slurm"]))
    else:
        port = [python, "-m", "launcher.node", "--free-port"]
        lines.append(f"port=$({quote(port)})")
        lines.append("pids=()")
        for r in range(spec.nodes):
            argv = [*node, f"--node-rank={r}", f"--nnodes={spec.nodes}", "--master-addr=127.0.0.1"]
            lines.append(quote(argv) + ' --master-port="$port" & pids+=($!)')
        lines.append(
            'status=0; for p in "${pids[@]}"; do wait "$p" || status=$?; done; exit $status'
        )
    return "\n".join(lines) + "\n"


def wrapper_argv(spec: JobSpec, run: RunDir) -> list[str]:
    """cluster=wrapper: the site command with the payload appended as one argument."""
    cmd = [part.replace("{nodes}", str(spec.nodes)) for part in spec.cluster.command]
    return [*cmd, quote(["bash", str(run.job_sh)])]
