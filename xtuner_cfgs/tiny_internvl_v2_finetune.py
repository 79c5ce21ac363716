# Tiny variant of the seed-003 InternVL2 finetune. It loads and renders (paths set by the
# launcher), but does not train on CPU: XTuner's InternVL_V1_5 loads the checkpoint with remote
# code and forces flash_attention_2 on the LLM (xtuner/model/internvl.py), which needs CUDA.
from mmengine.config import read_base

with read_base():
    from .internvl_v2_internlm2_2b_finetune import *  # noqa: F403

from xtuner.engine.hooks import ThroughputHook

tiny = "./tiny/internvl"
model.model_path = tiny
train_dataloader.dataset.model_path = tiny
custom_hooks[0].tokenizer.pretrained_model_name_or_path = tiny
train_dataloader.batch_size = 1
train_dataloader.num_workers = 0
train_dataloader.dataset.max_length = 512
optim_wrapper.accumulative_counts = 1
train_dataloader.sampler.per_device_batch_size = 1
custom_hooks[1] = dict(
    type=ThroughputHook, hidden_size=64, num_layers=2, vocab_size=512, mlp_ratio=2.0
)
default_hooks.logger.interval = 1
env_cfg.dist_cfg.backend = "gloo"
randomness.seed = 0
