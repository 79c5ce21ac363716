"""XTuner LLaVA -> transformers-native LlavaForConditionalGeneration (to_hf.py `llava`)."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from xtuner_cfgs.export.common import (
    IMAGE_TOKEN,
    ConversionError,
    _lora_alpha,
    apply_trained,
)

PROJECTOR = {"projector.model.0.": "linear_1.", "projector.model.2.": "linear_2."}


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
