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
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script (the XTuner env): make `xtuner_cfgs` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from xtuner_cfgs.export.common import ConversionError, apply_trained, load_xtuner_state
from xtuner_cfgs.export.internvl import internvl_run_to_official, internvl_to_official
from xtuner_cfgs.export.llava import llava_to_hf

__all__ = [
    "ConversionError",
    "apply_trained",
    "internvl_run_to_official",
    "internvl_to_official",
    "llava_to_hf",
    "load_xtuner_state",
    "main",
]


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
