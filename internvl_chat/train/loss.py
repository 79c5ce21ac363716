"""Per-token loss weights of ``loss_reduction`` (the official InternVL3.5 recipe).

Each supervised token of a sample with N supervised tokens weighs 1 (``token``), 1/N
(``sample``) or 1/sqrt(N) (``square``); the loss is sum(w * CE) / W, where W is the mean over
ranks of each rank's micro-batch weight sum (the official all-reduce AVG), so the gradient the
ranks average is the weighted mean over all of them. A packed row holds several samples
(``sample_ids``); an unpacked row is one sample.
"""

from __future__ import annotations

import torch

from internvl_chat.data.dataset import IGNORE_INDEX

REDUCTIONS = ("token", "sample", "square")


def token_weights(
    labels: torch.Tensor, sample_ids: torch.Tensor | None, reduction: str
) -> torch.Tensor:
    """[B, L] weights, 0 where the label is ignored; N counts the unshifted labels, as the
    official ``len2weight``."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"loss_reduction {reduction!r}: expected one of {', '.join(REDUCTIONS)}")
    sup = labels != IGNORE_INDEX
    seg = torch.zeros_like(labels) if sample_ids is None else sample_ids.clamp(min=0)
    per_row = int(seg.max()) + 1
    seg = seg + per_row * torch.arange(labels.shape[0], device=labels.device)[:, None]
    n = torch.zeros(labels.shape[0] * per_row, dtype=torch.float64, device=labels.device)
    n.scatter_add_(0, seg.flatten(), sup.flatten().to(n.dtype))
    n_tok = n[seg].clamp(min=1)
    w = {"token": torch.ones_like(n_tok), "sample": 1 / n_tok, "square": n_tok.rsqrt()}[reduction]
    return torch.where(sup, w, 0.0).float()


def loss_inputs(batch: dict, reduction: str, dist) -> dict:
    """``loss_weight`` and ``loss_norm`` for the model's forward (``dist``: Dist, for the
    mean over ranks of the shifted weights' sum)."""
    w = token_weights(batch["labels"], batch.get("sample_ids"), reduction)
    (norm,) = dist.allreduce([float(w[:, 1:].sum())])
    norm /= dist.world
    return {"loss_weight": w, "loss_norm": torch.tensor(max(norm, 1e-12), device=w.device)}
