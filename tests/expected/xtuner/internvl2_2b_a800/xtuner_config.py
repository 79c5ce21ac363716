# Rendered by launcher.engines.xtuner from xtuner_base/internvl_v2_internlm2_2b_finetune.py; re-render, do not edit.
# Values are set on their nested paths: the base's copies of its top-level variables
# would otherwise keep the base's values.
from mmengine.config import read_base

with read_base():
    from .xtuner_base.internvl_v2_internlm2_2b_finetune import *  # noqa: F403

train_dataloader.batch_size = 4
train_dataloader.num_workers = 4
optim_wrapper.accumulative_counts = 4
optim_wrapper.optimizer.lr = 4e-05
train_dataloader.dataset.max_length = 4096
default_hooks.checkpoint.interval = 800
default_hooks.checkpoint.max_keep_ckpts = 1
default_hooks.logger.interval = 4
env_cfg.dist_cfg.backend = 'nccl'
env_cfg.dist_cfg.timeout = 600
randomness.seed = 42
model.freeze_llm = False
model.freeze_visual_encoder = True
model.model_path = '/mnt/models/InternVL2-2B'
train_dataloader.dataset.model_path = '/mnt/models/InternVL2-2B'
custom_hooks[0].tokenizer.pretrained_model_name_or_path = '/mnt/models/InternVL2-2B'
train_dataloader.dataset.data_paths = ['/mnt/data/llava_data/LLaVA-Pretrain/blip_laion_cc_sbu_558k.json']
train_dataloader.dataset.image_folders = ['/mnt/data/llava_data/LLaVA-Pretrain/images']
train_dataloader.dataset.repeat_times = [1]
train_dataloader.sampler.per_device_batch_size = 16
train_cfg = dict(type=train_cfg.type, max_iters=120)
param_scheduler[0].by_epoch = False
param_scheduler[0].convert_to_iter_based = False
param_scheduler[0].begin = 0
param_scheduler[0].end = 4
param_scheduler[1].by_epoch = False
param_scheduler[1].convert_to_iter_based = False
param_scheduler[1].begin = 4
param_scheduler[1].end = 120
custom_hooks[1].hidden_size = 2048
custom_hooks[1].num_layers = 24
custom_hooks[1].vocab_size = 92553
custom_hooks[1].mlp_ratio = 4.0
