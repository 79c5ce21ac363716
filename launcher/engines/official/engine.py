"""`model.engine=internvl_official`: the user's OpenGVLab/InternVL checkout, trained as is.

From the outside it works like our trainer (same config groups, argument names, run dir,
metrics.jsonl, summary.json, requeue). Inside, three things differ:

- the code: `RUN_DIR/official/internvl_chat/internvl/` is a copy of the checkout's package
  with the edits the hardware needs (launcher.engines.official.edits), kept as
  `official_edits.patch` + `official_edits.md`; the checkout is only read;
- the tree: `internvl_chat/`, or at head `internvl_chat_gpt_oss/` for InternVL3.5
  (launcher.engines.official.trees: model.internvl_tree, argument names per tree);
- the interpreter: the tree's official env (`bash setup.sh --official` builds
  `<repo>/.venv-internvl`, `--official-gpt-oss` `<repo>/.venv-internvl-gpt-oss`;
  engine_args.official_env names another), while the node task, the prepare steps and the
  data pre-flight keep the project's own;
- the evidence: metrics come from the HF-Trainer log lines of node 0, and a run whose final
  checkpoint was saved and whose `train_runtime` was logged is completed even when a rank
  aborts at exit (the official script never destroys its process group).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from launcher.config.datafacts import MetaRead
from launcher.config.spec import JobSpec, Problem
from launcher.contract import Derived, NodeLaunch, Outcome, Plan, PrepareStep
from launcher.engines.base import unknown_engine_args
from launcher.engines.internvl import TRAINING_ARGS, InternVLEngine, _dump
from launcher.engines.official import edits as editing
from launcher.engines.official import trees
from launcher.rundir import RunDir

ENGINE_ARGS = {
    "official_env": "the official trainer's env on the nodes (default: the tree's, "
    f"{trees.ENVS[trees.CHAT].name} or {trees.ENVS[trees.GPT_OSS].name} beside launch.py)",
    "official_fp32_load": "B1, a behaviour change: load the model in fp32 when bf16=False",
    "official_lora_parity": "P1, a behaviour change for parity checks: LoRA seeded per module",
    "official_compat_edits": "E1-E4: auto (CPU hardware only), true or false",
}
COPY = "official"
"""Run-dir folder holding the edited copy of the checkout's TREE/internvl package."""
PATCH = "official_edits.patch"
LISTING = "official_edits.md"


def env_dir(spec: JobSpec) -> Path:
    return trees.env_dir(spec)


def official_python(spec: JobSpec) -> tuple[str, bool]:
    """The training processes' python and whether it is this machine's official env:
    engine_args.official_env, else an explicit cluster.python (the site's env for the
    official code), else the tree's env beside launch.py (trees.ENVS)."""
    if not spec.engine_args.get("official_env") and spec.cluster.python:
        return spec.cluster.python, False
    return str(env_dir(spec) / "bin" / "python"), True


def compat_edits(spec: JobSpec) -> bool:
    """E1-E4 where flash-attn / NCCL / a GPU are missing: CPU hardware unless told otherwise."""
    setting = str(spec.engine_args.get("official_compat_edits", "auto")).lower()
    if setting == "auto":
        return spec.hw.accelerator == "cpu"
    return setting == "true"


def _root(spec: JobSpec) -> Path:
    """model.internvl_root as an absolute path: a relative one means relative to where the
    launcher ran, not to the nodes' working directory."""
    return Path(spec.model.internvl_root).absolute()


def _checkout(spec: JobSpec) -> Path:
    return _root(spec) / trees.tree(spec.model)


def bf16_as_official(spec: JobSpec) -> bool:
    """fp32 hardware without B1: the official code can only train in bf16 (see LISTING)."""
    return spec.hw.precision == "fp32" and not spec.engine_args.get("official_fp32_load")


def single_image_data(spec: JobSpec) -> str | None:
    """Where generated data for the pinned revision goes (None: the data as configured)."""
    if spec.data.generate == "synthetic" and spec.model.internvl_revision == "pin":
        return f"{spec.data.dir}-single-image"
    return None


