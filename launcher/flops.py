"""Training FLOPs per token / tile / sample, and XTuner's ThroughputHook formula beside it.

Model FLOPs (PaLM-style, no recompute counted; shared/specs/performance_and_reliability.md §A3):

- LLM, per token at sequence length s:
    N      = L * (2h^2 + 2*h*h_kv + 3*h*I) + h*V      (q/o 2h^2, k/v 2*h*h_kv, SwiGLU 3hI, LM head)
    attn   = 12 * L * h * s / 2                         (causal: half the score matrix)
    trainable LLM:           6N + attn
    frozen LLM, something upstream trainable (projector / ViT): 4N + attn
        forward 2N plus activation gradients 2N; no weight gradients. Attention has no weights,
        so its backward is all activation gradients and stays in full.
    frozen LLM, nothing upstream trainable: 2N + attn/3 (forward only)
  h_kv = h * kv_heads / heads. With a head_dim apart from h / heads (Qwen3) the attention
  width a = heads * head_dim replaces h in q/o (2*h*a) and in attn, and h_kv = kv_heads * head_dim. Embedding lookups cost nothing; the LM head is a matmul.
- ViT, per tile of T tokens (T = (image/patch)^2 + 1 for CLS; 1025 at 448px/14):
    forward = 2 * N_vit * T + 4 * L_v * T^2 * h_v        (full, non-causal attention)
    trainable: 3 x forward;  frozen: forward only (nothing upstream of it needs gradients).
- Projector (mlp1 / LLaVA projector), per image token entering the LLM: 2 * N_proj, x3 when
  trainable.

A sample costs llm_tokens * F_llm(s) + tiles * F_vit + image_tokens * F_proj.

XTuner's `train/tflops` (`xtuner_throughput_flops`) is *hardware* FLOPs under its own
assumptions: full multi-head attention (no GQA), x4 instead of x3 under activation
checkpointing, no ViT, and text tokens only. It is reported beside MFU, never as MFU.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DERIVED = {"derived": True}
"""Field metadata: computed from other settings, never set in the YAML (launcher.config.convert
refuses it as a key)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LlmArch:
    """`model.dims.llm`: the language model's shape, from its config.json."""

    params: float = 0.0
    """Parameter count, embeddings included (memory); 0: matmul params + input embedding."""
    layers: int = 0
    hidden: int = 0
    heads: int = 0
    kv_heads: int = 0
    head_dim: int = 0
    """0: hidden / heads. Qwen3 sets it apart (0.6B: 16 heads x 128 on a 1024 hidden)."""
    intermediate: int = 0
    vocab: int = 0

    @property
    def attn_hidden(self) -> int:
        """Width of the query / attention output: heads * head_dim (hidden unless head_dim says)."""
        return self.heads * self.head_dim if self.head_dim else self.hidden

    @property
    def kv_hidden(self) -> int:
        return self.attn_hidden * self.kv_heads // self.heads

    @property
    def layer_params(self) -> int:
        h, a, hkv, i = self.hidden, self.attn_hidden, self.kv_hidden, self.intermediate
        return 2 * h * a + 2 * h * hkv + 3 * h * i

    @property
    def matmul_params(self) -> int:
        """N of the 6N rule: every weight a token's activations are multiplied by."""
        return self.layers * self.layer_params + self.hidden * self.vocab

    @property
    def largest_layer_params(self) -> int:
        """Largest single parameter tensor group DeepSpeed ZeRO-3 gathers at once (the embedding)."""
        return max(self.hidden * self.vocab, self.layer_params)

    @property
    def total_params(self) -> float:
        return self.params or self.matmul_params + self.hidden * self.vocab


@dataclass(frozen=True, slots=True, kw_only=True)
class VitArch:
    """`model.dims.vit`: the vision encoder's shape (the layers actually used); all 0: none."""

    params: float = 0.0
    """Parameter count of the layers used; 0: 4h^2 + 2hI per layer."""
    layers: int = 0
    hidden: int = 0
    heads: int = 0
    intermediate: int = 0
    """0: 4 x hidden."""

    @property
    def ffn(self) -> int:
        return self.intermediate or 4 * self.hidden

    @property
    def matmul_params(self) -> float:
        h = self.hidden
        return self.params or self.layers * (4 * h * h + 2 * h * self.ffn)


