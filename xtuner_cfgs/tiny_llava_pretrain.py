# Tiny variant of the seed-001 LLaVA pretrain for CPU tests: the models and data come from
# make_tiny_llava.py (random Llama LLM + random CLIP, 28 px images). Differences from the base:
# full-precision LLM without 4-bit quantisation (bitsandbytes is CUDA-only), gloo, log every
# iteration, ThroughputHook dimensions of the tiny Llama. Paths are placeholders: the launcher
# sets the real ones in the rendered file.
from mmengine.config import read_base

with read_base():
    from .llava_internlm2_chat_20b_clip_vit_large_p14_336_e1_gpu8_pretrain import *  # noqa: F403

import torch
from transformers import AutoModelForCausalLM
from xtuner.engine.hooks import ThroughputHook

tiny_llm = "./tiny/llm"
tiny_clip = "./tiny/clip"
model.llm = dict(
    type=AutoModelForCausalLM.from_pretrained,
    pretrained_model_name_or_path=tiny_llm,
    torch_dtype=torch.float32,
)
model.visual_encoder.pretrained_model_name_or_path = tiny_clip
train_dataloader.batch_size = 2
train_dataloader.dataset.data_path = "./tiny/data/blip_laion_cc_sbu_558k.json"
train_dataloader.dataset.image_folder = "./tiny/data/images"
# Nested copies are set one by one: lazy-import configs copy `tokenizer` into each use.
for tok in (train_dataloader.dataset.tokenizer, custom_hooks[0].tokenizer):
    tok.pretrained_model_name_or_path = tiny_llm
    tok.trust_remote_code = False
train_dataloader.dataset.image_processor.pretrained_model_name_or_path = tiny_clip
train_dataloader.dataset.max_length = int(128 - (28 / 14) ** 2)
custom_hooks[1] = dict(
    type=ThroughputHook, hidden_size=64, num_layers=2, vocab_size=387, mlp_ratio=2.0
)
default_hooks.logger.interval = 1
default_hooks.checkpoint.interval = 4
env_cfg.dist_cfg.backend = "gloo"
randomness.seed = 0
