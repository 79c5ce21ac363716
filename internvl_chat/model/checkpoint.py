"""Load and save InternVL checkpoints in the three on-disk layouts.

- ``original``: ``config.json`` with model_type ``internvl_chat`` (vision_config + llm_config),
  weights ``vision_model.*``, ``mlp1.*``, ``language_model.*`` (the LLM in its own naming,
  e.g. InternLM2's fused ``wqkv``), tokenizer files beside them (OpenGVLab/InternVL2-*).
- ``components``: ``vision/`` (an InternViT checkpoint), ``llm/`` (an LLM checkpoint with its
  tokenizer) and an optional ``mlp1.pth`` projector state dict (seed 000: InternViT-6B +
  internlm2-chat-20b, ``model_name_or_path`` null).
- ``hf``: transformers-native InternVL (model_type ``internvl``): ``vision_tower.*``,
  ``multi_modal_projector.*``, ``language_model.model.*``, ``language_model.lm_head.*``.

In memory the model always uses the original names for the ViT and ``mlp1`` and the
transformers names for the LLM; LoRA-wrapped parts carry peft's names
(``base_model.model.``, ``base_layer``, ``lora_A.default``) exactly as the official code saves
them. A LoRA part that the layout can only hold in a converted form (the fused InternLM2
``wqkv``; the split q/k/v of the native ViT) is merged into its base weights when saved.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from internvl_chat.model.internvl import InternVLChatConfig, InternVLChatModel
from internvl_chat.model.llm import family_of, from_native_state, native_config, to_native_state
from internvl_chat.model.vit import InternVisionConfig

LAYOUTS = ("original", "components", "hf")
LORA_SCALING = 2.0  # lora_alpha = 2 r (spec §4.5)
TOKENIZER_FILES = (
    "tokenizer.model",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "generation_config.json",
)
_PEFT_PREFIX = "base_model.model."


# ---------------------------------------------------------------- files


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: missing (expected a checkpoint config)") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: invalid JSON: {e.msg}") from None


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint folder: safetensors (single or sharded) or pytorch .bin."""
    from safetensors.torch import load_file

    folder = Path(folder)
    for index_name, loader in (
        ("model.safetensors.index.json", load_file),
        ("pytorch_model.bin.index.json", _load_bin),
    ):
        index = folder / index_name
        if index.exists():
            shards = sorted(set(_read_json(index)["weight_map"].values()))
            sd: dict[str, torch.Tensor] = {}
            for shard in shards:
                sd.update(loader(str(folder / shard)))
            return sd
    if (folder / "model.safetensors").exists():
        return load_file(str(folder / "model.safetensors"))
    if (folder / "pytorch_model.bin").exists():
        return _load_bin(str(folder / "pytorch_model.bin"))
    raise FileNotFoundError(
        f"{folder}: no model.safetensors, pytorch_model.bin or sharded index found"
    )


def _load_bin(path: str) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


