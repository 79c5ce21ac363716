"""Length-grouped sampling (spec §5.5), rank-aware for data parallel training."""

from __future__ import annotations

import itertools

import torch


class LengthGroupedSampler(torch.utils.data.Sampler):
    """Indices for one rank, grouped so that each optimizer step sees similar lengths.

    Per epoch: a seeded random permutation is cut into mega-batches of
    ``world_size * grad_accum * batch_size``; each is sorted by length (longest first) and
    split into ``world_size * grad_accum`` chunks of ``batch_size`` with balanced total
    length (each sample goes to the chunk with the smallest total that still has room).
    Chunk ``c`` of the global order is micro-batch ``c``; rank ``r`` gets micro-batches
    ``r, r + world_size, ...``. The global order is padded by wrapping around so every rank
    gets the same number of samples. Call ``set_epoch`` each epoch (as DistributedSampler).
    """

    def __init__(
        self,
        lengths: list[int],
        batch_size: int,
        *,
        world_size: int = 1,
        rank: int = 0,
        grad_accum: int = 1,
        seed: int = 42,
    ):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not within world_size {world_size}")
        if batch_size < 1 or grad_accum < 1:
            raise ValueError("batch_size and grad_accum must be >= 1")
        self.lengths, self.batch_size = list(lengths), batch_size
        self.world_size, self.rank, self.grad_accum, self.seed = world_size, rank, grad_accum, seed
        self.epoch = 0
        per_step = world_size * batch_size
        self.num_samples = -(-len(self.lengths) // per_step) * batch_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def global_order(self) -> list[int]:
        """The order over all ranks (micro-batch after micro-batch), before padding."""
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        perm = torch.randperm(len(self.lengths), generator=g).tolist()
        n_chunks = self.world_size * self.grad_accum
        mega = n_chunks * self.batch_size
        order = []
        for start in range(0, len(perm), mega):
            group = sorted(perm[start : start + mega], key=lambda i: -self.lengths[i])
            chunks = [[] for _ in range(n_chunks)]
            totals = [0] * n_chunks
            for i in group:
                open_ = [c for c in range(n_chunks) if len(chunks[c]) < self.batch_size]
                c = min(open_, key=lambda c: totals[c])
                chunks[c].append(i)
                totals[c] += self.lengths[i]
            order += [i for chunk in chunks for i in chunk]
        return order

    def __iter__(self):
        order = self.global_order()
        total = self.num_samples * self.world_size
        while len(order) < total:
            order += order[: total - len(order)]
        bs, ws = self.batch_size, self.world_size
        mine = [i for k in range(self.rank, total // bs, ws) for i in order[k * bs : (k + 1) * bs]]
        return iter(mine)


class ResumableSampler(torch.utils.data.Sampler):
    """A per-epoch sampler (DistributedSampler, LengthGroupedSampler) that can start an epoch
    part-way, for an exact resume: ``set_epoch(epoch, start)`` skips the first ``start``
    indices of that epoch's order without loading them. The length stays the full epoch's, so
    the number of steps per epoch does not change on resume.
    """

    def __init__(self, base):
        self.base = base
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.base.set_epoch(epoch)
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return len(self.base)

    def __iter__(self):
        return itertools.islice(iter(self.base), self.start, None)
