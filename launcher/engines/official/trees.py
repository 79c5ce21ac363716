"""Which official tree trains a model, with which argument names, in which env.

OpenGVLab/InternVL at 2410d1d (`head`) holds two trainers: `internvl_chat/` (InternVL2, 2.5
and 3: Llama, InternLM2, Phi3 and Qwen2 LLMs) and `internvl_chat_gpt_oss/` (InternVL3.5:
Llama, Qwen2, Qwen3, Qwen3-MoE and GPT-OSS, on transformers 4.55 and DeepSpeed 0.17). The
pinned 764fdc9 has only the first. `model.internvl_tree` picks one; null follows the model:
a Qwen3 / GPT-OSS LLM at head trains in the 3.5 tree, everything else in `internvl_chat/`.

The argument names are those of each tree's finetune script (ModelArguments +
DataTrainingArguments), read from the scripts; tests/test_official_engine.py re-reads them
from the checkouts so a table that drifts from its tree fails.
"""

from __future__ import annotations

from pathlib import Path

from launcher.config.spec import JobSpec, ModelSpec, Problem

CHAT = "internvl_chat"
GPT_OSS = "internvl_chat_gpt_oss"
TREES = (CHAT, GPT_OSS)

REPO = Path(__file__).resolve().parents[3]
ENVS = {CHAT: REPO / ".venv-internvl", GPT_OSS: REPO / ".venv-internvl-gpt-oss"}
BUILD_ENV = {CHAT: "bash setup.sh --official", GPT_OSS: "bash setup.sh --official-gpt-oss"}

# LLM families each tree's InternVLChatConfig can build (its `architectures` branches)
BUILDS = {
    CHAT: {"internlm2", "qwen2", "llama", "phi3"},
    GPT_OSS: {"qwen2", "llama", "qwen3", "qwen3_moe", "gpt_oss"},
}
_THREE_FIVE = {"qwen3", "qwen3_moe", "gpt_oss"}

_PIN_MODEL_ARGS = {
    "model_name_or_path", "vision_path", "llm_path", "mlp_path", "freeze_llm",
    "freeze_backbone", "freeze_mlp", "unfreeze_vit_layers", "vision_select_layer",
    "use_backbone_lora", "use_llm_lora", "unfreeze_lm_head", "use_custom_trainer",
    "grad_checkpoint", "drop_path_rate", "ps_version",
}  # fmt: skip
_PIN_DATA_ARGS = {
    "max_seq_length", "force_image_size", "down_sample_ratio", "pad2square", "conv_style",
    "meta_path", "use_data_resampling", "dynamic_image_size", "use_thumbnail",
    "min_dynamic_patch", "max_dynamic_patch", "neftune_alpha", "normalize_type",
}  # fmt: skip
_HEAD_MODEL_ARGS = _PIN_MODEL_ARGS - {"use_custom_trainer"} | {"use_fast_tokenizer", "use_liger"}
_HEAD_DATA_ARGS = _PIN_DATA_ARGS - {"neftune_alpha"} | {
    "min_num_frame", "max_num_frame", "use_packed_ds", "num_images_expected",
    "max_packed_tokens", "max_buffer_size", "log_freq", "strict_mode", "replacement",
    "allow_overflow", "loss_reduction", "loss_reduction_all_gather",
}  # fmt: skip
# Argument names by argument set: "pin", "head" (internvl_chat/ at 764fdc9 / 2410d1d) and
# "gpt_oss" (internvl_chat_gpt_oss/ at 2410d1d).
MODEL_ARGS = {
    "pin": _PIN_MODEL_ARGS,
    "head": _HEAD_MODEL_ARGS,
    "gpt_oss": _HEAD_MODEL_ARGS | {"use_custom_flash_attn"},
}
DATA_ARGS = {
    "pin": _PIN_DATA_ARGS,
    "head": _HEAD_DATA_ARGS,
    "gpt_oss": _HEAD_DATA_ARGS - {"use_data_resampling", "loss_reduction_all_gather"}
    | {"split_annotations"},
}
# HF TrainingArguments renamed between the trees' transformers (4.37 -> 4.55)
TRAINING_RENAMES = {CHAT: {}, GPT_OSS: {"evaluation_strategy": "eval_strategy"}}
# What a user may set in hw.env that the launcher's own rendezvous owns: the 3.5 scripts read
# WORLD_SIZE as the node count (`torchrun --nnodes=$WORLD_SIZE`); under our torchrun it is
# the number of processes, set per rank.
RENDEZVOUS_ENV = ("WORLD_SIZE", "RANK", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT")


def tree(model: ModelSpec) -> str:
    """model.internvl_tree, else the one its LLM trains in at its revision."""
    if model.internvl_tree:
        return model.internvl_tree
    if model.internvl_revision == "head" and model.llm_family in _THREE_FIVE:
        return GPT_OSS
    return CHAT


def arg_set(model: ModelSpec) -> str:
    """The key of MODEL_ARGS / DATA_ARGS for this model's tree and revision."""
    return "gpt_oss" if tree(model) == GPT_OSS else model.internvl_revision


def allowed_args_for(key: str) -> set[str]:
    return MODEL_ARGS[key] | DATA_ARGS[key]


def allowed_args(model: ModelSpec) -> set[str]:
    return allowed_args_for(arg_set(model))


def env_dir(spec: JobSpec) -> Path:
    return Path(spec.engine_args.get("official_env") or ENVS[tree(spec.model)])


def check(spec: JobSpec, compat: bool) -> list[Problem]:
    """What the chosen tree cannot build or run, each naming the setting to change."""
    m, out = spec.model, []
    name = tree(m)
    if name == GPT_OSS and m.internvl_revision != "head":
        out.append(
            Problem(
                "model.internvl_tree",
                f"{GPT_OSS}/ exists only at internvl_revision=head (2410d1d); "
                f"at {m.internvl_revision} use {CHAT}",
            )
        )
    if m.llm_family not in BUILDS[name]:
        other = [t for t in TREES if m.llm_family in BUILDS[t]]
        hint = (
            f"model.internvl_tree={other[0]}"
            if other and not (other[0] == GPT_OSS and m.internvl_revision != "head")
            else "model.engine=internvl_chat (our trainer)"
        )
        out.append(
            Problem(
                "model.internvl_tree" if m.internvl_tree else "model.llm_family",
                f"{m.llm_family}: the official {name}/ tree builds only "
                f"{', '.join(sorted(BUILDS[name]))} LLMs; use {hint}",
            )
        )
    if name == GPT_OSS and compat and (spec.data.packed or m.packed):
        out.append(
            Problem(
                "model.packed",
                f"packed rows in {GPT_OSS}/ attend through flash-attn's varlen kernel "
                "(replace_qwen3_attention_class), which this hardware lacks: set "
                "model.packed=false (and data.packed=false) here, or train on GPUs with flash-attn",
            )
        )
    if (spec.data.packed or m.packed) and spec.max_steps is None:
        out.append(
            Problem(
                "max_steps",
                "the official packed dataset is an iterable without a length, so HF's Trainer "
                "needs a step count (the 3.5 scripts pass --max_steps 8000): set max_steps=N",
            )
        )
    for key in RENDEZVOUS_ENV:
        if key in spec.hw.env:
            out.append(
                Problem(
                    f"hw.env.{key}",
                    "the launcher sets the rendezvous itself (torchrun --nnodes/--node_rank/"
                    "--master_addr per node; WORLD_SIZE is then every process, not the node "
                    "count of the official 3.5 scripts): remove it",
                )
            )
    return out
