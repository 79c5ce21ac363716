"""The XTuner engine: checks, files, prepare steps and node commands for `xtuner train`.

Each node runs `xtuner train` from the XTuner environment with `NPROC_PER_NODE NNODES NODE_RANK
ADDR PORT` (XTuner reads these, not MASTER_*; without PORT every node picks its own random
port and the job hangs). The config text comes from `render`, the verdict and the conversion
from `finalize`.
"""

from __future__ import annotations

import json
from pathlib import Path

from launcher.config import tracking
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
from launcher.engines import ds_config
from launcher.engines.base import Defaults, batches_per_epoch, tree_unread
from launcher.engines.xtuner import finalize as finalizing
from launcher.engines.xtuner.render import (
    BASES,
    CFG_DIR,
    DEFAULT_ENV,
    ENGINE_ARGS,
    base_chain,
    base_stem,
    image_tokens,
    internvl_data,
    overrides,
    render_resume_config,
    render_xtuner_config,
)
from launcher.rundir import RunDir


class XTunerEngine(Defaults):
    name = "xtuner"
    needs_zero = True
    preflight_data = False  # xtuner reads the data itself
    resume_how = "xtuner train gets resume=True, load_from=<newest iter_N.pth> (--resume)"

    # planning ------------------------------------------------------------------------
    def env_dir(self, spec: JobSpec) -> Path:
        return Path(spec.engine_args.get("xtuner_env") or DEFAULT_ENV)

    def own_env(self, spec: JobSpec) -> Path:
        """`xtuner train`, its prepare steps and the tracker run from the XTuner env."""
        return self.env_dir(spec)

    def model_problems(self, spec: JobSpec) -> list[Problem]:
        if spec.model.xtuner_base:
            return []
        return [
            Problem("model.xtuner_base", "engine=xtuner needs a base config under xtuner_cfgs/")
        ]

    def setup_problems(self, spec: JobSpec) -> tuple[list[Problem], list[str]]:
        """engine_args are checked in check(); here: the XTuner env must exist."""
        env = self.env_dir(spec)
        if (env / "bin" / "xtuner").exists():
            return tree_unread(spec), []
        msg = (
            f"no XTuner environment at {env} ({env}/bin/xtuner missing): build it with "
            "`bash xtuner_cfgs/make_env.sh`, or name one with +engine_args.xtuner_env=PATH"
        )
        if spec.dry_run:
            return tree_unread(spec), [f"engine_args.xtuner_env: {msg} (dry run: not required now)"]
        return [*tree_unread(spec), Problem("engine_args.xtuner_env", msg)], []

    def steps_per_epoch(self, spec: JobSpec, derived: Derived, samples: int) -> int:
        """mmengine counts a last, partial accumulation as a step."""
        batches = batches_per_epoch(derived, samples)
        return -(-batches // derived.gradient_accumulation_steps)

    def optimizer_steps(self, spec: JobSpec, derived: Derived, samples: int) -> int:
        """XTuner trains whole epochs."""
        return int(spec.epochs) * self.steps_per_epoch(spec, derived, samples)

    def check(self, spec: JobSpec, derived: Derived, meta: MetaRead) -> list[Problem]:
        out = [
            Problem(
                f"engine_args.{k}", f"unknown for engine xtuner; known: {', '.join(ENGINE_ARGS)}"
            )
            for k in spec.engine_args
            if k not in ENGINE_ARGS
        ]
        m, d = spec.model, spec.data
        stem = base_stem(m.xtuner_base or "")
        if stem not in BASES:
            out.append(
                Problem("model.xtuner_base", f"{m.xtuner_base!r} is not one of {sorted(BASES)}")
            )
        elif BASES[stem] == "llava":
            if d.format != "llava_json":
                out.append(Problem("data", f"LLaVA recipes read llava_json data, not {d.format}"))
            if spec.seq_len <= image_tokens(spec):
                out.append(Problem("seq_len", f"must exceed the {image_tokens(spec)} image tokens"))
            if not (m.llm_path and m.vision_path) and not m.make_tiny:
                out.append(Problem("model", "LLaVA needs model.llm_path and model.vision_path"))
        else:
            if not m.path:
                out.append(Problem("model.path", "InternVL recipes need the checkpoint folder"))
            if d.format == "internvl_meta" and not internvl_data(spec, meta.entries):
                out.append(
                    Problem(
                        "data",
                        f"data={d.name}: XTuner's InternVL recipe gets each dataset's annotation "
                        "and root in its config; give data.meta_file readable here, or data.datasets",
                    )
                )
        if d.format == "llava_json" and not (d.json_path or d.generate):
            out.append(Problem("data.json_path", "XTuner recipes need the JSON annotation file"))
        if m.freeze_mlp:
            out.append(
                Problem("model.freeze_mlp", "XTuner always trains the projector; set it to false")
            )
        if spec.parallelism.zero_stage == 0:
            out.append(Problem("parallelism", "xtuner train --deepspeed needs ZeRO stage 1-3"))
        if spec.max_steps is None and not float(spec.epochs).is_integer():
            out.append(Problem("epochs", "XTuner trains whole epochs; set max_steps instead"))
        return out

    def files(self, spec: JobSpec, derived: Derived, run: RunDir, meta: MetaRead) -> dict[str, str]:
        stem = base_stem(spec.model.xtuner_base)
        files = {
            run.xtuner_config.name: render_xtuner_config(
                stem, overrides(spec, derived, meta.entries)
            )
            + tracking.xtuner_visualizer(spec.tracking, run),
            run.deepspeed_json.name: json.dumps(
                ds_config.render(spec, derived, optimizer_block=False), indent=2
            )
            + "\n",
        }
        for name, text in base_chain(stem).items():
            files[run.relative(run.xtuner_base_dir / name)] = text
        return files

    def prepare(self, spec: JobSpec, run: RunDir, python: str) -> list[PrepareStep]:
        maker = str(run.code_dir / CFG_DIR.name / "make_tiny_llava.py")
        xpy = str(self.env_dir(spec) / "bin" / "python")
        steps = []
        if spec.model.make_tiny:
            out = Path(spec.model.llm_path).parent
            steps.append(
                PrepareStep(argv=(xpy, maker, str(out), "--parts=model"), creates=str(out / "llm"))
            )
        if spec.data.generate == "synthetic":  # InternVL recipes: our synthetic set
            argv = (python, "-m", "internvl_chat.tools.make_synthetic", str(spec.data.dir))
            argv += (f"--num-samples={spec.data.num_samples}",)
            steps.append(PrepareStep(argv=argv, creates=str(spec.data.dir)))
        if spec.data.generate == "synthetic_llava":
            out = Path(spec.data.dir)
            argv = (xpy, maker, str(out), "--parts=data", f"--samples={spec.data.num_samples}")
            steps.append(PrepareStep(argv=argv, creates=str(out / "data")))
        return steps

    def node_launch(
        self, spec: JobSpec, derived: Derived, run: RunDir, node_rank: int, python: str
    ) -> NodeLaunch:
        venv_bin = self.env_dir(spec) / "bin"
        argv = (
            str(venv_bin / "xtuner"),
            "train",
            str(run.xtuner_config),
            "--deepspeed",
            str(run.deepspeed_json),
            "--work-dir",
            str(run.output_dir),
        )
        env = {
            **spec.hw.node_env,
            # `xtuner train` re-launches `python` / `torchrun` from PATH (node prefixes PATH).
            "PATH": str(venv_bin),
            "NPROC_PER_NODE": str(derived.gpus_per_node),
            "NNODES": str(derived.nodes),
            "NODE_RANK": str(node_rank),
            "ADDR": MASTER_ADDR,
            "PORT": MASTER_PORT,
            "PYTHONUNBUFFERED": "1",
        }
        if derived.world_size == 1:
            # One process: XTuner runs train.py without torchrun, and DeepSpeed then looks for
            # MPI (mpi4py) unless the torch.distributed variables are present.
            env |= {
                "RANK": "0",
                "LOCAL_RANK": "0",
                "WORLD_SIZE": "1",
                "MASTER_ADDR": MASTER_ADDR,
                "MASTER_PORT": MASTER_PORT,
            }
        return NodeLaunch(node_rank=node_rank, argv=argv, env=env)

    # on the node ---------------------------------------------------------------------
    def resume_argv(self, run: RunDir, argv: list[str]) -> tuple[list[str], str | None]:
        """A requeued attempt resumes from the newest iter_*.pth (render_resume_config)."""
        from launcher.node.checkpoints import newest_xtuner_checkpoint

        newest = newest_xtuner_checkpoint(run.output_dir)
        if newest is None:
            return argv, None
        run.xtuner_resume_config.write_text(render_resume_config(run.xtuner_config, newest))
        argv = [str(run.xtuner_resume_config) if a == str(run.xtuner_config) else a for a in argv]
        name = run.xtuner_resume_config.name
        return argv, f"resuming from {newest} (resume=True, load_from in {name})"

    def last_checkpoint_step(self, run: RunDir) -> int | None:
        """The newest non-empty iter_N.pth (mmengine), a file or a DeepSpeed folder."""
        from launcher.node.checkpoints import newest_xtuner_checkpoint

        newest = newest_xtuner_checkpoint(run.output_dir)
        return None if newest is None else int(newest.name[len("iter_") : -len(".pth")])

    def outcome(self, plan: Plan, run: RunDir, returncode: int) -> Outcome:
        return finalizing.outcome(plan, run, returncode)

    def finalize(self, plan: Plan, run: RunDir) -> None:
        finalizing.finalize(plan, run)
