# Base config (ours) with the settings of seed 003: InternVL2-2B full finetune with XTuner
# (spec 12; seed 003 turns the shipped QLoRA config into a full finetune:
# freeze_visual_encoder=False, quantization_llm=False, no LoRA). See the LLaVA base for how the
# launcher overrides it: every effective nested value is set in the rendered file.
from mmengine.hooks import (
    CheckpointHook,
    DistSamplerSeedHook,
    IterTimerHook,
    LoggerHook,
    ParamSchedulerHook,
)
from mmengine.optim import AmpOptimWrapper, CosineAnnealingLR, LinearLR
from torch.optim import AdamW
from transformers import AutoTokenizer
from xtuner.dataset import InternVL_V1_5_Dataset
from xtuner.dataset.collate_fns import default_collate_fn
from xtuner.dataset.samplers import LengthGroupedSampler
from xtuner.engine.hooks import DatasetInfoHook, ThroughputHook
from xtuner.engine.runner import TrainLoop
from xtuner.model import InternVL_V1_5
from xtuner.utils import PROMPT_TEMPLATE

path = "OpenGVLab/InternVL2-2B"
data_path = "./data/ex_cn.json"
image_folder = "./data/"
prompt_template = PROMPT_TEMPLATE.internlm2_chat
max_length = 6656

batch_size = 4  # per device
accumulative_counts = 4
dataloader_num_workers = 4
max_epochs = 6
lr = 2e-5
betas = (0.9, 0.999)
weight_decay = 0.05
max_norm = 1
warmup_ratio = 0.03
save_steps = 1000
save_total_limit = 1

model = dict(
    type=InternVL_V1_5,
    model_path=path,
    freeze_llm=False,
    freeze_visual_encoder=False,
    quantization_llm=False,
    quantization_vit=False,
)
train_dataloader = dict(
    batch_size=batch_size,
    num_workers=dataloader_num_workers,
    dataset=dict(
        type=InternVL_V1_5_Dataset,
        model_path=path,
        data_paths=data_path,
        image_folders=image_folder,
        template=prompt_template,
        max_length=max_length,
    ),
    sampler=dict(
        type=LengthGroupedSampler,
        length_property="modality_length",
        per_device_batch_size=batch_size * accumulative_counts,
    ),
    collate_fn=dict(type=default_collate_fn),
)
optim_wrapper = dict(
    type=AmpOptimWrapper,
    optimizer=dict(type=AdamW, lr=lr, betas=betas, weight_decay=weight_decay),
    clip_grad=dict(max_norm=max_norm, error_if_nonfinite=False),
    accumulative_counts=accumulative_counts,
    loss_scale="dynamic",
    dtype="float16",
)
param_scheduler = [
    dict(
        type=LinearLR,
        start_factor=1e-5,
        by_epoch=True,
        begin=0,
        end=warmup_ratio * max_epochs,
        convert_to_iter_based=True,
    ),
    dict(
        type=CosineAnnealingLR,
        eta_min=0.0,
        by_epoch=True,
        begin=warmup_ratio * max_epochs,
        end=max_epochs,
        convert_to_iter_based=True,
    ),
]
train_cfg = dict(type=TrainLoop, max_epochs=max_epochs)
# InternVLChatConfig has no hidden_size etc.: the LLM (internlm2-chat-1_8b) dimensions are given.
custom_hooks = [
    dict(
        type=DatasetInfoHook,
        tokenizer=dict(
            type=AutoTokenizer.from_pretrained,
            pretrained_model_name_or_path=path,
            trust_remote_code=True,
        ),
    ),
    dict(type=ThroughputHook, hidden_size=2048, num_layers=24, vocab_size=92553, mlp_ratio=4.0),
]
default_hooks = dict(
    timer=dict(type=IterTimerHook),
    logger=dict(type=LoggerHook, log_metric_by_epoch=False, interval=10),
    param_scheduler=dict(type=ParamSchedulerHook),
    checkpoint=dict(
        type=CheckpointHook,
        save_optimizer=False,
        by_epoch=False,
        interval=save_steps,
        max_keep_ckpts=save_total_limit,
    ),
    sampler_seed=dict(type=DistSamplerSeedHook),
)
env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0),
    dist_cfg=dict(backend="nccl"),
)
visualizer = None
log_level = "INFO"
load_from = None
resume = False
randomness = dict(seed=None, deterministic=False)
log_processor = dict(by_epoch=False)
