# Rendered by launcher.engines.xtuner from xtuner_base/llava_internlm2_chat_20b_clip_vit_large_p14_336_e1_gpu8_pretrain.py; re-render, do not edit.
# Values are set on their nested paths: the base's copies of its top-level variables
# would otherwise keep the base's values.
from mmengine.config import read_base

with read_base():
    from .xtuner_base.llava_internlm2_chat_20b_clip_vit_large_p14_336_e1_gpu8_pretrain import *  # noqa: F403

train_dataloader.batch_size = 32
train_dataloader.num_workers = 4
optim_wrapper.accumulative_counts = 1
optim_wrapper.optimizer.lr = 0.001
train_dataloader.dataset.max_length = 1472
default_hooks.checkpoint.interval = 200
default_hooks.checkpoint.max_keep_ckpts = 1
default_hooks.logger.interval = 1
env_cfg.dist_cfg.backend = 'nccl'
env_cfg.dist_cfg.timeout = 600
randomness.seed = 42
model.freeze_llm = True
model.freeze_visual_encoder = True
model.llm.pretrained_model_name_or_path = '/mnt/models/internlm2-chat-20b'
train_dataloader.dataset.tokenizer.pretrained_model_name_or_path = '/mnt/models/internlm2-chat-20b'
custom_hooks[0].tokenizer.pretrained_model_name_or_path = '/mnt/models/internlm2-chat-20b'
model.visual_encoder.pretrained_model_name_or_path = '/mnt/models/clip-vit-large-patch14-336'
train_dataloader.dataset.image_processor.pretrained_model_name_or_path = '/mnt/models/clip-vit-large-patch14-336'
train_dataloader.dataset.data_path = '/mnt/data/llava_data/LLaVA-Pretrain/blip_laion_cc_sbu_558k.json'
train_dataloader.dataset.image_folder = '/mnt/data/llava_data/LLaVA-Pretrain/images'
train_cfg = dict(type=train_cfg.type, max_epochs=1)
param_scheduler[0].by_epoch = True
param_scheduler[0].convert_to_iter_based = True
param_scheduler[0].begin = 0
param_scheduler[0].end = 0.03
param_scheduler[1].by_epoch = True
param_scheduler[1].convert_to_iter_based = True
param_scheduler[1].begin = 0.03
param_scheduler[1].end = 1
custom_hooks[1].hidden_size = 6144
custom_hooks[1].num_layers = 48
custom_hooks[1].vocab_size = 92544
custom_hooks[1].mlp_ratio = 2.6666666666666665
