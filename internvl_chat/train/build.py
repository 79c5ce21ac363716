"""Build what a run trains: the model (spec §4), the data (spec §5) and the optimizer."""

from __future__ import annotations

import dataclasses

from internvl_chat.train.args import ArgsError, TrainArgs


def build_model(a: TrainArgs):
    """Load, apply the argument overrides, then freeze / LoRA in the official order.

    Returns ``(model, tokenizer, trainable parameter names)``.
    """
    import torch

    from internvl_chat.model import attach_tokenizer, configure_trainable, load_model
    from internvl_chat.tokenizer import load_tokenizer

    model = load_model(
        a.model_name_or_path,
        vision_path=a.vision_path,
        llm_path=a.llm_path,
        mlp_path=a.mlp_path,
        dtype=torch.bfloat16 if a.bf16 else torch.float32,
        overrides={
            "template": a.conv_style,
            "select_layer": a.vision_select_layer,
            "dynamic_image_size": a.dynamic_image_size,
            "use_thumbnail": a.use_thumbnail,
            "ps_version": a.ps_version,
            "min_dynamic_patch": a.min_dynamic_patch,
            "max_dynamic_patch": a.max_dynamic_patch,
            "force_image_size": a.force_image_size,
        },
    )
    if a.save_format is not None:  # saved in this format instead of the one loaded
        from internvl_chat.model.checkpoint import FORMATS

        model.layout = FORMATS[a.save_format]
    if abs(model.config.downsample_ratio - a.down_sample_ratio) > 1e-9:
        raise ArgsError(
            f"down_sample_ratio {a.down_sample_ratio} differs from the checkpoint's "
            f"downsample_ratio {model.config.downsample_ratio}"
        )
    tokenizer = load_tokenizer(model.tokenizer_dir, model_max_length=a.max_seq_length)
    attach_tokenizer(model, tokenizer)
    if a.system_message is not None or a.internvl_revision != "head":
        from internvl_chat.data import DataConfig

        cfg = DataConfig.from_any(dataclasses.asdict(a))
        model.config.extra["system_message"] = cfg.effective_system_message
    model.vision_model.set_drop_path_rate(a.drop_path_rate)
    trainable = configure_trainable(
        model,
        freeze_backbone=a.freeze_backbone,
        freeze_llm=a.freeze_llm,
        freeze_mlp=a.freeze_mlp,
        unfreeze_vit_layers=a.unfreeze_vit_layers,
        use_backbone_lora=a.use_backbone_lora,
        use_llm_lora=a.use_llm_lora,
        grad_checkpoint=a.grad_checkpoint,
    )
    if not trainable:
        raise ArgsError("nothing to train: every parameter is frozen (freeze_* settings)")
    if a.lora_parity_init and a.use_llm_lora:
        from internvl_chat.model.lora import parity_init

        print(f"[train] lora_parity_init: {parity_init(model.language_model, a.seed)} adapters")
    if a.bf16:
        model.to(torch.bfloat16)
    return model, tokenizer, trainable


@dataclasses.dataclass
class Data:
    train_ds: object
    eval_ds: object | None
    sampler: object  # a ResumableSampler
    loader: object
    seed: int

    def start_epoch(self, epoch: int, start_batch: int = 0):
        """An iterator over ``epoch``'s micro-batches from ``start_batch`` on (resume)."""
        self.sampler.set_epoch(epoch, start_batch * self.loader.batch_size)
        self.loader.generator.manual_seed(self.seed + epoch)
        return iter(self.loader)


def build_data(a: TrainArgs, model, tokenizer, rank: int, world: int) -> Data:
    import torch

    from internvl_chat.data import (
        DataConfig,
        LengthGroupedSampler,
        ResumableSampler,
        build_train_dataset,
    )

    data_cfg = DataConfig.from_any(
        dataclasses.asdict(a), patch_size=model.config.vision_config.patch_size, seed=a.seed
    )
    train_ds = build_train_dataset(a.meta_path, tokenizer, data_cfg)
    eval_ds = None
    if a.eval_meta_path:
        eval_ds = build_train_dataset(
            a.eval_meta_path, tokenizer, DataConfig.from_any(data_cfg, use_packed_ds=False)
        )
    if a.group_by_length:
        sampler = LengthGroupedSampler(
            # a row's precomputed ``length`` where given, as the official sampler sorts by
            getattr(train_ds, "group_lengths", train_ds.lengths),
            a.per_device_train_batch_size,
            world_size=world,
            rank=rank,
            grad_accum=a.gradient_accumulation_steps,
            seed=a.seed,
        )
    else:
        sampler = torch.utils.data.DistributedSampler(
            train_ds, world, rank, shuffle=True, seed=a.seed
        )
    collate = getattr(train_ds, "collate", None) or getattr(
        getattr(train_ds, "base", None), "collate", None
    )
    sampler = ResumableSampler(sampler)
    loader = torch.utils.data.DataLoader(
        train_ds,
        batch_size=a.per_device_train_batch_size,
        sampler=sampler,
        # Its own generator, reseeded each epoch: worker seeds do not depend on where in the
        # run the loader was started, nor draw from the global RNG that dropout uses.
        generator=torch.Generator(),
        collate_fn=collate,
        num_workers=a.dataloader_num_workers,
        drop_last=False,
    )
    return Data(train_ds, eval_ds, sampler, loader, a.seed)


def build_optimizer(a: TrainArgs, model, opt_params: dict):
    """One group, uniform weight decay (as the official DS optimizer block); torch AdamW."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    betas = opt_params.get("betas", [a.adam_beta1, a.adam_beta2])
    return torch.optim.AdamW(
        params,
        lr=a.learning_rate,
        betas=tuple(betas),
        eps=opt_params.get("eps", a.adam_epsilon),
        weight_decay=a.weight_decay,
    )
