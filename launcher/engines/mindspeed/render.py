"""What MindSpeed-MM v2.2.0 reads for an InternVL2 finetune, rendered from a JobSpec (pure).

- `data_json`: `--mm-data` (dataset_param + dataloader_param; tokenizer from the *unconverted*
  HF dir, as MindSpeed-MM's README requires).
- `model_json`: `--mm-model` (text_decoder + image_encoder, `pipeline_num_layers` = the split).
- `convert_sh`: `mm-convert InternVLConverter hf_to_mm` with the same split (nested lists), and
  `mm_to_hf` for export (flat lists; mm-convert cannot export VPP checkpoints).
- `pretrain_args`: the arguments of `pretrain_internvl.py` (the seed's finetune script, with
  optimizer and RNG saving left on so a requeued job resumes).

Field names and values follow shared/specs/mindspeed_mm.md (facts read from v2.2.0).
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from launcher.derive import Derived
from launcher.engines.mindspeed import split as splits
from launcher.rundir import RunDir
from launcher.spec import JobSpec

NORMALIZE = {
    "imagenet": ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    "clip": ([0.4814546, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]),
    "siglip": ([0.5, 0.5, 0.5], [0.5, 0.5, 0.5]),
}
SPLIT_STAMP = "vlm_launch_split.json"
"""Written by convert.sh into the converted folder: the split those weights were cut with."""


# --- the split --------------------------------------------------------------------------


def layer_costs(spec: JobSpec) -> tuple[float, float]:
    """(cost of one ViT layer, cost of the LM head), in LLM layers, per sample.

    FLOPs per layer ~ its matmul parameters x the tokens through it x 3 when trained (forward
    + both backward matmuls), 2 for a frozen LLM that passes gradients down to a trained
    projector/ViT, 1 for forward only. ViT tokens: the most tiles an image can become.
    """
    m, d = spec.model, spec.model.dims
    vit, llm = d.vit, d.llm
    kv_hidden = llm.hidden * llm.kv_heads // llm.heads if llm.heads else 0
    llm_layer = 2 * llm.hidden**2 + 2 * llm.hidden * kv_hidden + 3 * llm.hidden * llm.intermediate
    vit_layer = 4 * vit.hidden**2 + 2 * vit.hidden * vit.intermediate
    upstream_trained = not (m.freeze_backbone and m.freeze_mlp)
    llm_factor = 3 if not m.freeze_llm else 2 if upstream_trained else 1
    vit_factor = 1 if m.freeze_backbone else 3
    vit_tokens = ((m.force_image_size // m.patch_size) ** 2 + 1) * m.max_tiles
    llm_cost = llm_layer * spec.seq_len * llm_factor
    if not llm_cost:
        return 0.5, 1.0
    vit_cost = vit_layer * vit_tokens * vit_factor / llm_cost
    head_cost = llm.hidden * llm.vocab * spec.seq_len * llm_factor / llm_cost
    return round(vit_cost, 4), round(head_cost, 4)


def resolve_split(spec: JobSpec) -> tuple[splits.Split | None, list[splits.Problem]]:
    """The split this job uses (the user's, or the balanced one), with every problem."""
    par, d = spec.parallelism, spec.model.dims
    vit_cost, head_cost = layer_costs(spec)
    return splits.resolve(
        par.vit_pp_layers,
        par.llm_pp_layers,
        vit_layers=d.vit.layers,
        llm_layers=d.llm.layers,
        pp=par.pp,
        vpp=par.vpp,
        tp=par.tp,
        kv_heads=d.llm.kv_heads,
        vit_layer_cost=vit_cost,
        head_cost=head_cost,
    )


def split_tag(spec: JobSpec, split: splits.Split) -> str:
    """`tp1-pp4-llm6.9.9.8-vit24.0.0.0`: a converted folder's name says how it was cut."""
    par = spec.parallelism
    vit, llm = split.flat()
    vpp = f"-vpp{par.vpp}" if par.vpp else ""
    return f"tp{par.tp}-pp{par.pp}{vpp}-llm{'.'.join(map(str, llm))}-vit{'.'.join(map(str, vit))}"


def mm_dir(spec: JobSpec, split: splits.Split) -> str:
    """Where hf_to_mm writes and training loads from: one path, so they cannot differ."""
    if spec.model.mindspeed_ckpt:
        return spec.model.mindspeed_ckpt
    return f"{spec.model.path}-mm-{split_tag(spec, split)}"


def split_record(spec: JobSpec, split: splits.Split) -> dict[str, Any]:
    par = spec.parallelism
    vit, llm = split.nested
    if not par.vpp:
        vit, llm = vit[0], llm[0]
    return {"tp": par.tp, "pp": par.pp, "vpp": par.vpp, "vit_pp_layers": vit, "llm_pp_layers": llm}


# --- data.json / model.json ---------------------------------------------------------------


def dataset_paths(spec: JobSpec) -> tuple[list[tuple[str, str, float]], str | None]:
    """[(data_path, data_folder, repeat_time)] and the validation annotation, if any."""
    from launcher.engines.internvl import meta_entries

    d = spec.data
    if d.generate == "synthetic":
        root = str(Path(d.dir))
        return [(f"{root}/train.jsonl", root, 1)], None
    entries = meta_entries(spec) or {}
    train = [(e["annotation"], e["root"], e.get("repeat_time", 1)) for e in entries.values()]
    val = None
    if d.eval_meta_file and Path(d.eval_meta_file).exists():
        import json

        evals = list(json.loads(Path(d.eval_meta_file).read_text()).values())
        val = evals[0]["annotation"] if evals else None
    return train, val


def data_json(spec: JobSpec) -> dict[str, Any]:
    m, d = spec.model, spec.data
    train, val = dataset_paths(spec)
    data_path, data_folder, repeat = train[0] if train else ("", "", 1)
    repeat = int(repeat) if float(repeat).is_integer() else repeat
    basic: dict[str, Any] = {
        "data_path": data_path,
        "data_folder": data_folder,
        "repeat_time": repeat,
    }
    if val:
        basic["val_dataset"] = val
    mean, std = NORMALIZE[m.normalize_type]
    size = m.force_image_size
    return {
        "dataset_param": {
            "dataset_type": "multimodal",
            "basic_parameters": basic,
            "preprocess_parameters": {
                "image_reader_type": "torchvision",
                "train_pipeline": {
                    "image": [
                        {
                            "trans_type": "Resize",
                            "param": {
                                "size": [size, size],
                                "interpolation": "BICUBIC",
                                "antialias": None,
                            },
                        },
                        {"trans_type": "ToTensor"},
                        {"trans_type": "norm_fun", "param": {"mean": mean, "std": std}},
                    ]
                },
            },
            "tokenizer_config": {
                "hub_backend": "hf",
                "autotokenizer_name": "AutoTokenizer",
                "from_pretrained": m.path,
                "add_eos_token": False,
                "use_fast": False,
            },
            "use_text_processer": True,
            "template_name": m.mindspeed.template or m.template,
            "patch_size": m.patch_size,
            "image_size": size,
            "down_sample_ratio": m.downsample_ratio,
            "group_by_length": d.group_by_length,
            "dynamic_image_size": m.dynamic_image_size,
            "use_thumbnail": m.use_thumbnail,
            "min_dynamic_patch": m.min_dynamic_patch,
            "max_dynamic_patch": m.max_dynamic_patch,
            "min_num_frame": 4,
            "max_num_frame": 12,
            "sampling_method": "rand",
        },
        "dataloader_param": {
            "dataloader_mode": "sampler",
            "shuffle": True,
            "drop_last": True,
            "pin_memory": True,
            "sampler_type": "BaseRandomBatchSampler",
            "collate_param": {"model_name": "internvl", "pad_id": m.mindspeed.pad_id},
        },
    }


def _vision_encoder(spec: JobSpec) -> dict[str, Any]:
    m = spec.model
    vit = m.dims.vit
    big = m.mindspeed.vit_kind == "internvit_6b"
    enc: dict[str, Any] = {
        "model_id": "InternViT",
        "num_layers": vit.layers,
        "hidden_size": vit.hidden,
        "ffn_hidden_size": vit.intermediate,
        "num_attention_heads": vit.heads,
        "num_channels": 3,
        "patch_size": m.patch_size,
        "image_size": m.force_image_size,
        "add_qkv_bias": not big,
        "qk_layernorm": big,
        "activation_func": "gelu",
        "normalization": "RMSNorm" if big else "LayerNorm",
        "layernorm_epsilon": 1e-6,
    }
    if big:
        enc |= {"q_layernorm": "RMSNorm", "k_layernorm": "RMSNorm"}
    enc |= {
        "hidden_dropout": 0.0,
        "drop_path_rate": m.drop_path_rate if not m.freeze_backbone else 0.0,
        "attention_dropout": 0.0,
        "init_method_std": 0.02,
        "initializer_factor": 0.1 if big else 1.0,
        "output_hidden_states": False,
        "use_return_dict": False,
        "recompute_granularity": "full",
        "recompute_method": "uniform",
        "recompute_num_layers": 1,
        "params_dtype": "bf16",
        "post_layer_norm": False,
        "downsample_ratio": m.downsample_ratio,
        "fp16": False,
        "bf16": True,
        "attention_softmax_in_fp32": False,
        "select_layer": m.select_layer,
        "ps_version": m.ps_version,
        "pre_tockens": 2147483647,
        "next_tockens": 2147483647,
        "freeze": m.freeze_backbone,
    }
    return enc


def model_json(spec: JobSpec, split: splits.Split) -> dict[str, Any]:
    m = spec.model
    llm, vit, ms = m.dims.llm, m.dims.vit, m.mindspeed
    decoder: dict[str, Any] = {
        "model_id": "internllm",
        "num_layers": llm.layers,
        "hidden_size": llm.hidden,
        "num_attention_heads": llm.heads,
        "num_query_groups": llm.kv_heads,
        "ffn_hidden_size": llm.intermediate,
        "kv_channels": llm.hidden // llm.heads,
        "hidden_dropout": 0.0,
        "attention_dropout": 0.0,
        "layernorm_epsilon": 1e-05,
        "normalization": "RMSNorm",
        "qk_layernorm": False,
        "add_bias_linear": False,
        "add_qkv_bias": False,
        "bias_activation_fusion": False,
        "gated_linear_unit": True,
        "init_method_std": 0.01,
        "apply_query_key_layer_scaling": False,
        "attention_softmax_in_fp32": True,
        "masked_softmax_fusion": False,
        "layernorm_zero_centered_gamma": False,
        "bias_dropout_fusion": False,
        "apply_rope_fusion": True,
        "memory_efficient_layer_norm": False,
        "max_position_embeddings": ms.max_position_embeddings,
        "fp16": False,
        "bf16": True,
        "params_dtype": "bf16",
        "fp16_lm_cross_entropy": False,
        "rotary_percent": 1.0,
        "position_embedding_type": "rope",
        "parallel_output": True,
        "initializer_factor": 0.1,
        "persist_layer_norm": True,
        "activation_func": "silu",
        "vocab_size": ms.vocab_size,
        "rotary_base": ms.rotary_base,
        "freeze": m.freeze_llm,
    }
    encoder = _vision_encoder(spec)
    if spec.parallelism.pp > 1:
        vit_split, llm_split = split.nested
        if not spec.parallelism.vpp:
            vit_split, llm_split = vit_split[0], llm_split[0]
        # after num_layers, where MindSpeed-MM's examples keep it
        decoder = _insert_after(decoder, "num_layers", "pipeline_num_layers", llm_split)
        encoder = _insert_after(encoder, "num_layers", "pipeline_num_layers", vit_split)
    return {
        "model_id": "InternVL",
        "pre_process": True,
        "post_process": True,
        "add_text_encoder": False,
        "img_embedding_idx": 1,
        "downsample_ratio": m.downsample_ratio,
        "select_layer": m.select_layer,
        "ps_version": m.ps_version,
        "add_rmsnorm_offset": False,
        "img_context_token_id": ms.img_context_token_id,
        "text_decoder": decoder,
        "image_encoder": {
            "vision_encoder": encoder,
            "vision_projector": {
                "model_id": "InternVLMLP",
                "downsample_ratio": m.downsample_ratio,
                "vit_hidden_size": vit.hidden,
                "llm_hidden_size": llm.hidden,
                "params_dtype": "bf16",
                "num_layers": 1,
                "freeze": m.freeze_mlp,
            },
        },
        "text_encoder": None,
        "video_encoder": None,
    }


def _insert_after(d: dict[str, Any], after: str, key: str, value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        out[k] = v
        if k == after:
            out[key] = value
    return out


# --- convert.sh ---------------------------------------------------------------------------


def convert_sh(spec: JobSpec, split: splits.Split, run: RunDir) -> str:
    """`bash convert.sh [hf_to_mm|mm_to_hf]`: import the HF weights with this job's split into
    the folder training loads (and stamp it with the split), or export a trained checkpoint."""
    import json

    par = spec.parallelism
    q = shlex.quote
    target = mm_dir(spec, split)
    vit_n, llm_n = split.nested
    vit_f, llm_f = split.flat()
    stamp = json.dumps(split_record(spec, split), separators=(",", ":"))
    hf_to_mm = [
        "mm-convert", "InternVLConverter", "hf_to_mm",
        "--cfg.mm_dir", target,
        "--cfg.hf_config.hf_dir", str(spec.model.path),
        "--cfg.parallel_config.llm_pp_layers", splits.format_list(llm_n),
        "--cfg.parallel_config.vit_pp_layers", splits.format_list(vit_n),
        "--cfg.parallel_config.tp_size", str(par.tp),
        "--cfg.trust_remote_code", "True",
    ]  # fmt: skip
    mm_to_hf = [
        "mm-convert", "InternVLConverter", "mm_to_hf",
        "--cfg.save_hf_dir", f"{run.output_dir}/hf",
        "--cfg.mm_dir", '"$CKPT"',
        "--cfg.hf_config.hf_dir", str(spec.model.path),
        "--cfg.parallel_config.llm_pp_layers", splits.format_list(llm_f),
        "--cfg.parallel_config.vit_pp_layers", splits.format_list(vit_f),
        "--cfg.parallel_config.tp_size", str(par.tp),
    ]  # fmt: skip

    def line(argv: list[str]) -> str:
        """`mm-convert InternVLConverter hf_to_mm \\` then one `--flag value` per line."""
        words = [a if a == '"$CKPT"' else q(a) for a in argv]
        first = words.index(next(w for w in words if w.startswith("--")))
        rows = [" ".join(words[:first])]
        rows += [" ".join(words[i : i + 2]) for i in range(first, len(words), 2)]
        return " \\\n      ".join(rows)

    export = (
        f"    {line(mm_to_hf)}"
        if not par.vpp
        else '    echo "mm-convert (MindSpeed-MM v2.2.0) cannot export VPP checkpoints '
        '(mm_to_hf takes flat lists only); re-split without vpp first" >&2\n    exit 2'
    )
    return f"""#!/bin/bash
# Rendered by launcher.engines.mindspeed for {run.root}; re-render, do not edit.
# The split here is the one in mindspeed/model.json (pipeline_num_layers):
#   vit_pp_layers {splits.format_list(vit_n)}  llm_pp_layers {splits.format_list(llm_n)}
# bash convert.sh hf_to_mm        HF weights -> {target} (what --load reads)
# bash convert.sh mm_to_hf [DIR]  a trained checkpoint (default: the latest in output/) -> output/hf
set -euo pipefail
case "${{1:-hf_to_mm}}" in
  hf_to_mm)
    {line(hf_to_mm)}
    printf '%s\\n' {q(stamp)} > {q(target + "/" + SPLIT_STAMP)}
    ;;
  mm_to_hf)
    CKPT="${{2:-{run.output_dir}}}"
{export}
    ;;
  *)
    echo "usage: bash $0 [hf_to_mm|mm_to_hf [CHECKPOINT_DIR]]" >&2
    exit 2
    ;;
esac
"""


# --- pretrain_internvl.py arguments ---------------------------------------------------------


def train_iters(spec: JobSpec, derived: Derived) -> int | None:
    """max_steps, else epochs x samples / global batch when the data says how many it has."""
    if spec.max_steps is not None:
        return spec.max_steps
    d = spec.data
    if d.generate == "synthetic":
        samples = d.num_samples
    else:
        from launcher.engines.internvl import meta_entries

        entries = list((meta_entries(spec) or {}).values())
        if not entries or any(e.get("length") is None for e in entries):
            return None
        samples = sum(e["length"] * e.get("repeat_time", 1) for e in entries)
    return max(1, int(samples * spec.epochs) // derived.global_batch_size)


def pretrain_args(spec: JobSpec, derived: Derived, run: RunDir, split: splits.Split) -> list[str]:
    m, par = spec.model, spec.parallelism
    ms = m.mindspeed
    root = Path(m.mindspeed_root)
    files = run.mindspeed_dir
    args = [
        "--mm-data", str(files / "data.json"),
        "--mm-model", str(files / "model.json"),
        "--mm-tool", str(root / "mindspeed_mm" / "tools" / "tools.json"),
        "--tensor-model-parallel-size", str(par.tp),
        "--pipeline-model-parallel-size", str(par.pp),
    ]  # fmt: skip
    if par.vpp:
        args += ["--virtual-pipeline-model-parallel-size", str(par.vpp)]
    args += [
        "--context-parallel-size", str(par.cp),
        "--micro-batch-size", str(derived.per_device_batch_size),
        "--global-batch-size", str(derived.global_batch_size),
        "--seq-length", str(spec.seq_len),
        "--tokenizer-type", "NullTokenizer",
        "--vocab-size", str(ms.cli_vocab_size or ms.vocab_size),
        "--position-embedding-type", "rope",
        "--rotary-base", str(ms.rotary_base),
        "--swiglu",
        "--no-masked-softmax-fusion",
        "--lr", f"{spec.lr:g}",
        "--min-lr", "0.0",
        "--lr-warmup-fraction", f"{m.warmup_ratio:g}",
        "--train-iters", str(train_iters(spec, derived)),
        "--lr-decay-style", "cosine",
        "--weight-decay", f"{m.weight_decay:g}",
        "--clip-grad", "1.0",
        "--adam-beta1", "0.9",
        "--adam-beta2", "0.999",
        "--seed", str(spec.seed),
        "--no-gradient-accumulation-fusion",
        "--use-distributed-optimizer",
    ]  # fmt: skip
    args += {"bf16": ["--bf16"], "fp16": ["--fp16"], "fp32": []}[spec.hw.precision]
    args += [
        # one folder: the converted weights are linked in as `release` before the first start,
        # and every save goes here, so a requeued job resumes (optimizer + RNG included)
        "--load", str(run.output_dir),
        "--save", str(run.output_dir),
        "--save-interval", str(spec.save_steps),
        "--use-flash-attn",
        "--use-fused-rotary-pos-emb",
        "--variable-seq-lengths",
        "--normalization", "RMSNorm",
        "--use-fused-rmsnorm",
        "--num-workers", str(spec.data.num_workers),
        "--log-interval", "1",
        "--log-tps",
        "--eval-interval", str(spec.save_steps),
        "--eval-iters", "0",
        "--ckpt-format", "torch",
        "--distributed-backend", "nccl",
    ]  # fmt: skip
    return args
