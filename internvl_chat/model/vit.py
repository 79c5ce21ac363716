"""InternViT: the InternVL vision encoder (spec §4.2), in the original checkpoint's key layout.

Keys: ``embeddings.{class_embedding,patch_embedding,position_embedding}``,
``encoder.layers.N.{norm1,attn.qkv,attn.q_norm,attn.k_norm,attn.proj,ls1,norm2,mlp.fc1,mlp.fc2,ls2}``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


@dataclass
class InternVisionConfig:
    """Fields and defaults of the original ``InternVisionConfig`` (model_type intern_vit_6b)."""

    num_channels: int = 3
    patch_size: int = 14
    image_size: int = 224
    qkv_bias: bool = False
    hidden_size: int = 3200
    num_attention_heads: int = 25
    intermediate_size: int = 12800
    qk_normalization: bool = True
    num_hidden_layers: int = 48
    use_flash_attn: bool = True
    hidden_act: str = "gelu"
    norm_type: str = "rms_norm"
    layer_norm_eps: float = 1e-6
    dropout: float = 0.0
    drop_path_rate: float = 0.0
    attention_dropout: float = 0.0
    initializer_range: float = 0.02
    initializer_factor: float = 0.1

    @classmethod
    def from_dict(cls, d: dict) -> InternVisionConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def to_dict(self) -> dict:
        return {
            **dataclasses.asdict(self),
            "model_type": "intern_vit_6b",
            "architectures": ["InternVisionModel"],
        }


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def _norm(cfg: InternVisionConfig, dim: int) -> nn.Module:
    if cfg.norm_type == "rms_norm":
        return RMSNorm(dim, cfg.layer_norm_eps)
    if cfg.norm_type == "layer_norm":
        return nn.LayerNorm(dim, eps=cfg.layer_norm_eps)
    raise ValueError(f"vision_config.norm_type {cfg.norm_type!r}: expected rms_norm or layer_norm")


class Embeddings(nn.Module):
    def __init__(self, cfg: InternVisionConfig):
        super().__init__()
        self.patch_size = cfg.patch_size
        self.class_embedding = nn.Parameter(torch.randn(1, 1, cfg.hidden_size))
        self.patch_embedding = nn.Conv2d(
            cfg.num_channels, cfg.hidden_size, kernel_size=cfg.patch_size, stride=cfg.patch_size
        )
        grid = cfg.image_size // cfg.patch_size
        self.position_embedding = nn.Parameter(torch.randn(1, grid * grid + 1, cfg.hidden_size))

    def _patch_pos(self, h: int, w: int) -> torch.Tensor:
        pos = self.position_embedding[:, 1:]
        g = int(round(pos.shape[1] ** 0.5))
        if (h, w) == (g, g):
            return pos
        pos = pos.float().reshape(1, g, g, -1).permute(0, 3, 1, 2)
        pos = F.interpolate(pos, size=(h, w), mode="bicubic", align_corners=False)
        return pos.reshape(1, -1, h * w).permute(0, 2, 1).to(self.position_embedding.dtype)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.patch_embedding(pixel_values.to(self.patch_embedding.weight.dtype))
        n, c, h, w = x.shape
        x = x.flatten(2).transpose(1, 2)
        cls = self.class_embedding.expand(n, 1, c).to(x.dtype)
        pos = torch.cat([self.position_embedding[:, :1], self._patch_pos(h, w)], dim=1)
        return torch.cat([cls, x], dim=1) + pos


class Attention(nn.Module):
    def __init__(self, cfg: InternVisionConfig):
        super().__init__()
        self.num_heads = cfg.num_attention_heads
        dim = cfg.hidden_size
        if dim % self.num_heads:
            raise ValueError(
                f"vision_config.hidden_size {dim} is not divisible by "
                f"num_attention_heads {self.num_heads}"
            )
        self.qkv = nn.Linear(dim, 3 * dim, bias=cfg.qkv_bias)
        self.qk_normalization = cfg.qk_normalization
        if cfg.qk_normalization:
            self.q_norm = RMSNorm(dim, cfg.layer_norm_eps)
            self.k_norm = RMSNorm(dim, cfg.layer_norm_eps)
        self.attn_drop = cfg.attention_dropout
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, c = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        if self.qk_normalization:
            # Normalised over all heads at once, before the head split (spec §4.2).
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = (y.reshape(n, t, self.num_heads, -1).transpose(1, 2) for y in (q, k, v))
        drop = self.attn_drop if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)
        return self.proj(out.transpose(1, 2).reshape(n, t, c))


class MLP(nn.Module):
    def __init__(self, cfg: InternVisionConfig):
        super().__init__()
        if cfg.hidden_act != "gelu":
            raise ValueError(f"vision_config.hidden_act {cfg.hidden_act!r}: only gelu is supported")
        self.fc1 = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.fc2 = nn.Linear(cfg.intermediate_size, cfg.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


def _drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    if p == 0.0 or not training:
        return x
    keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1 - p)
    return x * keep / (1 - p)


class Block(nn.Module):
    def __init__(self, cfg: InternVisionConfig, drop_path: float):
        super().__init__()
        self.norm1 = _norm(cfg, cfg.hidden_size)
        self.attn = Attention(cfg)
        self.ls1 = nn.Parameter(cfg.initializer_factor * torch.ones(cfg.hidden_size))
        self.norm2 = _norm(cfg, cfg.hidden_size)
        self.mlp = MLP(cfg)
        self.ls2 = nn.Parameter(cfg.initializer_factor * torch.ones(cfg.hidden_size))
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + _drop_path(self.attn(self.norm1(x)) * self.ls1, self.drop_path, self.training)
        return x + _drop_path(self.mlp(self.norm2(x)) * self.ls2, self.drop_path, self.training)


class Encoder(nn.Module):
    def __init__(self, cfg: InternVisionConfig):
        super().__init__()
        n = cfg.num_hidden_layers
        rates = [cfg.drop_path_rate * i / max(n - 1, 1) for i in range(n)]
        self.layers = nn.ModuleList(Block(cfg, r) for r in rates)
        self.gradient_checkpointing = False


class InternVisionModel(nn.Module):
    """The ViT. ``forward`` returns all hidden states: [embeddings, layer 1, ..., layer L]."""

    def __init__(self, config: InternVisionConfig):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.encoder = Encoder(config)

    def set_drop_path_rate(self, rate: float) -> None:
        self.config.drop_path_rate = rate
        n = len(self.encoder.layers)
        for i, layer in enumerate(self.encoder.layers):
            layer.drop_path = rate * i / max(n - 1, 1)

    def resize_pos_embeddings(self, new_size: int) -> None:
        """Interpolate the position table to ``new_size`` pixels (CLS entry kept), as §4.2."""
        emb = self.embeddings
        g = new_size // self.config.patch_size
        with torch.no_grad():
            patch = emb._patch_pos(g, g)
            table = torch.cat([emb.position_embedding[:, :1], patch], dim=1)
        emb.position_embedding = nn.Parameter(table.contiguous())
        self.config.image_size = new_size

    def forward(self, pixel_values: torch.Tensor, upto: int | None = None) -> list[torch.Tensor]:
        """Hidden states after the embeddings and after each of the first ``upto`` layers."""
        x = self.embeddings(pixel_values)
        states = [x]
        layers = self.encoder.layers if upto is None else self.encoder.layers[:upto]
        for layer in layers:
            if self.encoder.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(layer, x, use_reentrant=False)
            else:
                x = layer(x)
            states.append(x)
        return states
