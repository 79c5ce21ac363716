# Rendered by launcher.engines.xtuner from xtuner_base/tiny_llava_pretrain.py; re-render, do not edit.
# Values are set on their nested paths: the base's copies of its top-level variables
# would otherwise keep the base's values.
from mmengine.config import read_base

with read_base():
    from .xtuner_base.tiny_llava_pretrain import *  # noqa: F403

train_dataloader.batch_size = 2
train_dataloader.num_workers = 0
optim_wrapper.accumulative_counts = 1
optim_wrapper.optimizer.lr = 0.001
train_dataloader.dataset.max_length = 124
default_hooks.checkpoint.interval = 200
default_hooks.checkpoint.max_keep_ckpts = 1
default_hooks.logger.interval = 1
env_cfg.dist_cfg.backend = 'gloo'
env_cfg.dist_cfg.timeout = 600
randomness.seed = 42
model.freeze_llm = True
model.freeze_visual_encoder = True
model.llm.pretrained_model_name_or_path = '/data/tiny llava/llm'
train_dataloader.dataset.tokenizer.pretrained_model_name_or_path = '/data/tiny llava/llm'
custom_hooks[0].tokenizer.pretrained_model_name_or_path = '/data/tiny llava/llm'
model.visual_encoder.pretrained_model_name_or_path = '/data/tiny llava/clip'
train_dataloader.dataset.image_processor.pretrained_model_name_or_path = '/data/tiny llava/clip'
train_dataloader.dataset.data_path = '/data/tiny llava/data/blip_laion_cc_sbu_558k.json'
train_dataloader.dataset.image_folder = '/data/tiny llava/data/images'
train_cfg = dict(type=train_cfg.type, max_iters=4)
param_scheduler[0].by_epoch = False
param_scheduler[0].convert_to_iter_based = False
param_scheduler[0].begin = 0
param_scheduler[0].end = 2
param_scheduler[1].by_epoch = False
param_scheduler[1].convert_to_iter_based = False
param_scheduler[1].begin = 2
param_scheduler[1].end = 4
custom_hooks[1].hidden_size = 64
custom_hooks[1].num_layers = 2
custom_hooks[1].vocab_size = 387
custom_hooks[1].mlp_ratio = 2.0
