"""Turn XTuner checkpoints into folders that transformers / our InternVL loader can load.

    .venv-xtuner/bin/python xtuner_cfgs/to_hf.py llava CONFIG CKPT OUT
    .venv/bin/python -m xtuner_cfgs.to_hf internvl BASE CKPT OUT [--lora-alpha A]

`llava` (XTuner environment: it reads the mmengine CONFIG, and CKPT with XTuner's own readers:
a DeepSpeed ZeRO checkpoint dir gives its fp32 master weights)
writes OUT as a transformers-native `LlavaForConditionalGeneration` folder: config.json
(model_type "llava"), model.safetensors, tokenizer with an added `<image>` token, and a
`LlavaProcessor` (CLIP image processor, patch size, image_seq_length). XTuner's own
`pth_to_hf --save-format huggingface` is not used: with XTuner 0.2.0 it fails whenever the ViT
is frozen (the LLaVAModel state dict it saves holds only trained parts), it casts to fp16, and
it leaves `image_seq_length` at 576. Here the frozen LLM and CLIP come unchanged from their HF
folders (the config's paths), the trained parts (projector; LLM / ViT when unfrozen; LoRA pairs,
merged with lora_alpha / r from the config) from CKPT. transformers 4.48 writes the pre-4.52
key names (`language_model.model.*`), which transformers 5 maps on load. The LLM must be a
class native to transformers (Llama, Qwen2, ...): LLaVA with InternLM2 (remote code) has no
native form, and that is refused with the reason.

`internvl` (any env with torch + safetensors; no XTuner needed) mirrors XTuner's
`convert_to_official.py` without building the model: BASE is the InternVL checkpoint in the
original layout (config.json model_type internvl_chat), CKPT the trained `InternVL_V1_5` state
dict (a .pth file, or a DeepSpeed checkpoint dir holding mp_rank_00_model_states.pt). Its keys
carry the `model.` prefix; `mlp1.*` and the unfrozen parts replace the base tensors, LoRA pairs
are merged (W += B @ A * alpha / r, r from A's shape). OUT gets BASE's files with the weights
replaced, in BASE's dtypes, as one model.safetensors.
"""

from __future__ import annotations

import argparse
import json
import pickle
import shutil
import sys
import tempfile
import types
from pathlib import Path

IMAGE_TOKEN = "<image>"
PEFT_PREFIX = "base_model.model."
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


class ConversionError(ValueError):
    """The inputs cannot be converted; the message lists every reason."""


# --- shared: checkpoints and LoRA ---------------------------------------------------------


class _AnyAttr(type):
    def __getattr__(cls, name):
        return cls