@dataclass(frozen=True, slots=True, kw_only=True)
class Tile:
    """How one image tile enters the model (ModelSpec.tile derives it from force_image_size,
    patch_size and downsample_ratio)."""

    vit_tokens: int
    """T: patches per tile plus the CLS token (1025 at 448px / patch 14; 577 at 336px)."""
    llm_tokens: int
    """Tokens one tile adds to the LLM sequence (256 for InternVL's pixel shuffle 0.5)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelDims:
    """`model.dims`: what FLOPs, MFU and memory estimates need to know about a VLM (not for
    building models). One type for the config (launcher.config.spec), FLOPs and memory."""

    vit: VitArch = field(default_factory=VitArch)
    llm: LlmArch = field(default_factory=LlmArch)
    projector_params: float = 0.0
    tile: Tile | None = field(default=None, metadata=DERIVED)
    """Set by ModelSpec.flops_dims; needed to count a ViT's FLOPs and activations."""

    @property
    def has_vit(self) -> bool:
        return bool(self.vit.layers and self.vit.hidden)

    @property
    def llm_total_params(self) -> float:
        return self.llm.total_params

    def vit_tokens_per_tile(self) -> int:
        if self.tile is None:
            raise ValueError("counting the ViT needs the tile geometry (ModelSpec.flops_dims)")
        return self.tile.vit_tokens


def check_countable(dims: ModelDims) -> ModelDims:
    """`dims` when FLOPs can be counted; else ValueError naming every missing setting."""
    need = ("layers", "hidden", "heads", "kv_heads", "intermediate", "vocab")
    missing = [f"model.dims.llm.{k}" for k in need if not getattr(dims.llm, k)]
    if missing:
        raise ValueError("cannot count FLOPs; set " + ", ".join(missing))
    return dims


@dataclass(frozen=True, slots=True, kw_only=True)
class Trainable:
    llm: bool = True
    vit: bool = True
    projector: bool = True


ALL_TRAINABLE = Trainable()


def llm_flops_per_token(llm: LlmArch, seq_len: float, *, trainable: str = "full") -> float:
    """Model FLOPs per LLM token. trainable: "full" | "activations" (frozen, grads flow
    through to a trainable part upstream) | "none" (forward only)."""
    n = llm.matmul_params
    attn_fwd = 2 * llm.layers * llm.attn_hidden * seq_len  # QK^T and AV, causal half
    if trainable == "full":
        return 6 * n + 3 * attn_fwd
    if trainable == "activations":
        return 4 * n + 3 * attn_fwd
    if trainable == "none":
        return 2 * n + attn_fwd
    raise ValueError(f"trainable must be full, activations or none, not {trainable!r}")


def vit_flops_per_tile(vit: VitArch, tokens_per_tile: int, *, trainable: bool) -> float:
    t = tokens_per_tile
    forward = 2 * vit.matmul_params * t + 4 * vit.layers * t * t * vit.hidden
    return 3 * forward if trainable else forward


def sample_flops(
    dims: ModelDims,
    *,
    llm_tokens: float,
    image_tokens: float = 0.0,
    seq_len: float | None = None,
    trainable: Trainable = ALL_TRAINABLE,
) -> float:
    """Model FLOPs to train on one sample with `llm_tokens` LLM positions, `image_tokens` of
    which come from image tiles. seq_len (attention length) defaults to llm_tokens."""
    upstream = (dims.has_vit and trainable.vit) or trainable.projector
    mode = "full" if trainable.llm else ("activations" if upstream else "none")
    flops = llm_tokens * llm_flops_per_token(dims.llm, seq_len or llm_tokens, trainable=mode)
    if image_tokens:
        if dims.has_vit:
            per_tile = dims.vit_tokens_per_tile()  # raises without the tile geometry
            tiles = image_tokens / dims.tile.llm_tokens
            flops += tiles * vit_flops_per_tile(dims.vit, per_tile, trainable=trainable.vit)
        flops += image_tokens * 2 * dims.projector_params * (3 if trainable.projector else 1)
    return flops


def xtuner_throughput_flops(
    llm: LlmArch,
    *,
    batch: int,
    seq_len: int,
    activation_checkpointing: bool,
    causal: bool = True,
    sp: int = 1,
) -> float:
    """FLOPs per iteration per GPU as XTuner's ThroughputHook counts them (v0.2.0, XT-B form;
    causal=False gives the older XT-A form). Divide by the iteration time for its `tflops`."""
    b, s, h, n_layers = batch, seq_len / sp, llm.hidden, llm.layers
    mlp_ratio = llm.intermediate / h * 1.5
    per_layer = (
        8 * b * s * h * h + 4 * b * s * s * h * sp / (1 + causal) + 4 * mlp_ratio * b * s * h * h
    )
    return (3 + activation_checkpointing) * per_layer * n_layers + 6 * b * s * h * llm.vocab


__all__ = [
    "ALL_TRAINABLE",
    "LlmArch",
    "ModelDims",
    "Tile",
    "Trainable",
    "VitArch",
    "check_countable",
    "llm_flops_per_token",
    "sample_flops",
    "vit_flops_per_tile",
    "xtuner_throughput_flops",
]
