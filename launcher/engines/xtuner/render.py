"""Render the XTuner 0.2.0 config (seed 001 LLaVA pretrain, seed 003 InternVL2 finetune).

The plan writes `RUN_DIR/xtuner_config.py`: a lazy-import mmengine config that inherits a base
from `xtuner_cfgs/` (copied into `RUN_DIR/xtuner_base/` so the run keeps the exact base it ran)
and then sets every value the run depends on *on its nested path*. mmengine copies a base's
derived values (`train_dataloader.batch_size = batch_size`, the tokenizer dict in each use)
when the base is read, so overriding only the top-level input would silently keep the base's.
Pure: text in, text out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from launcher.config.spec import JobSpec
from launcher.contract import Derived

REPO = Path(__file__).resolve().parents[3]
CFG_DIR = REPO / "xtuner_cfgs"
BASE_DIR = "xtuner_base"
"""Run-dir folder holding the copied base configs."""
DEFAULT_ENV = REPO / ".venv-xtuner"
ENGINE_ARGS = {"xtuner_env": "the XTuner environment on the nodes (default <repo>/.venv-xtuner)"}

# Which nested paths carry each setting, per recipe. Our bases put DatasetInfoHook at
# custom_hooks[0] and ThroughputHook at custom_hooks[1].
_COMMON = {
    "batch_size": ["train_dataloader.batch_size"],
    "num_workers": ["train_dataloader.num_workers"],
    "accumulative_counts": ["optim_wrapper.accumulative_counts"],
    "lr": ["optim_wrapper.optimizer.lr"],
    "max_length": ["train_dataloader.dataset.max_length"],
    "save_interval": ["default_hooks.checkpoint.interval"],
    "save_total_limit": ["default_hooks.checkpoint.max_keep_ckpts"],
    "log_interval": ["default_hooks.logger.interval"],
    "dist_backend": ["env_cfg.dist_cfg.backend"],
    "dist_timeout": ["env_cfg.dist_cfg.timeout"],
    "seed": ["randomness.seed"],
    # the plan's freeze flags (and its memory estimate) must be what trains, not the base's
    "freeze_llm": ["model.freeze_llm"],
    "freeze_visual_encoder": ["model.freeze_visual_encoder"],
}
RECIPES: dict[str, dict[str, list[str]]] = {
    "llava": {
        **_COMMON,
        "llm_path": [
            "model.llm.pretrained_model_name_or_path",
            "train_dataloader.dataset.tokenizer.pretrained_model_name_or_path",
            "custom_hooks[0].tokenizer.pretrained_model_name_or_path",
        ],
        "visual_encoder_path": [
            "model.visual_encoder.pretrained_model_name_or_path",
            "train_dataloader.dataset.image_processor.pretrained_model_name_or_path",
        ],
        "data_path": ["train_dataloader.dataset.data_path"],
        "image_folder": ["train_dataloader.dataset.image_folder"],
    },
    "internvl": {
        **_COMMON,
        "model_path": [
            "model.model_path",
            "train_dataloader.dataset.model_path",
            "custom_hooks[0].tokenizer.pretrained_model_name_or_path",
        ],
        "data_path": ["train_dataloader.dataset.data_paths"],
        "image_folder": ["train_dataloader.dataset.image_folders"],
        "repeat_times": ["train_dataloader.dataset.repeat_times"],
        # LengthGroupedSampler groups batch x accumulation samples
        "sampler_group_size": ["train_dataloader.sampler.per_device_batch_size"],
    },
}
BASES = {
    "llava_internlm2_chat_20b_clip_vit_large_p14_336_e1_gpu8_pretrain": "llava",
    "tiny_llava_pretrain": "llava",
    "internvl_v2_internlm2_2b_finetune": "internvl",
    "internvl_v2_internlm2_2b_qlora_finetune": "internvl",
    "tiny_internvl_v2_finetune": "internvl",
}
SCHEDULE_KEYS = ("max_iters", "max_epochs", "warmup_ratio")
THROUGHPUT_KEYS = ("hidden_size", "num_layers", "vocab_size", "mlp_ratio")


def render_resume_config(config: Path, checkpoint: Path) -> str:
    """A requeued attempt's config: the run's own, plus mmengine's `resume = True` and
    `load_from = <checkpoint>` (what `xtuner train --resume` sets)."""
    return "\n".join(
        [
            f"# A requeued attempt: {config.name} resumed from the newest checkpoint.",
            "from mmengine.config import read_base",
            "",
            "with read_base():",
            f"    from .{config.stem} import *  # noqa: F403",
            "",
            "resume = True",
            f"load_from = {str(checkpoint)!r}",
            "",
        ]
    )


def base_stem(base: str) -> str:
    return Path(base).name.removesuffix(".py")


def render_xtuner_config(base: str, overrides: Mapping[str, Any]) -> str:
    """The rendered config text: inherit `xtuner_base/<base>`, then set each effective value.

    `overrides` keys: those of RECIPES[recipe], plus `max_iters` or `max_epochs`,
    `warmup_ratio`, and `throughput` (dict of hidden_size, num_layers, vocab_size, mlp_ratio).
    Raises ValueError listing every unknown key or missing part at once.
    """
    stem = base_stem(base)
    problems = []
    recipe = BASES.get(stem)
    if recipe is None:
        problems.append(f"unknown XTuner base {base!r}; known: {', '.join(sorted(BASES))}")
        recipe = "llava"
    paths = RECIPES[recipe]
    known = set(paths) | set(SCHEDULE_KEYS) | {"throughput"}
    problems += [f"unknown override {k!r}" for k in sorted(set(overrides) - known)]
    if ("max_iters" in overrides) == ("max_epochs" in overrides):
        problems.append("give exactly one of max_iters, max_epochs")
    tp = overrides.get("throughput", {})
    problems += [f"throughput.{k} is missing" for k in THROUGHPUT_KEYS if k not in tp]
    if problems:
        raise ValueError(
            f"cannot render the XTuner config ({stem}):\n  - " + "\n  - ".join(problems)
        )

    lines = [
        f"# Rendered by launcher.engines.xtuner from {BASE_DIR}/{stem}.py; re-render, do not edit.",
        "# Values are set on their nested paths: the base's copies of its top-level variables",
        "# would otherwise keep the base's values.",
        "from mmengine.config import read_base",
        "",
        "with read_base():",
        f"    from .{BASE_DIR}.{stem} import *  # noqa: F403",
        "",
    ]
    for key, targets in paths.items():
        if key in overrides:
            value = overrides[key]
            if key in ("data_path", "image_folder") and not isinstance(value, list):
                value = [value] if recipe == "internvl" else value
            lines += [f"{t} = {value!r}" for t in targets]
    lines += _schedule_lines(overrides)
    lines += [f"custom_hooks[1].{k} = {tp[k]!r}" for k in THROUGHPUT_KEYS]
    return "\n".join(lines) + "\n"


def warmup_iters(max_iters: int, ratio: float) -> int:
    """Warm-up length in iterations. At least 2 where the run allows: mmengine's LinearLR never
    reaches its last factor, so a 1-iteration warm-up leaves the cosine phase at start_factor x lr
    (and a 0-iteration one, as 0.03 of a tiny epoch rounds to, is refused outright)."""
    if max_iters <= 2:
        return 1
    return min(max(2, round(ratio * max_iters)), max_iters - 1)


def _schedule_lines(o: Mapping[str, Any]) -> list[str]:
    ratio = o.get("warmup_ratio", 0.03)
    if "max_iters" in o:
        total = int(o["max_iters"])
        warm = warmup_iters(total, ratio)
        bounds = [(0, warm), (warm, total)]
        lines = [f"train_cfg = dict(type=train_cfg.type, max_iters={total})"]
        by_epoch = False
    else:
        epochs = o["max_epochs"]
        bounds = [(0, ratio * epochs), (ratio * epochs, epochs)]
        lines = [f"train_cfg = dict(type=train_cfg.type, max_epochs={epochs!r})"]
        by_epoch = True
    for i, (begin, end) in enumerate(bounds):
        lines += [
            f"param_scheduler[{i}].by_epoch = {by_epoch}",
            f"param_scheduler[{i}].convert_to_iter_based = {by_epoch}",
            f"param_scheduler[{i}].begin = {begin!r}",
            f"param_scheduler[{i}].end = {end!r}",
        ]
    return lines


def rendered_recipe(config_text: str) -> str | None:
    """The recipe ("llava" / "internvl") of a config rendered by render_xtuner_config."""
    found = re.search(rf"^\s+from \.{BASE_DIR}\.(\w+) import \*", config_text, flags=re.M)
    return BASES.get(found.group(1)) if found else None


def base_chain(stem: str, read=lambda p: p.read_text()) -> dict[str, str]:
    """The base file and every base it inherits (read_base imports), as file name -> text."""
    out: dict[str, str] = {}
    todo = [stem]
    while todo:
        name = todo.pop()
        if f"{name}.py" in out:
            continue
        text = read(CFG_DIR / f"{name}.py")
        out[f"{name}.py"] = text
        todo += re.findall(r"^\s+from \.(\w+) import \*", text, flags=re.M)
    return out


def image_tokens(spec: JobSpec) -> int:
    """LLaVA: one LLM token per patch of the (single) image."""
    m = spec.model
    return (m.force_image_size // m.patch_size) ** 2


def internvl_data(spec: JobSpec, entries: Mapping[str, Any] | None) -> dict[str, list[Any]]:
    """data_path / image_folder / repeat_times lists for XTuner's InternVL_V1_5_Dataset from our
    data group: a LLaVA JSON, the synthetic set (built on node 0), or each of `entries` (the
    meta JSON as the check stage read it; {} when it cannot be read here: XTunerEngine.check
    refuses that)."""
    d = spec.data
    if d.format == "llava_json":
        return {"data_path": [d.json_path], "image_folder": [d.image_folder], "repeat_times": [1]}
    if d.generate == "synthetic":
        root = str(Path(d.dir))
        return {
            "data_path": [str(Path(root) / "train.jsonl")],
            "image_folder": [root],
            "repeat_times": [1],
        }
    found = list((entries or {}).values())
    if not found:
        return {}
    return {
        "data_path": [e["annotation"] for e in found],
        "image_folder": [e["root"] for e in found],
        "repeat_times": [e.get("repeat_time", 1) for e in found],
    }


def overrides(spec: JobSpec, derived: Derived, entries: Mapping[str, Any] | None) -> dict[str, Any]:
    m, d = spec.model, spec.data
    acc = derived.gradient_accumulation_steps
    o: dict[str, Any] = {
        "batch_size": derived.per_device_batch_size,
        "num_workers": d.num_workers,
        "accumulative_counts": acc,
        "lr": spec.lr,
        "save_interval": spec.save_steps * acc,  # mmengine counts micro-batches
        "save_total_limit": spec.save_total_limit,
        "log_interval": acc,  # one record per optimizer step
        "dist_backend": spec.hw.dist_backend,
        # seconds; mmengine turns it into the process group's timeout
        "dist_timeout": spec.cluster.collective_timeout_s,
        "seed": spec.seed,
        "data_path": d.json_path,
        "image_folder": d.image_folder,
        # InternVL recipes: every dataset of our data group (never the base file's data_path)
        **(internvl_data(spec, entries) if BASES[base_stem(m.xtuner_base)] == "internvl" else {}),
        "warmup_ratio": m.warmup_ratio,
        "freeze_llm": m.freeze_llm,
        "freeze_visual_encoder": m.freeze_backbone,
    }
    if spec.max_steps is not None:
        o["max_iters"] = spec.max_steps * acc
    else:
        o["max_epochs"] = int(spec.epochs)
    if BASES[base_stem(m.xtuner_base)] == "llava":
        # LLaVA's max_length is the text budget: the image features take the rest.
        o |= {
            "llm_path": m.llm_path,
            "visual_encoder_path": m.vision_path,
            "max_length": spec.seq_len - image_tokens(spec),
        }
    else:
        o |= {
            "model_path": m.path,
            "max_length": spec.seq_len,
            "sampler_group_size": derived.per_device_batch_size * acc,
        }
    llm = m.dims.llm
    o["throughput"] = {
        "hidden_size": llm.hidden,
        "num_layers": llm.layers,
        "vocab_size": llm.vocab,
        "mlp_ratio": llm.intermediate / llm.hidden if llm.hidden else 0.0,
    }
    return {k: v for k, v in o.items() if v is not None}
