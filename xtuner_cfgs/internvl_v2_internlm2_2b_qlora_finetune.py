# Seed 003 as shipped (spec 12.1 LoRA variant): frozen 4-bit LLM with LoRA r=128, frozen ViT.
# Needs bitsandbytes and CUDA on the nodes (pip install bitsandbytes==0.45.0 in the XTuner env).
from mmengine.config import read_base

with read_base():
    from .internvl_v2_internlm2_2b_finetune import *  # noqa: F403

from peft import LoraConfig

model.freeze_llm = True
model.freeze_visual_encoder = True
model.quantization_llm = True
model.quantization_vit = False
model.llm_lora = dict(
    type=LoraConfig,
    r=128,
    lora_alpha=256,
    lora_dropout=0.05,
    target_modules=None,
    task_type="CAUSAL_LM",
)
