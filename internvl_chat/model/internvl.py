"""InternVLChatModel: InternViT + pixel shuffle + ``mlp1`` projector + a causal LLM (spec §4)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from internvl_chat.model.llm import build_llm, family_of
from internvl_chat.model.vit import InternVisionConfig, InternVisionModel

IGNORE_INDEX = -100


@dataclass
class InternVLChatConfig:
    """The original ``config.json`` of an InternVL chat checkpoint (model_type internvl_chat)."""

    vision_config: InternVisionConfig
    llm_config: dict
    use_backbone_lora: int = 0
    use_llm_lora: int = 0
    pad2square: bool = False
    select_layer: int = -1
    force_image_size: int | None = None
    downsample_ratio: float = 0.5
    template: str | None = None
    dynamic_image_size: bool = False
    use_thumbnail: bool = False
    ps_version: str = "v1"
    min_dynamic_patch: int = 1
    max_dynamic_patch: int = 6
    extra: dict = field(default_factory=dict)  # unknown keys, written back unchanged

    @classmethod
    def from_dict(cls, d: dict) -> InternVLChatConfig:
        names = {f.name for f in dataclasses.fields(cls)} - {"vision_config", "llm_config", "extra"}
        known = {k: d[k] for k in names if k in d}
        skip = names | {"vision_config", "llm_config", "model_type", "architectures", "auto_map"}
        extra = {k: v for k, v in d.items() if k not in skip}
        return cls(
            vision_config=InternVisionConfig.from_dict(d["vision_config"]),
            llm_config=dict(d["llm_config"]),
            extra=extra,
            **known,
        )

    def to_dict(self) -> dict:
        d = {
            "architectures": ["InternVLChatModel"],
            "model_type": "internvl_chat",
            **self.extra,
            "vision_config": self.vision_config.to_dict(),
            "llm_config": self.llm_config,
        }
        for f in dataclasses.fields(self):
            if f.name not in ("vision_config", "llm_config", "extra"):
                d[f.name] = getattr(self, f.name)
        return d

    @property
    def image_size(self) -> int:
        return self.force_image_size or self.vision_config.image_size

    @property
    def num_image_token(self) -> int:
        g = self.image_size // self.vision_config.patch_size
        return int(g * g * self.downsample_ratio**2)

    @property
    def family(self) -> str:
        return family_of(self.llm_config)


def pixel_shuffle(x: torch.Tensor, scale: float, version: str) -> torch.Tensor:
    """[N, g, g, C] -> [N, g*s, g*s, C/s^2] (spec §4.3; v1 leaves the grid transposed)."""
    n, w, h, c = x.shape
    x = x.reshape(n, w, int(h * scale), int(c / scale))
    x = x.permute(0, 2, 1, 3).contiguous()
    x = x.reshape(n, int(h * scale), int(w * scale), int(c / (scale * scale)))
    if version != "v1":
        x = x.permute(0, 2, 1, 3).contiguous()
    return x


class InternVLChatModel(nn.Module):
    """``vision_model``, ``mlp1`` and ``language_model`` under the original checkpoint's names."""

    def __init__(self, config: InternVLChatConfig, attn_implementation: str = "sdpa"):
        super().__init__()
        if config.ps_version not in ("v1", "v2"):
            raise ValueError(f"ps_version {config.ps_version!r}: expected v1 or v2")
        self.config = config
        self.vision_model = InternVisionModel(config.vision_config)
        vit_hidden = config.vision_config.hidden_size
        llm_hidden = config.llm_config["hidden_size"]
        width = vit_hidden * int(1 / config.downsample_ratio) ** 2
        self.mlp1 = nn.Sequential(
            nn.LayerNorm(width),
            nn.Linear(width, llm_hidden),
            nn.GELU(),
            nn.Linear(llm_hidden, llm_hidden),
        )
        self.language_model = build_llm(config.llm_config, attn_implementation)
        self.img_context_token_id: int | None = None

    @property
    def num_image_token(self) -> int:
        return self.config.num_image_token

    def extract_feature(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Tiles [N,3,S,S] -> projected image tokens [N, num_image_token, H_llm]."""
        states = self.vision_model(pixel_values)
        x = states[-1] if self.config.select_layer == -1 else states[self.config.select_layer]
        x = x[:, 1:, :]
        g = int(round(x.shape[1] ** 0.5))
        x = x.reshape(x.shape[0], g, g, -1)
        x = pixel_shuffle(x, self.config.downsample_ratio, self.config.ps_version)
        x = x.reshape(x.shape[0], -1, x.shape[-1])
        return self.mlp1(x)

    def embed(
        self,
        pixel_values: torch.Tensor | None,
        input_ids: torch.Tensor,
        image_flags: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Text embeddings with every ``<IMG_CONTEXT>`` position replaced by an image token."""
        emb = self.language_model.get_input_embeddings()(input_ids)
        if pixel_values is None:
            return emb
        if self.img_context_token_id is None:
            raise RuntimeError(
                "img_context_token_id is not set (load the model with its tokenizer)"
            )
        keep = None if image_flags is None else image_flags.reshape(-1) == 1
        if keep is None or bool(keep.all()):
            vit = self.extract_feature(pixel_values)
        elif bool(keep.any()):
            # No ViT work on the dummy tiles of text-only samples (tiles are independent).
            vit = self.extract_feature(pixel_values[keep])
        else:
            # All text-only: run one dummy tile and add it times zero, so every rank still
            # produces ViT gradients (ZeRO / DDP reduce them on every rank).
            dummy = self.extract_feature(pixel_values[:1])
            return emb + 0.0 * dummy.sum().to(emb.dtype)
        vit = vit.reshape(-1, emb.shape[-1]).to(emb.dtype)
        selected = input_ids == self.img_context_token_id
        n_slots = int(selected.sum())
        if n_slots != vit.shape[0]:
            # The original zeroes the loss here; a silent zero hides truncated samples.
            raise ValueError(
                f"image token mismatch: {n_slots} <IMG_CONTEXT> tokens in input_ids but "
                f"{vit.shape[0]} image features ({vit.shape[0] // max(self.num_image_token, 1)} "
                f"tiles x {self.num_image_token}); a sample's image tokens were truncated or "
                "image_flags do not match the tiles"
            )
        return emb.masked_scatter(selected.unsqueeze(-1), vit)

    def forward(
        self,
        pixel_values: torch.Tensor | None,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        image_flags: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        sample_ids: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
        max_seqlen: int | None = None,
        loss_weight: torch.Tensor | None = None,
        loss_norm: torch.Tensor | None = None,
        **_: object,
    ) -> dict:
        """Returns ``{"logits", "loss"}``; loss = mean CE over shifted labels that are not -100,
        or with ``loss_weight`` [B, L] (per label position) sum(w * CE) / ``loss_norm``
        (``internvl_chat.train.loss``; the norm defaults to this batch's weight sum).

        Packed rows: with ``cu_seqlens`` each sub-sample attends only to itself (per-segment
        SDPA or flash varlen); with only ``sample_ids`` (or eager attention) via a 4D mask.
        In training mode with labels the LM head runs only on supervised positions and
        ``logits`` is None.
        """
        emb = self.embed(pixel_values, input_ids, image_flags)
        lm = self.language_model
        attn_kw = {}
        if sample_ids is not None:
            if cu_seqlens is not None and lm.config._attn_implementation != "eager":
                # Per-sample attention from the boundaries (packed SDPA / flash varlen).
                attention_mask = None
                attn_kw = {"cu_seq_lens_q": cu_seqlens, "cu_seq_lens_k": cu_seqlens,
                           "max_length_q": max_seqlen, "max_length_k": max_seqlen}  # fmt: skip
            else:
                from internvl_chat.data.dataset import block_causal_mask

                attention_mask = block_causal_mask(sample_ids, dtype=emb.dtype)
        if labels is None or not self.training:
            logits = lm(inputs_embeds=emb, attention_mask=attention_mask,
                        position_ids=position_ids, use_cache=False, **attn_kw).logits  # fmt: skip
            loss = None
            if labels is not None:
                shift_logits = logits[:, :-1].reshape(-1, logits.shape[-1]).float()
                shift_labels = labels[:, 1:].reshape(-1).to(logits.device)
                loss = F.cross_entropy(shift_logits, shift_labels, ignore_index=IGNORE_INDEX)
            return {"loss": loss, "logits": logits}
        # Training: the LM head only where a label is supervised (same mean CE, fewer FLOPs
        # and no [B, L, V] logits tensor); logits are not returned.
        hidden = lm.get_decoder()(inputs_embeds=emb, attention_mask=attention_mask,
                                  position_ids=position_ids, use_cache=False,
                                  **attn_kw).last_hidden_state  # fmt: skip
        shift_labels = labels[:, 1:].to(hidden.device)
        sel = shift_labels != IGNORE_INDEX
        logits = lm.get_output_embeddings()(hidden[:, :-1][sel]).float()
        if loss_weight is None:
            loss = F.cross_entropy(logits, shift_labels[sel], reduction="sum") / sel.sum().clamp(
                min=1
            )
        else:
            w = loss_weight[:, 1:].to(hidden.device)[sel]
            norm = loss_norm if loss_norm is not None else w.sum().clamp(min=1e-12)
            loss = (F.cross_entropy(logits, shift_labels[sel], reduction="none") * w).sum() / norm
        if not bool(sel.any()):
            loss = loss + 0.0 * logits.sum()
        logits = None
        return {"loss": loss, "logits": logits}

    @torch.no_grad()
    def generate(
        self,
        pixel_values: torch.Tensor | None,
        input_ids: torch.Tensor,
        max_new_tokens: int = 32,
        eos_token_ids: tuple[int, ...] = (),
    ) -> list[int]:
        """Greedy decoding of one prompt (batch of 1); returns the new token ids."""
        emb = self.embed(pixel_values, input_ids)
        new: list[int] = []
        embed_tokens = self.language_model.get_input_embeddings()
        past = None
        step_in = emb
        for _ in range(max_new_tokens):
            out = self.language_model(inputs_embeds=step_in, past_key_values=past, use_cache=True)
            past = out.past_key_values
            tok = int(out.logits[0, -1].argmax())
            if tok in eos_token_ids:
                break
            new.append(tok)
            step_in = embed_tokens(torch.tensor([[tok]], device=input_ids.device))
        return new