def _write_weights(folder: Path, sd: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    # safetensors refuses shared storage (tied embeddings); contiguous copies are fine.
    save_file(
        {k: v.detach().cpu().contiguous().clone() for k, v in sd.items()},
        str(folder / "model.safetensors"),
        metadata={"format": "pt"},
    )


def _write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def detect_layout(path: str | os.PathLike) -> str:
    p = Path(path)
    if (p / "config.json").exists():
        mt = _read_json(p / "config.json").get("model_type")
        if mt == "internvl_chat":
            return "original"
        if mt == "internvl":
            return "hf"
        raise ValueError(
            f"{p / 'config.json'}: model_type {mt!r} is neither internvl_chat (original layout) "
            "nor internvl (transformers-native); for separate vision/LLM checkpoints set "
            "vision_path and llm_path instead of model_name_or_path"
        )
    if (p / "vision").is_dir() and (p / "llm").is_dir():
        return "components"
    raise FileNotFoundError(f"{p}: no config.json and no vision/ + llm/ folders: not a checkpoint")


# ---------------------------------------------------------------- LoRA in state dicts


def merge_lora_state(sd: dict[str, torch.Tensor], scaling: float = LORA_SCALING) -> dict:
    """Fold every peft LoRA pair into its base weight and drop peft's prefixes.

    ``W = W_base + scaling * B @ A`` (dropout is inactive at inference).
    """
    out: dict[str, torch.Tensor] = {}
    for key, w in sd.items():
        if ".lora_A." in key or ".lora_B." in key or ".lora_embedding_" in key:
            continue
        if ".base_layer." in key:
            mod, suffix = key.split(".base_layer.")
            if suffix == "weight" and f"{mod}.lora_A.default.weight" in sd:
                a = sd[f"{mod}.lora_A.default.weight"].float()
                b = sd[f"{mod}.lora_B.default.weight"].float()
                w = (w.float() + scaling * (b @ a)).to(w.dtype)
            key = f"{mod}.{suffix}"
        out[key.replace(_PEFT_PREFIX, "")] = w
    return out


def _has_lora(sd: dict, prefix: str) -> bool:
    return any(k.startswith(prefix) and ".lora_A." in k for k in sd)


def _split(sd: dict, prefix: str) -> dict:
    return {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}


# ---------------------------------------------------------------- native (hf) vision mapping

_HF_VIT_RENAMES = (
    ("embeddings.class_embedding", "embeddings.cls_token"),
    ("embeddings.patch_embedding.", "embeddings.patch_embeddings.projection."),
    ("embeddings.position_embedding", "embeddings.position_embeddings"),
    ("encoder.layers.", "encoder.layer."),
    (".attn.proj.", ".attention.projection_layer."),
    (".attn.q_norm.", ".attention.q_norm."),
    (".attn.k_norm.", ".attention.k_norm."),
    (".norm1.", ".layernorm_before."),
    (".norm2.", ".layernorm_after."),
    (".ls1", ".lambda_1"),
    (".ls2", ".lambda_2"),
)
_HF_MLP = {"0": "layer_norm", "1": "linear_1", "3": "linear_2"}


def _vit_to_hf(sd: dict) -> dict:
    out = {}
    for key, w in sd.items():
        if ".attn.qkv." in key:
            base, suffix = key.split(".attn.qkv.")
            base = _rename(base + ".", _HF_VIT_RENAMES).rstrip(".")
            for name, part in zip(("q_proj", "k_proj", "v_proj"), w.chunk(3, dim=0), strict=True):
                out[f"{base}.attention.{name}.{suffix}"] = part
            continue
        out[_rename(key, _HF_VIT_RENAMES)] = w
    return out


def _vit_from_hf(sd: dict) -> dict:
    out = {}
    for key, w in sd.items():
        if ".attention.q_proj." in key:
            base, suffix = key.split(".attention.q_proj.")
            parts = [sd[f"{base}.attention.{n}_proj.{suffix}"] for n in "qkv"]
            out[_rename(f"{base}.attn.qkv.{suffix}", _HF_VIT_RENAMES, reverse=True)] = torch.cat(
                parts, 0
            )
            continue
        if ".attention.k_proj." in key or ".attention.v_proj." in key:
            continue
        out[_rename(key, _HF_VIT_RENAMES, reverse=True)] = w
    return out


def _rename(key: str, table, reverse: bool = False) -> str:
    for a, b in table:
        key = key.replace(b, a) if reverse else key.replace(a, b)
    return key


def _hf_config(cfg: InternVLChatConfig, img_context_token_id: int | None) -> dict:
    from transformers import InternVLConfig

    if cfg.ps_version != "v2":
        raise ValueError("the transformers-native layout only supports ps_version v2")
    v = cfg.vision_config
    text = native_config(cfg.llm_config).to_dict()
    for k in ("_attn_implementation", "_attn_implementation_internal"):
        text.pop(k, None)
    hf = InternVLConfig(
        vision_config={
            "hidden_size": v.hidden_size,
            "num_hidden_layers": v.num_hidden_layers,
            "num_attention_heads": v.num_attention_heads,
            "intermediate_size": v.intermediate_size,
            "attention_bias": v.qkv_bias,
            "use_qk_norm": v.qk_normalization,
            "norm_type": v.norm_type,
            "layer_norm_eps": v.layer_norm_eps,
            "image_size": [cfg.image_size, cfg.image_size],
            "patch_size": [v.patch_size, v.patch_size],
            "num_channels": v.num_channels,
            "layer_scale_init_value": v.initializer_factor,
            "use_mean_pooling": True,  # no final norm, as InternViT
            "hidden_act": v.hidden_act,
        },
        text_config=text,
        image_token_id=img_context_token_id,
        image_seq_length=cfg.num_image_token,
        downsample_ratio=cfg.downsample_ratio,
        vision_feature_layer=cfg.select_layer,
        vision_feature_select_strategy="default",
        tie_word_embeddings=bool(text.get("tie_word_embeddings", False)),
    ).to_dict()
    hf["architectures"] = ["InternVLForConditionalGeneration"]
    # Our settings that native InternVL keeps in its processor; ignored by transformers.
    hf["internvl_chat"] = {
        k: getattr(cfg, k)
        for k in (
            "template",
            "dynamic_image_size",
            "use_thumbnail",
            "min_dynamic_patch",
            "max_dynamic_patch",
            "pad2square",
            "use_llm_lora",
        )
    }
    return hf


def _config_from_hf(d: dict) -> InternVLChatConfig:
    v = d["vision_config"]
    if not v.get("use_mean_pooling", True):
        raise ValueError(
            "config.json vision_config.use_mean_pooling false (final norm) is unsupported"
        )
    size = v.get("image_size", [448, 448])
    patch = v.get("patch_size", [14, 14])
    size = size[0] if isinstance(size, list) else size
    patch = patch[0] if isinstance(patch, list) else patch
    vision = InternVisionConfig(
        hidden_size=v["hidden_size"],
        num_hidden_layers=v["num_hidden_layers"],
        num_attention_heads=v["num_attention_heads"],
        intermediate_size=v["intermediate_size"],
        qkv_bias=v.get("attention_bias", False),
        qk_normalization=v.get("use_qk_norm", False),
        norm_type=v.get("norm_type", "layer_norm"),
        layer_norm_eps=v.get("layer_norm_eps", 1e-6),
        image_size=size,
        patch_size=patch,
        num_channels=v.get("num_channels", 3),
        initializer_factor=v.get("layer_scale_init_value", 0.1),
        hidden_act=v.get("hidden_act", "gelu"),
    )
    text = dict(d["text_config"])
    text.setdefault("architectures", [_ARCH_OF_TYPE.get(text.get("model_type"), "")])
    if not text["architectures"] or text["architectures"][0] not in _ARCH_OF_TYPE.values():
        text["architectures"] = [_ARCH_OF_TYPE.get(text.get("model_type"), "?")]
    extra = d.get("internvl_chat", {})
    return InternVLChatConfig(
        vision_config=vision,
        llm_config=text,
        select_layer=d.get("vision_feature_layer", -1),
        force_image_size=size,
        downsample_ratio=d.get("downsample_ratio", 0.5),
        ps_version="v2",
        **{k: v for k, v in extra.items() if k != "use_llm_lora"},
        use_llm_lora=extra.get("use_llm_lora", 0),
    )


_ARCH_OF_TYPE = {
    "qwen2": "Qwen2ForCausalLM",
    "llama": "LlamaForCausalLM",
    "phi3": "Phi3ForCausalLM",
}


# ---------------------------------------------------------------- load


def default_attn_implementation() -> str:
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        return "sdpa"
    return "flash_attention_2" if torch.cuda.is_available() else "sdpa"


def load_model(
    model_name_or_path: str | os.PathLike | None = None,
    *,
    vision_path: str | os.PathLike | None = None,
    llm_path: str | os.PathLike | None = None,
    mlp_path: str | os.PathLike | None = None,
    overrides: dict | None = None,
    attn_implementation: str | None = None,
    dtype: torch.dtype = torch.float32,
) -> InternVLChatModel:
    """Build the model from a checkpoint of any layout, with parameters in ``dtype``.

    ``overrides`` sets chat-config fields before the modules are built (the trainer passes
    ``template``, ``select_layer``, ``ps_version``, ``force_image_size``, ...). The result
    carries ``.layout`` and ``.tokenizer_dir`` (where its tokenizer files live).
    """
    attn = attn_implementation or default_attn_implementation()
    if model_name_or_path is not None:
        root = Path(model_name_or_path)
        layout = detect_layout(root)
        if layout == "components":
            vision_path, llm_path = root / "vision", root / "llm"
            mlp_path = root / "mlp1.pth" if (root / "mlp1.pth").exists() else None
    elif vision_path is not None and llm_path is not None:
        layout = "components"
    else:
        raise ValueError(
            "model_name_or_path is not set, and vision_path + llm_path are not both set: "
            "nothing to load"
        )

    if layout == "original":
        cfg = InternVLChatConfig.from_dict(_read_json(root / "config.json"))
        sd = read_weights(root)
        tokenizer_dir = root
    elif layout == "hf":
        cfg = _config_from_hf(_read_json(root / "config.json"))
        raw = read_weights(root)
        sd = {f"vision_model.{k}": v for k, v in _vit_from_hf(_split(raw, "vision_tower.")).items()}
        for k, v in _split(raw, "multi_modal_projector.").items():
            idx = {n: i for i, n in _HF_MLP.items()}[k.split(".")[0]]
            sd[f"mlp1.{idx}.{k.split('.', 1)[1]}"] = v
        sd.update({k: v for k, v in raw.items() if k.startswith("language_model.")})
        tokenizer_dir = root
    else:
        vision_cfg = InternVisionConfig.from_dict(_read_json(Path(vision_path) / "config.json"))
        llm_config = _read_json(Path(llm_path) / "config.json")
        cfg = InternVLChatConfig(vision_config=vision_cfg, llm_config=llm_config, ps_version="v2")
        sd = {f"vision_model.{k}": v for k, v in read_weights(Path(vision_path)).items()}
        sd.update({f"language_model.{k}": v for k, v in read_weights(Path(llm_path)).items()})
        if mlp_path is not None:
            mlp = _load_bin(str(mlp_path))
            sd.update({f"mlp1.{k}": v for k, v in mlp.items()})
        tokenizer_dir = Path(llm_path)

    for k, v in (overrides or {}).items():
        if not hasattr(cfg, k):
            raise ValueError(f"unknown model setting {k!r}")
        setattr(cfg, k, v)

    # The LLM part of a checkpoint is in its family's naming; the model runs native names.
    llm_sd = _split(sd, "language_model.")
    if family_of(cfg.llm_config) == "internlm2" and _has_lora(llm_sd, ""):
        raise ValueError(
            "InternLM2 checkpoint with unmerged LoRA on the fused wqkv is not supported: "
            "merge it with the official tools first"
        )
    sd = {k: v for k, v in sd.items() if not k.startswith("language_model.")}
    sd.update(
        {f"language_model.{k}": v for k, v in to_native_state(llm_sd, cfg.llm_config).items()}
    )

    target_size = cfg.image_size
    vit_size = cfg.vision_config.image_size
    cfg.force_image_size = None  # build at the checkpoint's size; resized below
    # Built directly in the target dtype: a 20B model never exists in fp32 on the host.
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        model = InternVLChatModel(cfg, attn_implementation=attn)
    finally:
        torch.set_default_dtype(previous)
    if cfg.use_backbone_lora:
        from internvl_chat.model.trainable import wrap_backbone_lora

        wrap_backbone_lora(model, cfg.use_backbone_lora)
    if cfg.use_llm_lora:
        from internvl_chat.model.trainable import wrap_llm_lora

        wrap_llm_lora(model, cfg.use_llm_lora)
    _load_state(model, sd, mlp_optional=layout == "components" and mlp_path is None)
    if target_size != vit_size:
        model.vision_model.resize_pos_embeddings(target_size)
    cfg.force_image_size = target_size
    model.layout = layout
    model.tokenizer_dir = tokenizer_dir
    if layout == "hf":
        model.img_context_token_id = _read_json(root / "config.json").get("image_token_id")
    return model


def _load_state(model: InternVLChatModel, sd: dict, mlp_optional: bool) -> None:
    own = model.state_dict()
    lm = model.language_model
    tied = bool(getattr(lm.config, "tie_word_embeddings", False))
    missing = [k for k in own if k not in sd]
    if tied:
        missing = [k for k in missing if not k.endswith("lm_head.weight")]
    if mlp_optional:
        missing = [k for k in missing if not k.startswith("mlp1.")]
    if not any(".lora_A." in k for k in sd):
        # A checkpoint without adapters leaves freshly wrapped LoRA at its (zero-delta) init.
        missing = [k for k in missing if ".lora_" not in k]
    unexpected = [k for k in sd if k not in own]
    bad_shape = [
        f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sd
        if k in own and sd[k].shape != own[k].shape
    ]
    if missing or unexpected or bad_shape:
        lines = [f"missing: {k}" for k in missing[:20]] + [
            f"unexpected: {k}" for k in unexpected[:20]
        ]
        lines += bad_shape[:20]
        raise ValueError(
            f"checkpoint does not match the model ({len(missing)} missing, {len(unexpected)} "
            f"unexpected, {len(bad_shape)} wrong shape):\n  " + "\n  ".join(lines)
        )
    model.load_state_dict(sd, strict=False)
    if tied:
        lm.tie_weights()


def attach_tokenizer(model: InternVLChatModel, tokenizer) -> None:
    """Set ``img_context_token_id`` and grow the embeddings if the tokenizer added tokens (§3)."""
    from internvl_chat.tokenizer import IMG_CONTEXT

    lm = model.language_model
    old = lm.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > old:
        lm.resize_token_embeddings(len(tokenizer))
        out = lm.get_output_embeddings().weight
        with torch.no_grad():
            out[old:] = out[:old].mean(0, keepdim=True)
        model.config.llm_config["vocab_size"] = len(tokenizer)
        model.tokens_added = len(tokenizer) - old
    model.img_context_token_id = tokenizer.convert_tokens_to_ids(IMG_CONTEXT)


# ---------------------------------------------------------------- save


def save_model(
    model: InternVLChatModel,
    out_dir: str | os.PathLike,
    layout: str | None = None,
    state_dict: dict | None = None,
    tokenizer=None,
) -> Path:
    """Write ``model`` (or ``state_dict`` in the model's own names) to ``out_dir`` in ``layout``.

    ``state_dict`` lets a ZeRO-3 trainer pass gathered full weights. Tokenizer files are
    copied from the source checkpoint (or saved from ``tokenizer`` if it gained tokens).
    """
    layout = layout or getattr(model, "layout", "original")
    if layout not in LAYOUTS:
        raise ValueError(f"layout {layout!r}: expected one of {', '.join(LAYOUTS)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sd = state_dict if state_dict is not None else model.state_dict()
    sd = {k: v for k, v in sd.items() if "rotary_emb" not in k}
    cfg = InternVLChatConfig.from_dict(model.config.to_dict())
    family = family_of(cfg.llm_config)

    vit = _split(sd, "vision_model.")
    mlp = _split(sd, "mlp1.")
    llm = _split(sd, "language_model.")
    if getattr(model.language_model.config, "tie_word_embeddings", False):
        llm.pop("lm_head.weight", None)
    vit_lora_merged = layout == "hf" and _has_lora(vit, "")
    llm_lora_merged = _has_lora(llm, "") and (family == "internlm2" or layout == "components")
    if vit_lora_merged or (layout == "components" and _has_lora(vit, "")):
        vit = merge_lora_state(vit)
        cfg.use_backbone_lora = 0
    if llm_lora_merged:
        llm = merge_lora_state(llm)
        cfg.use_llm_lora = 0
    if not _has_lora(llm, ""):
        llm = from_native_state(llm, cfg.llm_config) if layout != "hf" else llm

    if layout == "original":
        weights = {f"vision_model.{k}": v for k, v in vit.items()}
        weights.update({f"mlp1.{k}": v for k, v in mlp.items()})
        weights.update({f"language_model.{k}": v for k, v in llm.items()})
        _write_weights(out, weights)
        _write_json(out / "config.json", cfg.to_dict())
        _save_tokenizer(model, out, tokenizer)
    elif layout == "hf":
        weights = {f"vision_tower.{k}": v for k, v in _vit_to_hf(vit).items()}
        for k, v in mlp.items():
            idx, rest = k.split(".", 1)
            weights[f"multi_modal_projector.{_HF_MLP[idx]}.{rest}"] = v
        weights.update({f"language_model.{k}": v for k, v in llm.items()})
        _write_weights(out, weights)
        _write_json(out / "config.json", _hf_config(cfg, model.img_context_token_id))
        _save_tokenizer(model, out, tokenizer)
    else:
        (out / "vision").mkdir(exist_ok=True)
        (out / "llm").mkdir(exist_ok=True)
        _write_weights(out / "vision", vit)
        vcfg = cfg.vision_config
        _write_json(out / "vision" / "config.json", vcfg.to_dict())
        _write_weights(out / "llm", llm)
        _write_json(out / "llm" / "config.json", cfg.llm_config)
        torch.save({k: v.detach().cpu().clone() for k, v in mlp.items()}, out / "mlp1.pth")
        _save_tokenizer(model, out / "llm", tokenizer)
    return out


def _save_tokenizer(model: InternVLChatModel, out: Path, tokenizer) -> None:
    src = getattr(model, "tokenizer_dir", None)
    if tokenizer is not None and (src is None or getattr(model, "tokens_added", 0)):
        tokenizer.save_pretrained(str(out))
        return
    if src is None:
        return
    for name in TOKENIZER_FILES:
        f = Path(src) / name
        if f.exists() and f.resolve() != (out / name).resolve():
            shutil.copy(f, out / name)
