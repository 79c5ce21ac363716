"""The language model inside InternVL: native transformers classes for every family.

Qwen2 (and Qwen2.5), Qwen3 (q/k RMSNorm per head), Llama, Phi-3 and InternLM3 map onto their
transformers classes unchanged: their remote-code checkpoints already use transformers' names
(InternLM3 runs as transformers' own ``internlm3``, a Llama with ``head_dim``). InternLM2 (and
InternLM2.5) is not in
transformers and its checkpoints need remote code; we load it as a ``LlamaForCausalLM``
(same maths: RMSNorm, SwiGLU, rotate-half RoPE, GQA) by converting its fused ``wqkv`` and
renamed weights, and convert back when saving so the checkpoint keeps its original layout.
"""

from __future__ import annotations

import torch

# architectures[0] of an llm_config -> family name
FAMILIES = {
    "InternLM2ForCausalLM": "internlm2",
    "Qwen2ForCausalLM": "qwen2",
    "LlamaForCausalLM": "llama",
    "Phi3ForCausalLM": "phi3",
    "Qwen3ForCausalLM": "qwen3",
    "InternLM3ForCausalLM": "internlm3",
}
# Backbones of released InternVL models that this trainer cannot build yet.
UNSUPPORTED = {
    "Qwen3MoeForCausalLM": "Qwen3 MoE (InternVL3.5-30B-A3B / 241B-A28B)",
    "GptOssForCausalLM": "GPT-OSS (InternVL3.5-GPT-OSS-20B-A4B)",
}

# LoRA targets per family (spec §4.5, HEAD). InternLM2 runs as Llama, so its fused names
# (attention.wqkv, attention.wo, feed_forward.w1/w2/w3) become the Llama projections.
LORA_TARGETS = {
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "internlm2": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "phi3": ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
}
LORA_TARGETS["qwen3"] = LORA_TARGETS["internlm3"] = LORA_TARGETS["llama"]

# InternLM2 name -> Llama name, for everything except the fused wqkv.
_INTERNLM2_RENAMES = (
    ("model.tok_embeddings.", "model.embed_tokens."),
    (".attention.wo.", ".self_attn.o_proj."),
    (".feed_forward.w1.", ".mlp.gate_proj."),
    (".feed_forward.w3.", ".mlp.up_proj."),
    (".feed_forward.w2.", ".mlp.down_proj."),
    (".attention_norm.", ".input_layernorm."),
    (".ffn_norm.", ".post_attention_layernorm."),
)
_INTERNLM2_ONLY_KEYS = ("auto_map", "bias", "attn_implementation", "rope_scaling")


def family_of(llm_config: dict) -> str:
    archs = llm_config.get("architectures") or []
    if archs and archs[0] in UNSUPPORTED:
        raise ValueError(
            f"llm_config.architectures {archs!r}: {UNSUPPORTED[archs[0]]} is not supported yet; "
            f"supported: {', '.join(FAMILIES)}"
        )
    if not archs or archs[0] not in FAMILIES:
        raise ValueError(
            f"llm_config.architectures {archs!r}: expected one of {', '.join(FAMILIES)}"
        )
    return FAMILIES[archs[0]]


def native_config(llm_config: dict, attn_implementation: str = "sdpa"):
    """The transformers config the LLM runs with (InternLM2 becomes a LlamaConfig)."""
    from transformers import AutoConfig

    family = family_of(llm_config)
    cfg = dict(llm_config)
    for k in ("transformers_version", "_name_or_path", "torch_dtype", "dtype", "model_type"):
        cfg.pop(k, None)
    if family == "internlm2":
        cfg["attention_bias"] = bool(llm_config.get("bias", False))
        cfg["architectures"] = ["LlamaForCausalLM"]
        theta = llm_config.get("rope_theta", 10000.0)
        scaling = llm_config.get("rope_scaling")
        rope = {"rope_type": "default", "rope_theta": theta}
        if scaling:
            rope = {**scaling, "rope_type": scaling.get("type", "default"), "rope_theta": theta}
            rope.pop("type", None)
        cfg["rope_parameters"] = rope
        for k in _INTERNLM2_ONLY_KEYS:
            cfg.pop(k, None)
        model_type = "llama"
    elif family == "internlm3":
        cfg.pop("auto_map", None)  # remote code; transformers has internlm3 itself
        model_type = family
    else:
        model_type = family
    native = AutoConfig.for_model(model_type, **cfg)
    native.use_cache = False
    native._attn_implementation = attn_implementation
    return native


PACKED_SDPA = "internvl_packed_sdpa"


