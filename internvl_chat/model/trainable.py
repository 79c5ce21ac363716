"""Which parameters train: freezing, LoRA and gradient checkpointing in the spec's order (§4.5-4.6)."""

from __future__ import annotations

from internvl_chat.model.internvl import InternVLChatModel
from internvl_chat.model.lora import wrap_backbone_lora, wrap_llm_lora


def _vit_layers(model: InternVLChatModel):
    vm = model.vision_model
    vm = vm.get_base_model() if hasattr(vm, "get_base_model") else vm
    return vm.encoder.layers


def configure_trainable(
    model: InternVLChatModel,
    *,
    freeze_backbone: bool = False,
    freeze_llm: bool = False,
    freeze_mlp: bool = False,
    unfreeze_vit_layers: int = 0,
    use_backbone_lora: int = 0,
    use_llm_lora: int = 0,
    grad_checkpoint: bool = True,
) -> list[str]:
    """Apply the settings in the official script's order; return the trainable parameter names.

    LoRA already present in a loaded checkpoint (config.use_*_lora) is not wrapped twice.
    """
    if freeze_backbone:
        model.vision_model.requires_grad_(False)
    if freeze_llm:
        model.language_model.eval()
        model.language_model.requires_grad_(False)
    if use_backbone_lora and not model.config.use_backbone_lora:
        wrap_backbone_lora(model, use_backbone_lora)
    if use_llm_lora and not model.config.use_llm_lora:
        wrap_llm_lora(model, use_llm_lora)
    if freeze_mlp:
        model.mlp1.requires_grad_(False)
    if unfreeze_vit_layers:
        layers = _vit_layers(model)
        for layer in layers[unfreeze_vit_layers:]:
            layer.requires_grad_(True)

    model.language_model.config.use_cache = False
    _vit_encoder(model).gradient_checkpointing = True  # the official ViT always checkpoints
    if grad_checkpoint:
        lm = model.language_model
        kwargs = {"use_reentrant": False}
        if hasattr(lm, "activation_checkpointing_enable"):  # transformers >= 5 name
            lm.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    return [n for n, p in model.named_parameters() if p.requires_grad]


def _vit_encoder(model: InternVLChatModel):
    vm = model.vision_model
    vm = vm.get_base_model() if hasattr(vm, "get_base_model") else vm
    return vm.encoder