class _Unknown(dict, metaclass=_AnyAttr):
    """Stands in for a class the checkpoint names but this env lacks (mmengine's ConfigDict,
    MessageHub state in a DeepSpeed checkpoint): only the tensors are wanted."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


class _LenientUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            return _Unknown


_lenient_pickle = types.SimpleNamespace(
    Unpickler=_LenientUnpickler, load=pickle.load, __name__="pickle"
)


def load_xtuner_state(ckpt: str | Path) -> dict:
    """The model state dict of an XTuner checkpoint: a .pth file or a DeepSpeed checkpoint dir.

    A DeepSpeed dir's `mp_rank_00_model_states.pt` holds the model under `module`; an
    mmengine .pth under `state_dict`; a bare state dict is taken as is."""
    import torch

    path = Path(ckpt)
    if path.is_dir():
        path = path / "mp_rank_00_model_states.pt"
    if not path.is_file():
        raise ConversionError(f"{ckpt}: no checkpoint file (nor mp_rank_00_model_states.pt)")
    obj = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_lenient_pickle)
    for key in ("module", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if any(v.numel() == 0 for v in obj.values()):
        # ZeRO-3 keeps only placeholders in the module state: gather from the partitions.
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        return get_fp32_state_dict_from_zero_checkpoint(str(path.parent.parent), path.parent.name)
    return obj


def _lora_key(key: str) -> tuple[str, str] | None:
    """'a.b.lora_A.default.weight' -> ('a.b', 'A'); None for other keys."""
    for part in ("A", "B"):
        for tag in (f".lora_{part}.default.weight", f".lora_{part}.weight"):
            if key.endswith(tag):
                return key[: -len(tag)], part
    return None


def apply_trained(
    base: dict, trained: dict, *, lora_alpha: float | None, where: str = "base"
) -> tuple[dict, list[str]]:
    """`base` with `trained` laid over it: plain tensors replace, LoRA pairs are merged.

    Both use the base's names (peft's `base_model.model.` and `.base_layer` are dropped). The
    merge is W += B @ A * lora_alpha / r with r = A.shape[0], in fp32, cast back to W's dtype.
    Returns (new state dict, names changed). Raises ConversionError listing every problem.
    """
    out = dict(base)
    problems, changed = [], []
    pairs: dict[str, dict[str, object]] = {}
    for key, value in trained.items():
        key = key.replace(PEFT_PREFIX, "").replace(".base_layer.", ".")
        lora = _lora_key(key)
        if lora:
            pairs.setdefault(lora[0], {})[lora[1]] = value
        elif key not in base:
            problems.append(f"trained tensor {key!r} has no counterpart in the {where}")
        elif tuple(value.shape) != tuple(base[key].shape):
            problems.append(
                f"{key}: trained shape {tuple(value.shape)} != {where} {tuple(base[key].shape)}"
            )
        else:
            out[key] = value.to(base[key].dtype)
            changed.append(key)
    if pairs and lora_alpha is None:
        problems.append("the checkpoint has LoRA pairs but no lora_alpha is known (--lora-alpha)")
    for mod, ab in sorted(pairs.items()):
        target = f"{mod}.weight"
        if set(ab) != {"A", "B"}:
            problems.append(f"{mod}: LoRA has only lora_{''.join(ab)}")
        elif target not in out:
            problems.append(f"LoRA on {mod!r}, but the {where} has no {target!r}")
        elif lora_alpha is not None:
            a, b, w = ab["A"].float(), ab["B"].float(), out[target]
            out[target] = (w.float() + (b @ a) * (lora_alpha / a.shape[0])).to(w.dtype)
            changed.append(target)
    if problems:
        raise ConversionError("cannot apply the trained weights:\n  - " + "\n  - ".join(problems))
    return out, changed


# --- InternVL: the official (original) layout ----------------------------------------------


def read_weights(folder: Path) -> dict:
    """Every tensor of a HF-style folder: model.safetensors, pytorch_model.bin, or sharded."""
    import torch
    from safetensors.torch import load_file

    def load(path: Path) -> dict:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)

    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (folder / index).is_file():
            shards = sorted(set(json.loads((folder / index).read_text())["weight_map"].values()))
            return {k: v for shard in shards for k, v in load(folder / shard).items()}
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return load(folder / name)
    raise ConversionError(f"{folder}: no model.safetensors, pytorch_model.bin or shard index")


def internvl_to_official(
    base: str | Path, ckpt: str | Path | dict, out: str | Path, *, lora_alpha: float | None = None
) -> list[str]:
    """Write `out` = `base` (original InternVL layout) with the XTuner-trained tensors applied.

    `ckpt` is a path (see load_xtuner_state) or the state dict itself. Returns the changed
    weight names. `out` is written beside itself and renamed into place."""
    from safetensors.torch import save_file

    base, out = Path(base), Path(out)
    cfg_path = base / "config.json"
    if not cfg_path.is_file():
        raise ConversionError(f"{base}: no config.json: not an InternVL checkpoint folder")
    model_type = json.loads(cfg_path.read_text()).get("model_type")
    if model_type != "internvl_chat":
        raise ConversionError(
            f"{cfg_path}: model_type {model_type!r}; the official layout has internvl_chat"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    trained = ckpt if isinstance(ckpt, dict) else load_xtuner_state(ckpt)
    stray = sorted(k for k in trained if not k.startswith("model."))
    if stray:
        raise ConversionError(
            "not an XTuner InternVL_V1_5 state dict (keys without 'model.'): " + ", ".join(stray)
        )
    sd, changed = apply_trained(
        read_weights(base),
        {k.removeprefix("model."): v for k, v in trained.items()},
        lora_alpha=lora_alpha,
        where=f"base checkpoint {base}",
    )
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    tmp.chmod(0o755)
    for item in base.iterdir():
        if item.name in WEIGHT_FILES or item.suffix == ".safetensors":
            continue
        copy = shutil.copytree if item.is_dir() else shutil.copy2
        copy(item, tmp / item.name)
    save_file(
        {k: v.detach().contiguous().clone() for k, v in sd.items()},
        str(tmp / "model.safetensors"),
        metadata={"format": "pt"},
    )
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return changed


def internvl_run_to_official(config: str | Path, ckpt: str | Path, out: str | Path) -> dict:
    """A finished XTuner InternVL run -> the official layout: the base checkpoint is the
    config's `model.model_path`, the LoRA alpha its `model.llm_lora.lora_alpha` (if any).
    Runs in the XTuner environment (mmengine reads the config)."""
    from mmengine.config import Config

    model = Config.fromfile(str(config)).model
    base = model.get("model_path")
    if not base:
        raise ConversionError(f"{config}: model.model_path is not set")
    alpha = _lora_alpha(model.get("llm_lora")) or _lora_alpha(model.get("visual_encoder_lora"))
    changed = internvl_to_official(base, ckpt, out, lora_alpha=alpha)
    return {"out": str(out), "base": str(base), "changed": changed}


# --- LLaVA: transformers-native LlavaForConditionalGeneration ------------------------------

PROJECTOR = {"projector.model.0.": "linear_1.", "projector.model.2.": "linear_2."}


def _lora_alpha(lora_cfg) -> float | None:
    return None if not lora_cfg else float(lora_cfg.get("lora_alpha"))


def _chat_template(template) -> str | None:
    """A Jinja chat template equal to XTuner's prompt template (SYSTEM / INSTRUCTION / SUFFIX).

    An image entry in a message becomes `<image>\\n` before its text, as XTuner's data has it."""
    if not template or "{input}" not in template.get("INSTRUCTION", ""):
        return None
    lit = json.dumps

    def wrap(fmt: str, field: str) -> str:
        if field not in fmt:
            return ""
        before, after = fmt.split(field)
        return f"{{{{ {lit(before)} + ns.t + {lit(after)} }}}}"

    text = (
        "{% set ns = namespace(t='') %}"
        "{% if message['content'] is string %}{% set ns.t = message['content'] %}"
        "{% else %}{% for c in message['content'] %}"
        f"{{% if c['type'] == 'image' %}}{{% set ns.t = ns.t + {lit(IMAGE_TOKEN + chr(10))} %}}"
        "{% elif c['type'] == 'text' %}{% set ns.t = ns.t + c['text'] %}{% endif %}"
        "{% endfor %}{% endif %}"
    )
    return (
        "{% for message in messages %}"
        + text
        + "{% if message['role'] == 'system' %}"
        + wrap(template.get("SYSTEM", ""), "{system}")
        + "{% elif message['role'] == 'user' %}"
        + wrap(template["INSTRUCTION"], "{input}")
        + f"{{% else %}}{{{{ ns.t + {lit(template.get('SUFFIX', ''))} }}}}{{% endif %}}"
        + "{% endfor %}"
    )