def packed_sdpa_attention(module, query, key, value, attention_mask, **kwargs):
    """transformers' SDPA, except for packed rows (``cu_seq_lens_q`` given): then causal SDPA
    runs on each sub-sample alone, so a row costs sum(n_i^2) instead of L^2 and needs no
    [L, L] mask (the flash-attn varlen contract, on any device).

    query [B, H, L, D], key/value [B, H_kv, L, D]; ``cu_seq_lens_q`` are the boundaries over
    the flattened B*L tokens (every token in exactly one segment). Returns [B, L, H, D].
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    cu = kwargs.get("cu_seq_lens_q")
    if cu is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    b, h, n, d = query.shape
    hk = key.shape[1]
    q = query.transpose(0, 1).reshape(h, b * n, d)
    k = key.transpose(0, 1).reshape(hk, b * n, d)
    v = value.transpose(0, 1).reshape(hk, b * n, d)
    bounds = cu.tolist() if hasattr(cu, "tolist") else list(cu)
    sizes = [e - s for s, e in zip(bounds[:-1], bounds[1:], strict=True) if e > s]
    drop = kwargs.get("dropout", 0.0) if module.training else 0.0
    # split (not slicing): its backward is one cat, not a zero-filled full tensor per slice.
    outs = [
        torch.nn.functional.scaled_dot_product_attention(
            qi[None], ki[None], vi[None], dropout_p=drop, is_causal=True,
            scale=kwargs.get("scaling"), enable_gqa=hk != h,
        )[0]
        for qi, ki, vi in zip(q.split(sizes, 1), k.split(sizes, 1), v.split(sizes, 1), strict=True)
    ]  # fmt: skip
    out = torch.cat(outs, dim=1).reshape(h, b, n, d).permute(1, 2, 0, 3)
    return out.contiguous(), None


def _register_packed_sdpa() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    if PACKED_SDPA not in AttentionInterface._global_mapping:
        AttentionInterface.register(PACKED_SDPA, packed_sdpa_attention)
        AttentionMaskInterface.register(PACKED_SDPA, sdpa_mask)


def build_llm(llm_config: dict, attn_implementation: str = "sdpa"):
    """The native LLM; "sdpa" runs as :func:`packed_sdpa_attention` (same maths, plus
    per-sample attention for packed rows)."""
    from transformers import AutoModelForCausalLM

    if attn_implementation == "sdpa":
        _register_packed_sdpa()
        attn_implementation = PACKED_SDPA
    cfg = native_config(llm_config, attn_implementation)
    return AutoModelForCausalLM.from_config(cfg, attn_implementation=attn_implementation)


def _qkv_shape(llm_config: dict) -> tuple[int, int, int]:
    heads = llm_config["num_attention_heads"]
    kv = llm_config.get("num_key_value_heads") or heads
    head_dim = llm_config["hidden_size"] // heads
    return heads, kv, head_dim


def internlm2_to_llama(sd: dict, llm_config: dict) -> dict:
    """InternLM2 state dict (keys ``model.*``, ``output.*``) -> LlamaForCausalLM state dict.

    ``wqkv`` rows are grouped per KV head: [q_per_kv query heads, 1 key head, 1 value head],
    each ``head_dim`` rows; Llama keeps all q heads, then all k, then all v, in the same
    head order, so GQA's head -> kv-head mapping (h // q_per_kv) is preserved.
    """
    heads, kv, hd = _qkv_shape(llm_config)
    group = heads // kv
    out = {}
    for key, w in sd.items():
        if ".attention.wqkv." in key:
            prefix = key.split(".attention.wqkv.")[0] + ".self_attn."
            suffix = key.rsplit(".", 1)[1]
            g = w.reshape(kv, group + 2, hd, *w.shape[1:])
            out[f"{prefix}q_proj.{suffix}"] = g[:, :group].reshape(heads * hd, *w.shape[1:])
            out[f"{prefix}k_proj.{suffix}"] = g[:, group].reshape(kv * hd, *w.shape[1:])
            out[f"{prefix}v_proj.{suffix}"] = g[:, group + 1].reshape(kv * hd, *w.shape[1:])
            continue
        new = "lm_head." + key[len("output.") :] if key.startswith("output.") else key
        for a, b in _INTERNLM2_RENAMES:
            new = new.replace(a, b)
        out[new] = w
    return out


def llama_to_internlm2(sd: dict, llm_config: dict) -> dict:
    """Inverse of :func:`internlm2_to_llama` (exact: only reshapes and renames)."""
    heads, kv, hd = _qkv_shape(llm_config)
    group = heads // kv
    out = {}
    for key, w in sd.items():
        if ".self_attn.q_proj." in key:
            prefix = key.split(".self_attn.q_proj.")[0]
            suffix = key.rsplit(".", 1)[1]
            k = sd[f"{prefix}.self_attn.k_proj.{suffix}"]
            v = sd[f"{prefix}.self_attn.v_proj.{suffix}"]
            rest = w.shape[1:]
            fused = torch.cat(
                [
                    w.reshape(kv, group, hd, *rest),
                    k.reshape(kv, 1, hd, *rest),
                    v.reshape(kv, 1, hd, *rest),
                ],
                dim=1,
            )
            out[f"{prefix}.attention.wqkv.{suffix}"] = fused.reshape(-1, *rest)
            continue
        if ".self_attn.k_proj." in key or ".self_attn.v_proj." in key:
            continue
        new = "output." + key[len("lm_head.") :] if key.startswith("lm_head.") else key
        for a, b in _INTERNLM2_RENAMES:
            new = new.replace(b, a)
        out[new] = w
    return out


def to_native_state(sd: dict, llm_config: dict) -> dict:
    if family_of(llm_config) == "internlm2":
        return internlm2_to_llama(sd, llm_config)
    return dict(sd)


def from_native_state(sd: dict, llm_config: dict) -> dict:
    if family_of(llm_config) == "internlm2":
        return llama_to_internlm2(sd, llm_config)
    return dict(sd)
