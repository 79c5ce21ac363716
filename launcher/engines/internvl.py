"""InternVL chat finetunes: our trainer (`internvl_chat`) and the official script
(`internvl_official`), from the same config groups and the same argument names.

Both read one JSON of InternVL finetune arguments (the official HfArgumentParser accepts a
lone `*.json` path); ours accepts a few extra keys, the official one gets only the names its
revision knows (spec 1-2).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from internvl_chat.prompts import system_message
from launcher.config import tracking
from launcher.config.datafacts import MetaRead
from launcher.config.generations import generation_args
from launcher.config.spec import DatasetEntry, JobSpec, Problem
from launcher.contract import Derived, NodeLaunch, Outcome, Plan, PrepareStep
from launcher.engines import ds_config
from launcher.engines.base import Defaults, batches_per_epoch, tree_unread, unknown_engine_args
from launcher.engines.official import trees
from launcher.engines.torchrun import torchrun
from launcher.rundir import RunDir

REPO = Path(__file__).resolve().parents[2]

# Argument names of the official finetune entry (ModelArguments + DataTrainingArguments),
# per argument set: pin = 764fdc9 (seed 000), head = 2410d1d's internvl_chat/, gpt_oss =
# 2410d1d's internvl_chat_gpt_oss/ (launcher.engines.official.trees).
OFFICIAL_MODEL_ARGS = trees.MODEL_ARGS
OFFICIAL_DATA_ARGS = trees.DATA_ARGS
# HF TrainingArguments the shipped scripts pass (spec 1.3).
TRAINING_ARGS = {
    "output_dir",
    "overwrite_output_dir",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "learning_rate",
    "weight_decay",
    "warmup_ratio",
    "lr_scheduler_type",
    "num_train_epochs",
    "max_steps",
    "logging_steps",
    "save_strategy",
    "save_steps",
    "save_total_limit",
    "bf16",
    "fp16",
    "seed",
    "dataloader_num_workers",
    "deepspeed",
    "report_to",
    "run_name",
    "do_train",
    "evaluation_strategy",
    "group_by_length",
    "ddp_timeout",
    "use_cpu",
}

SYNTHETIC_LAYOUT = {"meta": "meta.json", "eval_meta": "meta_eval.json"}


def meta_entries(spec: JobSpec) -> dict[str, dict[str, Any]]:
    """The meta JSON of data.datasets (data.meta_file's is read by datafacts.read_meta)."""
    return {name: _entry(e) for name, e in spec.data.datasets.items()}


def with_absolute_paths(path: Path, meta: dict[str, Any] | None) -> dict[str, Any] | None:
    """The meta file at `path` with its relative roots and annotations made absolute: the copy
    lives in the run dir, and they keep meaning what they meant. None: not here, or unreadable
    (launcher.config.datafacts reports it)."""
    if meta is None:
        return None
    for entry in meta.values():
        for key in ("root", "annotation"):
            value = entry.get(key) if isinstance(entry, dict) else None
            if isinstance(value, str) and not value.startswith("s3://"):
                entry[key] = str((path.parent / value).absolute())
    return meta


def _entry(e: DatasetEntry) -> dict[str, Any]:
    out: dict[str, Any] = {
        "root": e.root,
        "annotation": e.annotation,
        "data_augment": e.data_augment,
        "repeat_time": e.repeat_time,
    }
    if e.max_dynamic_patch is not None:
        out["max_dynamic_patch"] = e.max_dynamic_patch
    if e.length is not None:
        out["length"] = e.length
    return out


class InternVLEngine(Defaults):
    """`official=False`: our internvl_chat trainer; True: the user's OpenGVLab/InternVL checkout."""

    def __init__(self, official: bool = False):
        self.official = official
        self.name = "internvl_official" if official else "internvl_chat"
        self.needs_zero = official
        self.wandb_by_itself = self.saves_on_stop = not official
        self.resume_how = (
            "the official script gets resume_from_checkpoint=<newest checkpoint>"
            if official
            else "our trainer loads the newest valid checkpoint-N by itself"
        )

    # planning ------------------------------------------------------------------------
    def model_problems(self, spec: JobSpec) -> list[Problem]:
        m = spec.model
        out = []
        if not (m.path or (m.vision_path and m.llm_path)):
            out.append(
                Problem(
                    "model.path",
                    "set a full checkpoint (model.path) or both model.vision_path and model.llm_path",
                )
            )
        if m.path and (m.vision_path or m.llm_path):
            out.append(
                Problem(
                    "model.path",
                    "give either a full checkpoint or separate vision/LLM checkpoints, not both",
                )
            )
        if m.force_image_size % m.patch_size:
            out.append(
                Problem(
                    "model.force_image_size",
                    f"{m.force_image_size} is not a multiple of patch_size {m.patch_size}",
                )
            )
        tiles = m.max_tiles
        image_tokens = m.num_image_token * tiles + 2
        if spec.seq_len <= image_tokens:
            out.append(
                Problem(
                    "seq_len",
                    f"{spec.seq_len} leaves no room for text: one image can take {image_tokens} tokens "
                    f"({tiles} tiles x {m.num_image_token}); raise seq_len or lower model.max_dynamic_patch",
                )
            )
        return out

    def known_engine_args(self, spec: JobSpec) -> set[str]:
        """The `+engine_args.*` names our trainer accepts."""
        from internvl_chat.train import args as train_args  # torch-free (its docstring says)

        return {f.name for f in dataclasses.fields(train_args.TrainArgs)} | train_args.IGNORED_KEYS

    def setup_problems(self, spec: JobSpec) -> tuple[list[Problem], list[str]]:
        return unknown_engine_args(spec, self.known_engine_args(spec)) + tree_unread(spec), []

    def steps_per_epoch(self, spec: JobSpec, derived: Derived, samples: int) -> int:
        return max(batches_per_epoch(derived, samples) // derived.gradient_accumulation_steps, 1)

    def optimizer_steps(self, spec: JobSpec, derived: Derived, samples: int) -> int:
        return math.ceil(spec.epochs * self.steps_per_epoch(spec, derived, samples))

    def check(self, spec: JobSpec, derived: Derived, meta: MetaRead) -> list[Problem]:
        out = []
        d = spec.data
        if d.format != "internvl_meta":
            out.append(
                Problem("data", f"{self.name} reads InternVL meta JSON data, not {d.format}")
            )
        if not (d.meta_file or d.datasets or d.generate):
            out.append(
                Problem("data", "no datasets: set data.datasets, data.meta_file or data.generate")
            )
        try:  # e.g. internvl2_5 exists only at head, in our trainer and in the official code
            system_message(spec.model.template, spec.model.internvl_revision)
        except ValueError as e:
            out.append(Problem("model.template", str(e)))
        if (
            (d.packed or spec.model.packed)
            and self.official
            and spec.model.internvl_revision == "pin"
        ):
            out.append(
                Problem(
                    "data.packed",
                    "packed training exists only in newer InternVL (internvl_revision=head)",
                )
            )
        return out

    @staticmethod
    def system_message(spec: JobSpec) -> str | None:
        """The system prompt our trainer uses: model.system_message, else the template's
        default at model.internvl_revision (None when that template does not exist there)."""
        m = spec.model
        if m.system_message is not None:
            return m.system_message
        try:
            return system_message(m.template, m.internvl_revision)
        except ValueError:
            return None

    def meta_path(self, spec: JobSpec, run: RunDir) -> str:
        if spec.data.generate:
            return str(Path(spec.data.dir) / SYNTHETIC_LAYOUT["meta"])
        return str(run.meta_json)

    def eval_meta_path(self, spec: JobSpec, run: RunDir) -> str | None:
        if spec.data.generate:
            return str(Path(spec.data.dir) / SYNTHETIC_LAYOUT["eval_meta"])
        return str(run.eval_meta_json) if spec.data.eval_meta_file else None

    def train_args(self, spec: JobSpec, derived: Derived, run: RunDir) -> dict[str, Any]:
        m, d = spec.model, spec.data
        args: dict[str, Any] = {
            "model_name_or_path": m.path,
            "vision_path": m.vision_path,
            "llm_path": m.llm_path,
            "mlp_path": m.mlp_path,
            "freeze_llm": m.freeze_llm,
            "freeze_backbone": m.freeze_backbone,
            "freeze_mlp": m.freeze_mlp,
            "unfreeze_vit_layers": m.unfreeze_vit_layers,
            "vision_select_layer": m.select_layer,
            "use_backbone_lora": m.use_backbone_lora,
            "use_llm_lora": m.use_llm_lora,
            "grad_checkpoint": m.grad_checkpoint,
            "drop_path_rate": m.drop_path_rate,
            "ps_version": m.ps_version,
            "max_seq_length": spec.seq_len,
            "force_image_size": m.force_image_size,
            "down_sample_ratio": m.downsample_ratio,
            "pad2square": False,
            "conv_style": m.template,
            "meta_path": self.meta_path(spec, run),
            "use_data_resampling": False,
            "dynamic_image_size": m.dynamic_image_size,
            "use_thumbnail": m.use_thumbnail,
            "min_dynamic_patch": m.min_dynamic_patch,
            "max_dynamic_patch": m.max_dynamic_patch,
            "normalize_type": m.normalize_type,
            "use_packed_ds": d.packed or m.packed,
            "output_dir": str(run.output_dir),
            # False keeps HF's resume-from-last-checkpoint working after a requeue
            # (the shipped scripts pass True and silently restart from step 0).
            "overwrite_output_dir": False,
            "do_train": True,
            "per_device_train_batch_size": derived.per_device_batch_size,
            "gradient_accumulation_steps": derived.gradient_accumulation_steps,
            "learning_rate": spec.lr,
            "weight_decay": m.weight_decay,
            "warmup_ratio": m.warmup_ratio,
            "lr_scheduler_type": "cosine",
            "num_train_epochs": spec.epochs,
            "max_steps": spec.max_steps if spec.max_steps is not None else -1,
            "logging_steps": 1,
            "save_strategy": "steps",
            "save_steps": spec.save_steps,
            "save_total_limit": spec.save_total_limit,
            "evaluation_strategy": "no",
            "bf16": spec.hw.precision == "bf16",
            "fp16": spec.hw.precision == "fp16",
            "seed": spec.seed,
            "dataloader_num_workers": d.num_workers,
            "group_by_length": d.group_by_length,
            "deepspeed": str(run.deepspeed_json),
            "report_to": tracking.report_to(spec.tracking),
            "run_name": run.root.name,  # the tracker's run name (HF's too)
            "metrics_file": str(run.metrics_jsonl),
            "eval_meta_path": self.eval_meta_path(spec, run),
            "max_bad_sample_ratio": d.max_bad_sample_ratio,
            # ours only (the official script takes its prompt from its own checkout)
            "internvl_revision": m.internvl_revision,
            "system_message": self.system_message(spec),
            "tracking_params": str(run.config_yaml),  # ours logs the composed config
        }
        # the process-group timeout: a dead or hung rank fails the job after this long
        args["ddp_timeout"] = spec.cluster.collective_timeout_s
        # save at the next step boundary and exit 75 once this exists (requeue)
        args["stop_file"] = str(run.stop_file)
        # the packed recipe (InternVL3.5) and model.save_format, only where set
        args.update(generation_args(spec))
        args.update(spec.engine_args)
        if self.official:
            allowed = trees.allowed_args(spec.model) | TRAINING_ARGS
            args = {k: v for k, v in args.items() if k in allowed and v is not None}
        return args

    def files(self, spec: JobSpec, derived: Derived, run: RunDir, meta: MetaRead) -> dict[str, str]:
        files = {
            run.deepspeed_json.name: _dump(
                ds_config.render(spec, derived, optimizer_block=self.official)
            ),
            run.train_args_json.name: _dump(self.train_args(spec, derived, run)),
        }
        if not spec.data.generate:
            if meta.entries is not None:
                files[run.meta_json.name] = _dump(meta.entries)
            if meta.eval_text is not None:
                files[run.eval_meta_json.name] = meta.eval_text
        return files

    def prepare(self, spec: JobSpec, run: RunDir, python: str) -> list[PrepareStep]:
        steps = []
        if spec.model.make_tiny:
            opts = [f"--{k}={v}" for k, v in sorted(spec.model.make_tiny.items())]
            argv = (python, "-m", "internvl_chat.tools.make_tiny", str(spec.model.path), *opts)
            steps.append(PrepareStep(argv=argv, creates=str(spec.model.path)))
        if spec.data.generate == "synthetic":
            argv = (
                python,
                "-m",
                "internvl_chat.tools.make_synthetic",
                str(spec.data.dir),
                f"--num-samples={spec.data.num_samples}",
            )
            steps.append(PrepareStep(argv=argv, creates=str(spec.data.dir)))
        return steps

    def entry(self, spec: JobSpec) -> tuple[str, ...]:
        if self.official:
            root = Path(spec.model.internvl_root) / "internvl_chat"
            return (str(root / "internvl" / "train" / "internvl_chat_finetune.py"),)
        return ("-m", "internvl_chat.train")

    def node_launch(
        self, spec: JobSpec, derived: Derived, run: RunDir, node_rank: int, python: str
    ) -> NodeLaunch:
        argv = (
            *torchrun(python, derived, run, node_rank),
            *self.entry(spec),
            str(run.train_args_json),
        )
        env = dict(spec.hw.node_env)
        if self.official:
            root = Path(spec.model.internvl_root) / "internvl_chat"
            env.update(
                {"LAUNCHER": "pytorch", "PYTHONPATH": str(root), "TF_CPP_MIN_LOG_LEVEL": "3"}
            )
        else:
            env["PYTHONPATH"] = str(run.code_dir)  # the snapshot (launcher.snapshot)
        return NodeLaunch(node_rank=node_rank, argv=argv, env=env)

    # on the node ---------------------------------------------------------------------
    def resume_argv(self, run: RunDir, argv: list[str]) -> tuple[list[str], str | None]:
        """Ours resumes by itself. The official script: its shipped scripts disable HF's
        auto-resume, so a requeued attempt names the newest checkpoint
        (`resume_from_checkpoint`, in a copy of the arguments: the script reads one JSON)."""
        if not self.official:
            return argv, None
        from launcher.node.checkpoints import newest_hf_checkpoint

        newest = newest_hf_checkpoint(run.output_dir)
        if newest is None:
            return argv, None
        args = json.loads(run.train_args_json.read_text())
        args["resume_from_checkpoint"] = str(newest)
        run.train_args_resume_json.write_text(_dump(args))
        target = str(run.train_args_resume_json)
        argv = [target if a == str(run.train_args_json) else a for a in argv]
        return argv, f"resuming from {newest} (--resume_from_checkpoint)"

    def last_checkpoint_step(self, run: RunDir) -> int | None:
        """The newest valid checkpoint-N (COMPLETE.json, launcher.node.checkpoints)."""
        from launcher.node.checkpoints import last_valid_step

        return last_valid_step(run.output_dir)

    def outcome(self, plan: Plan, run: RunDir, returncode: int) -> Outcome:
        if returncode != 0:
            return Outcome(False, f"training exited with status {returncode}")
        return Outcome(True, "training finished")

    def finalize(self, plan: Plan, run: RunDir) -> None:
        return None


def _dump(data: Any) -> str:
    return json.dumps(data, indent=2) + "\n"