def _code(spec: JobSpec) -> Path:
    """Where the nodes import the official code from: the run dir's edited copy (the
    checkout itself only for a dry run planned away from it)."""
    copy = RunDir(spec.run_dir).root / COPY / trees.tree(spec.model)
    return copy if (_checkout(spec) / "internvl").is_dir() else _checkout(spec)


def plan_edits(spec: JobSpec) -> editing.EditSet:
    fp32 = bool(spec.engine_args.get("official_fp32_load", False))
    parity = bool(spec.engine_args.get("official_lora_parity", False))
    return editing.plan_edits(
        _checkout(spec), compat=compat_edits(spec), fp32_load=fp32, lora_parity=parity
    )


class OfficialEngine(InternVLEngine):
    def __init__(self):
        super().__init__(official=True)

    def model_problems(self, spec: JobSpec) -> list[Problem]:
        out = super().model_problems(spec)
        if not spec.model.internvl_root:
            out.append(
                Problem(
                    "model.internvl_root",
                    "engine=internvl_official needs your checkout of OpenGVLab/InternVL",
                )
            )
        if (spec.data.packed or spec.model.packed) and spec.per_device_batch_size not in (None, 1):
            out.append(
                Problem(
                    "per_device_batch_size",
                    f"{spec.per_device_batch_size}: the official packed dataset yields one packed "
                    "row per step, so it must be 1 (InternVL #1158); raise "
                    "gradient_accumulation_steps or model.max_packed_tokens instead",
                )
            )
        return out

    def known_engine_args(self, spec: JobSpec) -> set[str]:
        return trees.allowed_args(spec.model) | TRAINING_ARGS | set(ENGINE_ARGS)

    def setup_problems(self, spec: JobSpec) -> tuple[list[Problem], list[str]]:
        rev = f" at internvl_revision={spec.model.internvl_revision} ({trees.tree(spec.model)}/)"
        problems = unknown_engine_args(spec, self.known_engine_args(spec), rev)
        warnings = []
        if spec.model.packed or spec.data.packed:
            warnings.append(
                "model.packed: the official packed dataset keeps no data position (its 'TODO: "
                "quick resume'): a requeue or resume restores the model and optimizer from the "
                "checkpoint but reads the data from the start again (engine=internvl_chat "
                "resumes it exactly)"
            )
        return problems, warnings

    def check(self, spec: JobSpec, derived: Derived, meta: MetaRead) -> list[Problem]:
        out = super().check(spec, derived, meta)
        setting = str(spec.engine_args.get("official_compat_edits", "auto")).lower()
        if setting not in ("auto", "true", "false"):
            out.append(Problem("engine_args.official_compat_edits", "auto, true or false"))
        out += trees.check(spec, compat_edits(spec))
        python, ours = official_python(spec)
        if ours and not spec.dry_run and not Path(python).exists():
            build = trees.BUILD_ENV[trees.tree(spec.model)]
            out.append(
                Problem(
                    "engine_args.official_env",
                    f"{python} does not exist: build the official env with `{build}` "
                    "(or name yours here)",
                )
            )
        if spec.model.internvl_root and _checkout(spec).is_dir():
            out += [Problem("model.internvl_root", p) for p in plan_edits(spec).problems]
        return out

    def precision(self, spec: JobSpec) -> str:
        """What the official code trains in, as plan.json states it: bf16 where
        bf16_as_official (fp32 hardware without B1), else the hardware's."""
        return "bf16" if bf16_as_official(spec) else spec.hw.precision

    def train_args(self, spec: JobSpec, derived: Derived, run: RunDir) -> dict[str, Any]:
        args = super().train_args(spec, derived, run)
        if bf16_as_official(spec):
            args["bf16"] = True
        for old, new in trees.TRAINING_RENAMES[trees.tree(spec.model)].items():
            if old in args:
                args[new] = args.pop(old)
        if spec.hw.accelerator == "cpu" and trees.tree(spec.model) == trees.GPT_OSS:
            # transformers 4.55 refuses bf16 without a GPU unless told the run is on CPU
            # ("Your setup doesn't support bf16/gpu"); 4.37 does not check
            args["use_cpu"] = True
        return {k: v for k, v in args.items() if k not in ENGINE_ARGS}

    def files(self, spec: JobSpec, derived: Derived, run: RunDir, meta: MetaRead) -> dict[str, str]:
        files = super().files(spec, derived, run, meta)
        if bf16_as_official(spec):
            ds = json.loads(files[run.deepspeed_json.name])
            ds["bf16"]["enabled"] = True
            files[run.deepspeed_json.name] = _dump(ds)
        if spec.hw.accelerator == "cpu":
            # torch's AdamW, as our trainer uses: DeepSpeed's FusedAdam is a JIT build on CPU
            ds = json.loads(files[run.deepspeed_json.name])
            ds["optimizer"]["params"]["torch_adam"] = True
            files[run.deepspeed_json.name] = _dump(ds)
        package = _checkout(spec) / "internvl"
        if not package.is_dir():
            return files  # a dry run away from the checkout: nothing to copy
        edit = plan_edits(spec)
        for path in sorted(package.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                rel = path.relative_to(package.parent).as_posix()
                text = edit.texts.get(rel)
                files[f"{COPY}/{package.parent.name}/{rel}"] = (
                    text if text is not None else path.read_text()
                )
        files[PATCH] = edit.patch
        files[LISTING] = edit.listing(spec.model.internvl_revision, package.parent.name)
        if bf16_as_official(spec):
            files[LISTING] += (
                f"\nhw.precision={spec.hw.precision}, but the official code always loads the "
                "model in bf16 and crashes with bf16=False: this run trains in bf16 (bf16=True), "
                "as the official code does. engine_args.official_fp32_load=true trains it in "
                f"fp32 through B1 ({editing.BEHAVIOUR}).\n"
            )
        return files

    def meta_path(self, spec: JobSpec, run: RunDir) -> str:
        if single_image_data(spec):
            return str(Path(single_image_data(spec)) / "meta.json")
        return super().meta_path(spec, run)

    def prepare(self, spec: JobSpec, run: RunDir, python: str) -> list[PrepareStep]:
        steps = list(super().prepare(spec, run, python))
        if single_image_data(spec):
            # the pinned code reads one image per sample: generated data without multi-image
            last = steps[-1]
            out = single_image_data(spec)
            argv = (*last.argv[:3], out, *last.argv[4:], "--single-image")
            steps[-1] = PrepareStep(argv=argv, creates=out)
        llm = (spec.model.make_tiny or {}).get("llm", "internlm2")
        if spec.model.make_tiny and llm in ("internlm2", "qwen2", "qwen3"):
            # what a real checkpoint carries: the InternLM2 tokenizer's remote code, taken
            # from the user's checkout, or Qwen2/3's vocab.json + merges.txt (slow tokenizer)
            ckpt = Path(spec.model.path)
            marker = "tokenization_internlm2.py" if llm == "internlm2" else "vocab.json"
            argv = (python, "-m", "internvl_chat.tools.tiny_original", str(ckpt), f"--llm={llm}",
                    f"--internvl-root={_root(spec)}")  # fmt: skip
            steps.insert(1, PrepareStep(argv=argv, creates=str(ckpt / marker)))
        return steps

    def entry(self, spec: JobSpec) -> tuple[str, ...]:
        return (str(_code(spec) / "internvl" / "train" / "internvl_chat_finetune.py"),)

    def node_launch(
        self, spec: JobSpec, derived: Derived, run: RunDir, node_rank: int, python: str
    ) -> NodeLaunch:
        launch = super().node_launch(spec, derived, run, node_rank, official_python(spec)[0])
        env = {**launch.env, "PYTHONPATH": str(_code(spec))}
        return NodeLaunch(node_rank=node_rank, argv=launch.argv, env=env)

    # on the node ---------------------------------------------------------------------
    def last_checkpoint_step(self, run: RunDir) -> int | None:
        """The newest HF-Trainer checkpoint-N holding its state and weights (no marker)."""
        from launcher.node.checkpoints import newest_hf_checkpoint

        newest = newest_hf_checkpoint(run.output_dir)
        return None if newest is None else int(newest.name.removeprefix("checkpoint-"))

    def outcome(self, plan: Plan, run: RunDir, returncode: int) -> Outcome:
        from launcher.engines.official.judge import judge

        return judge(run, returncode, plan.derived.global_batch_size)
