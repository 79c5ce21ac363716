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

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True, kw_only=True)
class LlmArch:
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    head_dim: int = 0
    """0: hidden // heads."""

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


@dataclass(frozen=True, slots=True, kw_only=True)
class VitArch:
    layers: int
    hidden: int
    heads: int
    intermediate: int
    tokens_per_tile: int
    """T: patches per tile plus the CLS token (1025 at 448px / patch 14; 577 at 336px)."""
    params: float | None = None
    """Parameter count of the layers used; None: 4h^2 + 2hI per layer."""

    @property
    def matmul_params(self) -> float:
        if self.params is not None:
            return self.params
        h = self.hidden
        return self.layers * (4 * h * h + 2 * h * self.intermediate)


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelDims:
    """What FLOPs and memory estimates need to know about a VLM."""

    llm: LlmArch
    vit: VitArch | None = None
    projector_params: float = 0.0
    image_tokens_per_tile: int = 256
    """Tokens one tile contributes to the LLM sequence (256 for InternVL pixel-shuffle 0.5)."""
    llm_params: float | None = None
    """Total LLM parameters incl. embeddings (memory); None: matmul params + input embedding."""

    @property
    def llm_total_params(self) -> float:
        if self.llm_params is not None:
            return self.llm_params
        return self.llm.matmul_params + self.llm.hidden * self.llm.vocab


@dataclass(frozen=True, slots=True, kw_only=True)
class Trainable:
    llm: bool = True
    vit: bool = True
    projector: bool = True


ALL_TRAINABLE = Trainable()

# Real architectures (from each model's config.json); the lead's conf/model/*.yaml dims match.
LLMS: dict[str, LlmArch] = {
    "internlm2-20b": LlmArch(
        layers=48, hidden=6144, heads=48, kv_heads=8, intermediate=16384, vocab=92544
    ),
    "internlm2-7b": LlmArch(
        layers=32, hidden=4096, heads=32, kv_heads=8, intermediate=14336, vocab=92544
    ),
    "internlm2-1.8b": LlmArch(
        layers=24, hidden=2048, heads=16, kv_heads=8, intermediate=8192, vocab=92544
    ),
    "qwen2-0.5b": LlmArch(
        layers=24, hidden=896, heads=14, kv_heads=2, intermediate=4864, vocab=151936
    ),
    "llama2-7b": LlmArch(
        layers=32, hidden=4096, heads=32, kv_heads=32, intermediate=11008, vocab=32000
    ),
    "yi-34b": LlmArch(
        layers=60, hidden=7168, heads=56, kv_heads=8, intermediate=20480, vocab=64000
    ),
}
VITS: dict[str, VitArch] = {
    # 48 layers in the checkpoint; InternVL 1.5 uses features from layer -1 of a 45-layer cut.
    "internvit-6b-448px-v1-5": VitArch(
        layers=45, hidden=3200, heads=25, intermediate=12800, tokens_per_tile=1025
    ),
    "internvit-300m-448px": VitArch(
        layers=24, hidden=1024, heads=16, intermediate=4096, tokens_per_tile=1025
    ),
    # LLaVA takes hidden_states[-2]: 23 of 24 layers run usefully.
    "clip-vit-large-patch14-336": VitArch(
        layers=23, hidden=1024, heads=16, intermediate=4096, tokens_per_tile=577
    ),
}


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


def vit_flops_per_tile(vit: VitArch, *, trainable: bool) -> float:
    t = vit.tokens_per_tile
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
    upstream = (dims.vit is not None and trainable.vit) or trainable.projector
    mode = "full" if trainable.llm else ("activations" if upstream else "none")
    flops = llm_tokens * llm_flops_per_token(dims.llm, seq_len or llm_tokens, trainable=mode)
    if image_tokens:
        if dims.vit is not None:
            tiles = image_tokens / dims.image_tokens_per_tile
            flops += tiles * vit_flops_per_tile(dims.vit, trainable=trainable.vit)
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


def dims_from_config(model: Mapping[str, Any]) -> ModelDims:
    """ModelDims from a composed `model` config section (conf/model/*.yaml: `dims`,
    force_image_size, patch_size, downsample_ratio). Raises ValueError naming every missing
    `model.dims.*` setting."""
    d = model.get("dims") or {}
    llm, vit = d.get("llm") or {}, d.get("vit") or {}
    need = ("layers", "hidden", "heads", "kv_heads", "intermediate", "vocab")
    missing = [f"model.dims.llm.{k}" for k in need if not llm.get(k)]
    if missing:
        raise ValueError("cannot count FLOPs; set " + ", ".join(missing))
    llm_arch = LlmArch(**{k: int(llm[k]) for k in need}, head_dim=int(llm.get("head_dim") or 0))
    image, patch = int(model.get("force_image_size", 448)), int(model.get("patch_size", 14))
    grid = image // patch
    vit_arch = None
    if vit.get("layers") and vit.get("hidden"):
        vit_arch = VitArch(
            layers=int(vit["layers"]),
            hidden=int(vit["hidden"]),
            heads=int(vit.get("heads") or 1),
            intermediate=int(vit.get("intermediate") or 4 * int(vit["hidden"])),
            tokens_per_tile=grid * grid + 1,
            params=float(vit["params"]) if vit.get("params") else None,
        )
    per_tile = int(grid * grid * float(model.get("downsample_ratio", 0.5)) ** 2)
    if model.get("arch") == "llava":
        per_tile = grid * grid
    return ModelDims(
        llm=llm_arch,
        vit=vit_arch,
        projector_params=float(d.get("projector_params") or 0.0),
        image_tokens_per_tile=per_tile,
        llm_params=float(llm["params"]) if llm.get("params") else None,
    )


def trainable_from_config(model: Mapping[str, Any]) -> Trainable:
    """Which parts get weight gradients. A LoRA-wrapped part counts as frozen: its base
    weights get none, and the adapters' own FLOPs are small enough to leave out."""
    return Trainable(
        llm=not model.get("freeze_llm", False) and not model.get("use_llm_lora"),
        vit=not model.get("freeze_backbone", False) and not model.get("use_backbone_lora"),
        projector=not model.get("freeze_mlp", False),
    )


__all__ = [
    "ALL_TRAINABLE",
    "LLMS",
    "VITS",
    "LlmArch",
    "ModelDims",
    "Trainable",
    "VitArch",
    "dims_from_config",
    "llm_flops_per_token",
    "sample_flops",
    "trainable_from_config",
    "vit_flops_per_tile",
    "xtuner_throughput_flops",
]