def llava_to_hf(config: str | Path, ckpt: str | Path, out: str | Path) -> dict:
    """Write `out` as a native LlavaForConditionalGeneration folder (XTuner environment).

    Returns a summary: the changed tensor names and the image settings."""
    import torch
    from mmengine.config import Config
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoTokenizer,
        CLIPImageProcessor,
        CLIPVisionModel,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING
    from xtuner.model.utils import guess_load_checkpoint
    from xtuner.utils.zero_to_any_dtype import get_state_dict_from_zero_checkpoint

    cfg = Config.fromfile(str(config))
    m = cfg.model
    llm_path = m.llm.pretrained_model_name_or_path
    vit_path = m.visual_encoder.pretrained_model_name_or_path
    problems = []
    llm_type = AutoConfig.from_pretrained(llm_path, trust_remote_code=True).model_type
    if llm_type not in CONFIG_MAPPING:
        problems.append(
            f"{llm_path}: LLM model_type {llm_type!r} is not native to transformers, so "
            "there is no native LLaVA for it"
        )
    if m.get("pretrained_pth"):
        problems.append("model.pretrained_pth is set: a staged run is not supported here")
    ckpt = Path(ckpt)
    if ckpt.is_dir():
        # XTuner's reader of ZeRO checkpoints (the fp32 master weights), asked for fp32:
        # guess_load_checkpoint would hand back fp16 copies.
        trained = get_state_dict_from_zero_checkpoint(
            str(ckpt.parent), ckpt.name, dtype=torch.float32
        )
    else:
        trained = guess_load_checkpoint(str(ckpt))
    parts = {"llm.": {}, "visual_encoder.": {}, "projector.": {}}
    for key, value in trained.items():
        prefix = next((p for p in parts if key.startswith(p)), None)
        if prefix is None:
            problems.append(f"unexpected checkpoint key {key!r}")
        else:
            parts[prefix][key] = value
    proj = {}
    for key, value in parts["projector."].items():
        new = next((key.replace(a, b) for a, b in PROJECTOR.items() if key.startswith(a)), None)
        if new is None:
            problems.append(f"{key}: only the 2-layer MLP projector (model.0 / model.2) maps")
        proj[f"multi_modal_projector.{new}"] = value
    if len(proj) != 4:
        problems.append(f"expected 4 projector tensors in {ckpt}, found {sorted(proj)}")
    if llm_type not in CONFIG_MAPPING:
        raise ConversionError("cannot export to native LLaVA:\n  - " + "\n  - ".join(problems))

    llm = AutoModelForCausalLM.from_pretrained(llm_path, torch_dtype="auto")
    vit = CLIPVisionModel.from_pretrained(vit_path, torch_dtype="auto")
    merged = {}
    for name, part, prefix, lora, where in (
        ("llm", llm, "llm.", m.get("llm_lora"), f"LLM {llm_path}"),
        ("vit", vit, "visual_encoder.", m.get("visual_encoder_lora"), f"ViT {vit_path}"),
    ):
        try:
            merged[name] = apply_trained(
                part.state_dict(),
                {k.removeprefix(prefix): v for k, v in parts[prefix].items()},
                lora_alpha=_lora_alpha(lora),
                where=where,
            )
        except ConversionError as e:
            problems += str(e).split("\n  - ")[1:]
    if problems:
        raise ConversionError("cannot export to native LLaVA:\n  - " + "\n  - ".join(problems))
    (llm_sd, llm_changed), (vit_sd, vit_changed) = merged["llm"], merged["vit"]

    # LLaVA's forward takes no token_type_ids (a generic fast tokenizer would return them).
    tokenizer = AutoTokenizer.from_pretrained(
        llm_path, model_input_names=["input_ids", "attention_mask"]
    )
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_tokens([IMAGE_TOKEN], special_tokens=True)
    llm.load_state_dict(llm_sd)
    old = llm.config.vocab_size
    if len(tokenizer) > old:
        # New rows (the <image> id; LLaVA replaces its embedding) are the mean of the old ones.
        llm.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        with torch.no_grad():
            for emb in {llm.get_input_embeddings().weight, llm.get_output_embeddings().weight}:
                emb[old:] = emb[:old].mean(0)
    llm_sd = llm.state_dict()
    vcfg = vit.config
    select_layer = int(m.get("visual_select_layer", -2))
    seq_len = (vcfg.image_size // vcfg.patch_size) ** 2
    llava_cfg = LlavaConfig(
        text_config=llm.config,
        vision_config=vcfg,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        projector_hidden_act="gelu",  # XTuner's ProjectorConfig default
        vision_feature_select_strategy="default",  # XTuner drops the CLS feature: [:, 1:]
        vision_feature_layer=select_layer,
        image_seq_length=seq_len,
        torch_dtype=llm.dtype,
    )
    model = LlavaForConditionalGeneration(llava_cfg).to(llm.dtype)
    full = {
        **{f"language_model.{k}": v for k, v in llm_sd.items()},
        **{f"vision_tower.{k}": v for k, v in vit_sd.items()},
        **{k: v.to(llm.dtype) for k, v in proj.items()},
    }
    missing, unexpected = model.load_state_dict(full, strict=False)
    tied = {"language_model.lm_head.weight"} if llm.config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise ConversionError(f"LLaVA state dict mismatch: missing {missing}, extra {unexpected}")
    model.config.use_cache = True

    image_processor = CLIPImageProcessor.from_pretrained(vit_path)
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=vcfg.patch_size,
        vision_feature_select_strategy="default",
        image_token=IMAGE_TOKEN,
        num_additional_image_tokens=1,  # the CLS feature the "default" strategy drops
        chat_template=_chat_template(cfg.get("prompt_template")),
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    tmp.chmod(0o755)
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)
        shutil.copy2(config, tmp / "xtuner_config.py")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    summary = {
        "out": str(out),
        "llm": llm_path,
        "vision": vit_path,
        "trained": sorted(proj) + sorted(llm_changed) + sorted(vit_changed),
        "image_token_index": llava_cfg.image_token_index,
        "image_seq_length": seq_len,
        "vision_feature_layer": select_layer,
    }
    (tmp / "xtuner_export.json").write_text(json.dumps(summary, indent=1) + "\n")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="kind", required=True)
    lv = sub.add_parser("llava", help="XTuner LLaVA -> native LlavaForConditionalGeneration")
    lv.add_argument("config", type=Path, help="the run's xtuner_config.py")
    lv.add_argument("ckpt", type=Path, help="iter_N.pth (file or DeepSpeed dir)")
    lv.add_argument("out", type=Path)
    iv = sub.add_parser("internvl", help="XTuner InternVL_V1_5 -> official InternVL layout")
    iv.add_argument("base", type=Path, help="the base checkpoint (original layout)")
    iv.add_argument("ckpt", type=Path, help="iter_N.pth (file or DeepSpeed dir)")
    iv.add_argument("out", type=Path)
    iv.add_argument("--lora-alpha", type=float, default=None, help="LoRA alpha (r from shapes)")
    rv = sub.add_parser(
        "internvl-run", help="the same, base and LoRA alpha read from the run's config"
    )
    rv.add_argument("config", type=Path, help="the run's xtuner_config.py")
    rv.add_argument("ckpt", type=Path, help="iter_N.pth (file or DeepSpeed dir)")
    rv.add_argument("out", type=Path)
    a = p.parse_args(argv)
    try:
        if a.kind == "llava":
            result = llava_to_hf(a.config, a.ckpt, a.out)
        elif a.kind == "internvl-run":
            result = internvl_run_to_official(a.config, a.ckpt, a.out)
        else:
            changed = internvl_to_official(a.base, a.ckpt, a.out, lora_alpha=a.lora_alpha)
            result = {"out": str(a.out), "changed": changed}
    except ConversionError as e:
        print(f"ConversionError: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
