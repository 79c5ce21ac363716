"""`--mm-model` (RUN_DIR/mindspeed/model.json) for MindSpeed-MM v2.2.0: text_decoder +
image_encoder, with `pipeline_num_layers` = the job's split when pp > 1
(shared/specs/mindspeed_mm.md). Pure."""

from __future__ import annotations

from typing import Any

from launcher.config.spec import JobSpec
from launcher.engines.mindspeed import split as splits


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
