"""Per-device memory pre-flight: model states by ZeRO stage plus activations (docs/MEMORY.md).

Model states (bytes), P = all parameters, Pt = trainable ones, N = devices, G/node = per node,
mixed precision with Adam (16-bit weights, fp32 master weights + momentum + variance + fp32
gradient partition = 16 bytes per trainable parameter, 16-bit gradients 2 bytes):

| stage | on each device |
|---|---|
| 0 | 2P + 2Pt + 16Pt |
| 1 | 2P + 2Pt + 16Pt/N |
| 2 | 2P + 18Pt/N |
| 2 + offload_optimizer | 2P |
| 3 | 4*largest_layer + (2P + 16Pt)/N |
| 3 + offload_optimizer | 4*largest_layer + 2P/N |
| 3 + offload_optimizer + offload_param | 4*largest_layer |

With Pt = P, stages 2 and 3 equal DeepSpeed's own `estimate_zero2_model_states_mem_needs` /
`estimate_zero3_model_states_mem_needs` (tests check it); their CPU figures are reproduced too
(per node, with DeepSpeed's 1.5 buffer factor). DeepSpeed counts 18 bytes per parameter beyond
the 16-bit weights at stage 2 but 16 at stage 3; we follow it. Stage 1 (no DeepSpeed estimator)
keeps full 16-bit gradients. largest_layer = the biggest tensor gathered at once (embedding).

Activations (bytes per sample, 16-bit, flash attention so no s^2 score matrix):

- LLM layer, per token: 2 * (6h + 2h_kv + 4I) — norm inputs/outputs, q/k/v, attention output,
  gate/up outputs, act(gate), down input. Logits: 6V per token (16-bit logits + fp32 copy for the
  loss). With gradient checkpointing only each layer's input stays (2h per token per layer) plus
  one layer being recomputed.
- ViT layer, per tile token: 2 * (8h_v + 2I_v); T tokens per tile. A frozen ViT keeps nothing
  (no_grad); one layer's working set is counted. Checkpointing as for the LLM.
- A frozen LLM still keeps its activations: gradients flow through it to the projector / ViT.

Total = model states + per_device_batch * activations(sample) + overhead (CUDA context, NCCL and
DeepSpeed buckets, fragmentation; 2 GiB by default). An estimate for pruning sweep points, not a
promise: real peaks also depend on allocator behaviour and kernel workspaces.
"""

from __future__ import annotations

from dataclasses import dataclass

from launcher.flops import ModelDims, Trainable

GIB = 1024**3


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelStates:
    gpu_bytes: float
    cpu_bytes_per_node: float
    weights: float
    grads: float
    optimizer: float


@dataclass(frozen=True, slots=True, kw_only=True)
class MemoryEstimate:
    weights: float
    grads: float
    optimizer: float
    activations: float
    overhead: float
    cpu_bytes_per_node: float
    tokens_per_sample: float = 0.0
    """LLM tokens per sample the activations are budgeted for."""
    basis: str = ""
    """Where tokens_per_sample comes from (launcher.plan.lengths), said in the plan."""

    @property
    def total(self) -> float:
        return self.weights + self.grads + self.optimizer + self.activations + self.overhead

    @property
    def total_gb(self) -> float:
        return self.total / GIB

    def fits(self, device_gb: float) -> bool:
        return self.total_gb <= device_gb

    def describe(self) -> str:
        """One line for the plan, in GiB."""
        parts = ("weights", "grads", "optimizer", "activations", "overhead")
        body = ", ".join(f"{p} {getattr(self, p) / GIB:.1f}" for p in parts)
        basis = f"; activations for {self.basis}" if self.basis else ""
        return f"~{self.total_gb:.1f} GiB per device ({body}{basis})"


