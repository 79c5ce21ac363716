"""MindSpeed-MM InternVL2 on Ascend NPUs (seed 004): engine `mindspeed`.

Planning renders `RUN_DIR/mindspeed/{data.json, model.json, convert.sh}` (launcher.engines.
mindspeed.{data_json,model_json,convert_sh}) and the pretrain argv (mindspeed.render) with one
pipeline split (launcher.engines.mindspeed.split, resolved by mindspeed.render) used everywhere.
Before the first start node 0 converts the HF weights with that split (`convert.sh hf_to_mm`,
skipped when the folder exists) and links them into RUN_DIR/output as Megatron's `release`
checkpoint. Each node then runs

    python -m torch.distributed.run --nnodes N --node_rank R --nproc_per_node D \\
        --master_addr ADDR --master_port PORT MINDSPEED_ROOT/pretrain_internvl.py ARGS

with rank, node count and master address from Slurm (or the wrapper / local dispatch), never
from a hostfile; the seed's variable names (NPUS_PER_NODE, NNODES, NODE_RANK, MASTER_ADDR,
MASTER_PORT) are in the environment too. Megatron prints the per-iteration lines on the last
pipeline rank, i.e. in the last node's log; node 0 turns them into metrics.jsonl.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from launcher.config import datafacts
from launcher.config.datafacts import MetaRead
from launcher.config.spec import JobSpec, Problem
from launcher.contract import (
    MASTER_ADDR,
    MASTER_PORT,
    Derived,
    NodeLaunch,
    Outcome,
    Plan,
    PrepareStep,
)
from launcher.engines.base import Defaults
from launcher.engines.mindspeed import recipes, render
from launcher.engines.mindspeed.convert_sh import convert_sh
from launcher.engines.mindspeed.data_json import data_json, dataset_paths
from launcher.engines.mindspeed.model_json import model_json
from launcher.engines.mindspeed.split import Split
from launcher.engines.torchrun import torchrun
from launcher.rundir import RunDir

ENTRY = "pretrain_internvl.py"
OTHER_NODES_WAIT_S = 300


def _split(spec: JobSpec) -> Split:
    split, problems = render.resolve_split(spec)
    if split is None:  # check() refused this spec already
        raise ValueError("; ".join(f"{p.setting}: {p.message}" for p in problems))
    return split


class MindSpeedEngine(Defaults):
    """--load RUN_DIR/output: a restarted attempt resumes from Megatron's latest iteration by
    itself (Defaults.resume_argv keeps the argv)."""

    name = "mindspeed"
    megatron = True
    tracks = False
    resume_how = "pretrain_internvl.py loads RUN_DIR/output (--load, Megatron's latest iteration)"

    # planning ------------------------------------------------------------------------
    def check(self, spec: JobSpec, derived: Derived, meta: MetaRead) -> list[Problem]:
        m, d = spec.model, spec.data
        out = [
            Problem(f"engine_args.{k}", "engine mindspeed takes no engine_args")
            for k in spec.engine_args
        ]
        if m.arch != "internvl":
            out.append(Problem("model.arch", "engine mindspeed runs MindSpeed-MM's InternVL2"))
        if not m.path:
            out.append(
                Problem(
                    "model.path",
                    "engine mindspeed needs the HF checkpoint folder (converted by mm-convert; "
                    "its tokenizer is data.json's from_pretrained)",
                )
            )
        if m.vision_path or m.llm_path:
            out.append(
                Problem("model.vision_path", "mm-convert reads one full HF checkpoint (model.path)")
            )
        if not m.mindspeed_root:
            out.append(Problem("model.mindspeed_root", "set your MindSpeed-MM checkout"))
        if not (m.dims.vit.layers and m.dims.llm.layers and m.dims.llm.heads):
            out.append(
                Problem("model.dims", "engine mindspeed needs dims.vit.layers and dims.llm.*")
            )
            return out
        split, problems = render.resolve_split(spec)
        out += [Problem(p.setting, p.message) for p in problems]
        if d.format != "internvl_meta":
            out.append(Problem("data", f"MindSpeed-MM reads InternVL jsonl data, not {d.format}"))
        elif d.generate not in (None, "synthetic"):
            out.append(Problem("data.generate", f"{d.generate!r} data is not InternVL data"))
        elif not d.generate:
            train, _ = dataset_paths(spec, meta.entries)
            if len(train) != 1 and (d.datasets or d.meta_file):
                out.append(
                    Problem(
                        "data",
                        f"MindSpeed-MM's data.json reads one dataset (basic_parameters."
                        f"data_path); this data has {len(train)}: merge the annotations into "
                        "one jsonl, or give one dataset",
                    )
                )
        if not d.generate and not (d.datasets or d.meta_file):
            out.append(Problem("data", "no dataset: set data.datasets or data.meta_file"))
        samples = datafacts.total_samples(datafacts.datasets(spec, meta))
        if render.count_iters(spec, derived, samples) is None:
            out.append(
                Problem(
                    "max_steps",
                    "MindSpeed-MM trains a fixed number of iterations (--train-iters) and this "
                    "data does not say how many samples it has (meta `length`); set max_steps",
                )
            )
        if split is not None and m.path:
            stamp = Path(render.mm_dir(spec, split)) / render.SPLIT_STAMP
            if stamp.is_file():
                got = json.loads(stamp.read_text())
                want = render.split_record(spec, split)
                if got != want:
                    out.append(
                        Problem(
                            "model.mindspeed_mm_dir",
                            f"{stamp.parent} was converted with {got}, this job's split is "
                            f"{want}; point model.mindspeed_mm_dir at a new folder (it is "
                            "converted on the first start) or give that split",
                        )
                    )
        return out

    def required_paths(self, spec: JobSpec) -> list[tuple[str, str | None]]:
        return [("model.mindspeed_root", spec.model.mindspeed_root)]

    def steps_per_epoch(self, spec: JobSpec, derived: Derived, samples: int) -> int:
        """Megatron counts samples // global batch."""
        return max(1, samples // derived.global_batch_size)

    def optimizer_steps(self, spec: JobSpec, derived: Derived, samples: int) -> int:
        return render.count_iters(spec, derived, samples)

    def plan_record(self, spec: JobSpec, derived: Derived) -> dict:
        """What plan.json records about the Megatron layout."""
        split = _split(spec)
        return {
            **render.split_record(spec, split),
            "cp": spec.parallelism.cp,
            "data_parallel_size": derived.data_parallel_size,
            "converted_checkpoint": render.mm_dir(spec, split),
            "split_source": recipes.source(spec),
            "layer_costs": dict(
                zip(("vit_layer", "lm_head"), render.layer_costs(spec), strict=True)
            ),
        }

    def files(self, spec: JobSpec, derived: Derived, run: RunDir, meta: MetaRead) -> dict[str, str]:
        split = _split(spec)
        files = {
            run.mindspeed_data_json: _dump(data_json(spec, meta.entries, meta.eval_text)),
            run.mindspeed_model_json: _dump(model_json(spec, split)),
            run.mindspeed_convert_sh: convert_sh(spec, split, run),
        }
        return {run.relative(path): text for path, text in files.items()}

    def prepare(self, spec: JobSpec, run: RunDir, python: str) -> list[PrepareStep]:
        split = _split(spec)
        steps = []
        if spec.data.generate == "synthetic":
            argv = (
                python,
                "-m",
                "internvl_chat.tools.make_synthetic",
                str(spec.data.dir),
                f"--num-samples={spec.data.num_samples}",
            )
            steps.append(PrepareStep(argv=argv, creates=str(spec.data.dir)))
        target = render.mm_dir(spec, split)
        convert = ("bash", str(run.mindspeed_convert_sh), "hf_to_mm")
        # the stamp is written last: a conversion cut short is run again
        steps.append(PrepareStep(argv=convert, creates=f"{target}/{render.SPLIT_STAMP}"))
        stamp = json.dumps(render.split_record(spec, split), separators=(",", ":"))
        link = (python, "-m", "launcher.engines.mindspeed.link", target, str(run.output_dir), stamp)
        steps.append(PrepareStep(argv=link, creates=str(run.mindspeed_latest_iteration)))
        return steps

    def node_launch(
        self, spec: JobSpec, derived: Derived, run: RunDir, node_rank: int, python: str
    ) -> NodeLaunch:
        split = _split(spec)
        root = Path(spec.model.mindspeed_root)
        argv = (
            *torchrun(python, derived, run, node_rank),
            str(root / ENTRY),
            *render.pretrain_args(spec, derived, run, split),
        )
        env = {
            **spec.hw.node_env,
            # the seed script's own names, for tools that read them
            "NPUS_PER_NODE": str(derived.gpus_per_node),
            "NNODES": str(derived.nodes),
            "NODE_RANK": str(node_rank),
            "MASTER_ADDR": MASTER_ADDR,
            "MASTER_PORT": MASTER_PORT,
            "PYTHONPATH": str(root),
            "PYTHONUNBUFFERED": "1",
        }
        if spec.parallelism.vpp:
            env["VP_SIZE"] = str(spec.parallelism.vpp)  # MindSpeed-MM's VPP docs require it
        return NodeLaunch(node_rank=node_rank, argv=argv, env=env)

    # on the node ---------------------------------------------------------------------
    def last_checkpoint_step(self, run: RunDir) -> int | None:
        """The iteration Megatron's tracker (latest_checkpointed_iteration.txt, written after
        the save) names, when its iter_NNNNNNN folder is there; `release` (the converted
        weights) is no step."""
        tracker = run.output_dir / "latest_checkpointed_iteration.txt"
        text = tracker.read_text().strip() if tracker.is_file() else ""
        if not text.isdigit():
            return None
        folder = run.output_dir / f"iter_{int(text):07d}"
        return int(text) if folder.is_dir() and any(folder.iterdir()) else None

    def _records(self, plan: Plan, run: RunDir):
        from launcher.report.collect.mindspeed import parse_run_logs

        nodes = plan.derived.nodes
        # the iteration lines are on the last node: wait (bounded) until it has finished
        deadline = time.monotonic() + OTHER_NODES_WAIT_S
        while nodes > 1 and time.monotonic() < deadline:
            if run.node_exit(nodes - 1).exists():
                break
            time.sleep(1)
        return parse_run_logs([run.node_log(r) for r in range(nodes)]).records

    def outcome(self, plan: Plan, run: RunDir, returncode: int) -> Outcome:
        if returncode != 0:
            return Outcome(False, f"pretrain_internvl.py exited with status {returncode}")
        records = self._records(plan, run)
        if not records:
            return Outcome(False, "pretrain_internvl.py exited 0 but logged no iterations")
        planned = plan.derived.optimizer_steps  # its --train-iters (render.train_iters)
        last = records[-1]["step"]
        if planned is not None and last < planned:
            return Outcome(False, f"training stopped at iteration {last} of {planned}")
        return Outcome(True, f"training finished: {last} iterations")

    def finalize(self, plan: Plan, run: RunDir) -> None:
        records = self._records(plan, run)
        run.metrics_jsonl.write_text("".join(json.dumps(r) + "\n" for r in records))


def _dump(data) -> str:
    return json.dumps(data, indent=2) + "\n"