def model_states(
    total_params: float,
    trainable_params: float,
    *,
    largest_layer_params: float,
    zero_stage: int,
    gpus_per_node: int,
    nodes: int,
    offload_optimizer: bool = False,
    offload_param: bool = False,
    buffer_factor: float = 1.5,
) -> ModelStates:
    """Weights, gradients and optimizer states per device (bytes), DeepSpeed mixed precision."""
    problems = []
    if zero_stage not in (0, 1, 2, 3):
        problems.append(f"zero_stage must be 0-3, not {zero_stage}")
    if offload_param and zero_stage != 3:
        problems.append("offload_param needs ZeRO stage 3")
    if offload_optimizer and zero_stage == 0:
        problems.append("offload_optimizer needs ZeRO stage 1-3")
    if not 0 <= trainable_params <= total_params:
        problems.append(f"trainable_params {trainable_params} not within 0..{total_params}")
    if problems:
        raise ValueError("; ".join(problems))
    p, pt, n = total_params, trainable_params, nodes * gpus_per_node
    largest = 4 * largest_layer_params
    if zero_stage in (0, 1, 2):
        weights = 2 * p
        if offload_optimizer:
            grads = optimizer = 0.0
            cpu = max(4 * n * p, 16 * pt) * buffer_factor
        else:
            grads = 2 * pt / n if zero_stage == 2 else 2 * pt
            optimizer = 16 * pt / (1 if zero_stage == 0 else n)
            cpu = p * 4 * gpus_per_node * buffer_factor
    else:
        if offload_param:
            weights = largest
            grads = optimizer = 0.0
            cpu = (16 * pt + 2 * p) / nodes * buffer_factor
        elif offload_optimizer:
            weights, grads, optimizer = largest + 2 * p / n, 0.0, 0.0
            cpu = 16 * pt / nodes * buffer_factor
        else:
            weights = largest + 2 * p / n
            grads, optimizer = 2 * pt / n, 14 * pt / n
            cpu = largest_layer_params * 4 * gpus_per_node * buffer_factor
    return ModelStates(
        gpu_bytes=weights + grads + optimizer,
        cpu_bytes_per_node=cpu,
        weights=weights,
        grads=grads,
        optimizer=optimizer,
    )


def llm_activation_bytes(dims: ModelDims, tokens: float, *, checkpointing: bool) -> float:
    llm = dims.llm
    per_layer = 2 * (6 * llm.hidden + 2 * llm.kv_hidden + 4 * llm.intermediate)
    logits = 6 * llm.vocab
    if checkpointing:
        return tokens * (llm.layers * 2 * llm.hidden + per_layer + logits)
    return tokens * (llm.layers * per_layer + logits)


def vit_activation_bytes(dims: ModelDims, tiles: float, *, trainable: bool, checkpointing: bool):
    vit = dims.vit
    if not dims.has_vit or not tiles:
        return 0.0
    tokens = tiles * dims.vit_tokens_per_tile()
    per_layer = 2 * (8 * vit.hidden + 2 * vit.ffn)
    if not trainable:
        return tokens * per_layer
    if checkpointing:
        return tokens * (vit.layers * 2 * vit.hidden + per_layer)
    return tokens * vit.layers * per_layer


def estimate(
    dims: ModelDims,
    *,
    trainable: Trainable,
    zero_stage: int,
    gpus_per_node: int,
    nodes: int,
    per_device_batch: int,
    seq_len: int,
    tiles_per_sample: float,
    grad_checkpoint: bool,
    offload_optimizer: bool = False,
    offload_param: bool = False,
    overhead_gb: float = 2.0,
    tokens_per_sample: float | None = None,
    basis: str = "",
) -> MemoryEstimate:
    """Per-device peak estimate for one configuration (see the module docstring).

    tokens_per_sample: the LLM sequence a sample really has (batches pad to their longest);
    None: seq_len, the bound."""
    vit_p = dims.vit.matmul_params if dims.has_vit else 0.0
    llm_p = dims.llm_total_params
    total = llm_p + vit_p + dims.projector_params
    trainable_p = (
        llm_p * trainable.llm + vit_p * trainable.vit + dims.projector_params * trainable.projector
    )
    states = model_states(
        total,
        trainable_p,
        largest_layer_params=dims.llm.largest_layer_params,
        zero_stage=zero_stage,
        gpus_per_node=gpus_per_node,
        nodes=nodes,
        offload_optimizer=offload_optimizer,
        offload_param=offload_param,
    )
    tokens = seq_len if tokens_per_sample is None else min(tokens_per_sample, seq_len)
    per_sample = llm_activation_bytes(dims, tokens, checkpointing=grad_checkpoint)
    per_sample += vit_activation_bytes(
        dims, tiles_per_sample, trainable=trainable.vit, checkpointing=grad_checkpoint
    )
    return MemoryEstimate(
        weights=states.weights,
        grads=states.grads,
        optimizer=states.optimizer,
        activations=per_device_batch * per_sample,
        overhead=overhead_gb * GIB,
        cpu_bytes_per_node=states.cpu_bytes_per_node,
        tokens_per_sample=tokens,
        basis=basis,
    )
