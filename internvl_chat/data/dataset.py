"""Training datasets, transforms, packing and the collator (spec §5, §8).

Batch produced by ``collate`` (keys the model's forward takes):

- ``input_ids`` [B, L] long, right-padded with the tokenizer's pad id (0 if it has none)
- ``labels`` [B, L] long, -100 where not supervised (and on padding)
- ``attention_mask`` [B, L] long, 1 on real tokens: built from lengths, not ``ids != 0``
- ``position_ids`` [B, L] long, 0..n-1 per sample (restarting per sub-sample when packed);
  padding gets 1, as in the reference
- ``pixel_values`` [sum_tiles, 3, S, S] float32, the tiles of all samples in batch order
- ``image_flags`` [sum_tiles] long, 0 for the dummy tile of text-only samples

Packed batches (``use_packed_ds``) add, for attention kept inside each sub-sample:

- ``sample_ids`` [B, L] long: sub-sample index within its row (0, 1, ...), -1 on padding;
  ``block_causal_mask(sample_ids)`` turns it into a 4D additive mask [B, 1, L, L] for SDPA
- ``cu_seqlens`` [n + 1] int32: flash-attn varlen boundaries over the flattened B*L tokens
  (padding of each row is one extra pseudo-sequence), ``max_seqlen`` int
"""

from __future__ import annotations

import io
import logging
import random
from collections import Counter
from functools import partial

import numpy as np
import torch
from PIL import Image

from internvl_chat.data.config import NORMALIZE, DataConfig
from internvl_chat.data.meta import (
    TEXT_ONLY_SIZE,
    MetaEntry,
    SampleInfo,
    VideoNotSupported,
    load_meta,
    parse_line,
    read_lines,
    scan_row,
)
from internvl_chat.data.templates import IGNORE_INDEX, SampleDropped, SampleError
from internvl_chat.data.tiling import tile_image

log = logging.getLogger("internvl_chat.data")
MAX_LOGGED_PROBLEMS = 5  # per dataset; the rest are only counted


class Transform:
    """Per-tile transform (spec §5.4): RGB, [random JPEG re-encode q in 75..100 when
    training | optional pad-to-square], bicubic resize to S x S, to tensor, normalise."""

    def __init__(self, is_train: bool, size: int, pad2square: bool, normalize_type: str):
        self.is_train, self.size, self.pad2square = is_train, size, pad2square
        mean, std = NORMALIZE[normalize_type]
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)

    def __call__(self, tile: Image.Image, rng: random.Random) -> torch.Tensor:
        tile = tile.convert("RGB")
        if self.is_train:
            buf = io.BytesIO()
            tile.save(buf, format="JPEG", quality=rng.randint(75, 100))
            buf.seek(0)
            tile = Image.open(buf).convert("RGB")
        elif self.pad2square:
            tile = _expand_to_square(tile, tuple(int(m * 255) for m in self.mean.flatten()))
        tile = tile.resize((self.size, self.size), Image.BICUBIC)
        x = torch.from_numpy(np.asarray(tile, dtype=np.float32) / 255.0).permute(2, 0, 1)
        return (x - self.mean) / self.std


def resize_uint8(pixels: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Bicubic antialiased resize of [3, H, W] uint8 (HWC-strided is fine) to [3, h, w] uint8.

    torch's uint8 kernel (the one torchvision uses for PIL-equivalent resizing) instead of
    PIL's: about 3x faster per core at 448 px grids. It is PIL's separable bicubic
    (a = -0.5, support scaled by the ratio when downscaling) with a different rounding of the
    fixed-point accumulator: on photos, 0.2-0.3% of the values differ from PIL's, by 1, rarely
    2, levels of 255 (tests/test_data_tiling_templates.py bounds it).
    """
    out = torch.nn.functional.interpolate(
        pixels.unsqueeze(0), size=(height, width), mode="bicubic", antialias=True
    )
    return out[0]


def image_tiles(
    image: Image.Image,
    grid: tuple[int, int],
    transform: Transform,
    *,
    use_thumbnail: bool,
    rng: random.Random | None,
) -> torch.Tensor:
    """The transformed tiles of one image as [n, 3, S, S] (tiles row-major, thumbnail last).

    Without augmentation or pad-to-square the decoded pixels are resized once to the grid
    (and once to the thumbnail) by ``resize_uint8``, then cut into tiles by a reshape and
    normalised in place in the output tensor (no per-tile PIL crops, copies or cat), with the
    same float ops as ``Transform``. With augmentation (a per-tile JPEG re-encode) or
    pad-to-square it is ``tile_image`` + ``transform`` per tile, in PIL.
    """
    if transform.is_train or transform.pad2square:
        tiles = tile_image(image, grid, transform.size, use_thumbnail)
        return torch.stack([transform(t, rng) for t in tiles])
    s = transform.size
    cols, rows = grid
    n = cols * rows
    thumb = use_thumbnail and n != 1
    out = torch.empty((n + thumb, 3, s, s), dtype=torch.float32)
    rgb = image if image.mode == "RGB" else image.convert("RGB")  # the dataset decodes to RGB
    # np.array: a writable copy of the uint8 pixels (torch warns on read-only buffers)
    pixels = torch.from_numpy(np.array(rgb)).permute(2, 0, 1)  # [3, H, W]
    grid_px = resize_uint8(pixels, s * cols, s * rows)  # [3, rows*s, cols*s]
    src = grid_px.view(3, rows, s, cols, s).permute(1, 3, 0, 2, 4)
    out[:n].view(rows, cols, 3, s, s).copy_(src)  # uint8 -> float32, tiles row-major
    if thumb:
        out[n].copy_(resize_uint8(pixels, s, s))
    # In place, the same float ops as Transform: (x / 255 - mean) / std.
    return out.div_(255.0).sub_(transform.mean).div_(transform.std)


def _expand_to_square(img: Image.Image, colour) -> Image.Image:
    w, h = img.size
    if w == h:
        return img
    side = max(w, h)
    out = Image.new(img.mode, (side, side), colour)
    out.paste(img, ((side - w) // 2, (side - h) // 2))
    return out


def group_length(row: dict, exact: int) -> int:
    given = row.get("length")
    return given if isinstance(given, int) and not isinstance(given, bool) else exact


class SupervisedDataset(torch.utils.data.Dataset):
    """One meta entry: scanned samples (repeated per repeat_time) -> model inputs."""

    def __init__(self, entry: MetaEntry, samples: list[SampleInfo], tokenizer, cfg: DataConfig):
        self.entry, self.samples, self.tokenizer, self.cfg = entry, samples, tokenizer, cfg
        self.transform = Transform(
            entry.data_augment, cfg.force_image_size, cfg.pad2square, cfg.normalize_type
        )

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def lengths(self) -> list[int]:
        return [s.length for s in self.samples]

    @property
    def group_lengths(self) -> list[int]:
        """What group_by_length sorts by: a row's integer ``length`` where it has one (the
        official dataset uses that precomputed value as is), else the exact length."""
        return [group_length(s.row, s.length) for s in self.samples]

    def __getitem__(self, i: int) -> dict:
        info = self.samples[i]
        # Same seed for a given sample every time: augmentation is reproducible.
        rng = random.Random(f"{self.cfg.seed}:{self.entry.name}:{i}")
        # Re-encoding is deterministic, so ids/labels equal what the scan measured.
        _, enc = scan_row(info.line, info.row, self.entry, self.cfg, self.tokenizer)
        parts = []
        if info.text_only:
            white = Image.new("RGB", TEXT_ONLY_SIZE, (255, 255, 255))
            parts.append(image_tiles(white, (1, 1), self.transform, use_thumbnail=False, rng=rng))
        for path, grid in zip(info.images, info.grids, strict=True):
            try:
                with Image.open(path) as im:
                    image = im.convert("RGB")
            except OSError as e:
                raise RuntimeError(
                    f"{self.entry.annotation}:{info.line}: cannot decode {path}: {e}"
                ) from e
            if self.cfg.dynamic_image_size:
                parts.append(image_tiles(image, grid, self.transform,
                                         use_thumbnail=self.cfg.use_thumbnail, rng=rng))  # fmt: skip
            else:
                parts.append(self.transform(image, rng)[None])
        pixel_values = torch.cat(parts)
        tiles = pixel_values  # one entry per tile
        flag = 0 if info.text_only else 1
        return {
            "input_ids": torch.tensor(enc.input_ids, dtype=torch.long),
            "labels": torch.tensor(enc.labels, dtype=torch.long),
            "pixel_values": pixel_values,
            "image_flags": torch.full((len(tiles),), flag, dtype=torch.long),
        }


class TrainDataset(torch.utils.data.ConcatDataset):
    """All meta entries concatenated. ``stats`` per dataset, ``lengths`` per sample (exact
    token counts, for group_by_length), ``collate`` with the tokenizer's pad id."""

    def __init__(self, datasets: list[SupervisedDataset], stats: dict, pad_token_id: int):
        super().__init__(datasets)
        self.stats = stats
        self.pad_token_id = pad_token_id
        self.collate = partial(collate, pad_token_id=pad_token_id)

    @property
    def lengths(self) -> list[int]:
        return [n for d in self.datasets for n in d.lengths]

    @property
    def group_lengths(self) -> list[int]:
        return [n for d in self.datasets for n in d.group_lengths]


class PackedDataset(torch.utils.data.Dataset):
    """Rows of several samples each (``rows[k]`` = indices into ``base``)."""

    def __init__(self, base: TrainDataset, rows: list[list[int]]):
        self.base, self.rows = base, rows
        self.stats = base.stats
        self.pad_token_id = base.pad_token_id
        self.collate = partial(collate, pad_token_id=base.pad_token_id)
        base_lengths = base.lengths
        self._lengths = [sum(base_lengths[i] for i in row) for row in rows]

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def lengths(self) -> list[int]:
        return self._lengths

    def __getitem__(self, k: int) -> dict:
        items = [self.base[i] for i in self.rows[k]]
        return {
            "input_ids": torch.cat([x["input_ids"] for x in items]),
            "labels": torch.cat([x["labels"] for x in items]),
            "pixel_values": torch.cat([x["pixel_values"] for x in items]),
            "image_flags": torch.cat([x["image_flags"] for x in items]),
            "sample_lengths": [len(x["input_ids"]) for x in items],
        }


def pack_rows(
    lengths: list[int], tiles: list[int], max_tokens: int, max_tiles: int, order: list[int]
) -> list[list[int]]:
    """First-fit packing of samples (visited in ``order``) into rows of at most
    ``max_tokens`` tokens and ``max_tiles`` tiles; a sample is never split."""
    rows: list[list[int]] = []
    room: list[tuple[int, int]] = []  # (tokens left, tiles left) per row
    for i in order:
        n, t = lengths[i], tiles[i]
        for k, (tok_left, tile_left) in enumerate(room):
            if n <= tok_left and t <= tile_left:
                rows[k].append(i)
                room[k] = (tok_left - n, tile_left - t)
                break
        else:
            rows.append([i])
            room.append((max_tokens - n, max_tiles - t))
    return rows


def build_train_dataset(meta_path, tokenizer, cfg=None):
    """Datasets of every meta entry, scanned up front.

    ``cfg``: a DataConfig, a dict of train args, or an object with those attributes.
    Broken samples (bad JSON, missing/unreadable image, wrong roles, <image> count) are
    skipped and counted; a dataset whose skipped share exceeds ``max_bad_sample_ratio``
    fails the build. Samples whose image tokens would be truncated are dropped and counted.
    Video samples fail the build. Returns a TrainDataset, or a PackedDataset when
    ``use_packed_ds`` (alias ``packed``) is set.
    """
    cfg = DataConfig.from_any(cfg)
    problems = cfg.problems()
    if problems:
        raise ValueError("invalid data settings:\n  " + "\n  ".join(problems))
    entries = load_meta(meta_path)
    datasets, stats, failures, videos = [], {}, [], []
    for entry in entries:
        samples, reasons, logged = [], Counter(), 0
        lines = read_lines(entry)
        for line, text in lines:
            try:
                info, _ = scan_row(line, parse_line(text), entry, cfg, tokenizer)
            except VideoNotSupported:
                videos.append(f"{entry.annotation}:{line}")
                continue
            except (SampleError, SampleDropped) as e:
                kind = "dropped" if isinstance(e, SampleDropped) else "skipped"
                reasons[kind] += 1
                if logged < MAX_LOGGED_PROBLEMS:
                    log.warning("%s:%d: %s sample: %s", entry.annotation, line, kind, e)
                    logged += 1
                continue
            samples.append(info)
        repeat = int(entry.repeat_time) if entry.repeat_time > 1 else 1
        st = {
            "lines": len(lines),
            "samples": len(samples) * repeat,
            "skipped": reasons["skipped"],
            "dropped_truncated": reasons["dropped"],
            "repeat": repeat,
        }
        stats[entry.name] = st
        hidden = reasons.total() - logged
        if reasons:
            log.warning(
                "%s: %d line(s), %d skipped (broken), %d dropped (would be truncated)%s",
                entry.name, len(lines), st["skipped"], st["dropped_truncated"],
                f"; {hidden} not shown" if hidden > 0 else "",
            )  # fmt: skip
        if lines and st["skipped"] / len(lines) > cfg.max_bad_sample_ratio:
            failures.append(
                f"{entry.name} ({entry.annotation}): {st['skipped']} of {len(lines)} samples are "
                f"broken (> max_bad_sample_ratio {cfg.max_bad_sample_ratio}); "
                f"run internvl_chat.tools.validate_data to list them"
            )
        datasets.append(SupervisedDataset(entry, samples * repeat, tokenizer, cfg))
    if videos:
        shown = ", ".join(videos[:5]) + (f" (+{len(videos) - 5} more)" if len(videos) > 5 else "")
        failures.append(f"video samples are not supported by internvl_chat: {shown}")
    if failures:
        raise ValueError("cannot build the training data:\n  " + "\n  ".join(failures))
    if not any(len(d) for d in datasets):
        raise ValueError(f"{meta_path}: no usable samples")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ds = TrainDataset(datasets, stats, pad)
    if not cfg.use_packed_ds:
        return ds
    max_tokens = cfg.max_packed_tokens or cfg.max_seq_length
    tiles = [sum(s.tiles) or 1 for d in datasets for s in d.samples]
    order = list(range(len(ds)))
    random.Random(cfg.seed).shuffle(order)  # mix datasets within rows; fixed for the run
    return PackedDataset(
        ds, pack_rows(ds.lengths, tiles, max_tokens, cfg.num_images_expected, order)
    )


def collate(batch: list[dict], pad_token_id: int = 0) -> dict:
    """Pad and stack a list of dataset items (plain or packed); see the module docstring."""
    lengths = [len(x["input_ids"]) for x in batch]
    L, B = max(lengths), len(batch)
    input_ids = torch.full((B, L), pad_token_id, dtype=torch.long)
    labels = torch.full((B, L), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((B, L), dtype=torch.long)
    position_ids = torch.ones((B, L), dtype=torch.long)
    packed = "sample_lengths" in batch[0]
    sample_ids = torch.full((B, L), -1, dtype=torch.long)
    cu, max_seqlen, offset = [0], 0, 0
    for b, (x, n) in enumerate(zip(batch, lengths, strict=True)):
        input_ids[b, :n] = x["input_ids"]
        labels[b, :n] = x["labels"]
        attention_mask[b, :n] = 1
        parts = x["sample_lengths"] if packed else [n]
        start = 0
        for k, m in enumerate(parts):
            position_ids[b, start : start + m] = torch.arange(m)
            sample_ids[b, start : start + m] = k
            start += m
            cu.append(offset + start)
            max_seqlen = max(max_seqlen, m)
        if n < L:
            cu.append(offset + L)
        offset += L
    out = {
        "input_ids": input_ids,
        "labels": labels,
        "attention_mask": attention_mask,
        "position_ids": position_ids,
        "pixel_values": torch.cat([x["pixel_values"] for x in batch]),
        "image_flags": torch.cat([x["image_flags"] for x in batch]),
    }
    if packed:
        out["sample_ids"] = sample_ids
        out["cu_seqlens"] = torch.tensor(cu, dtype=torch.int32)
        out["max_seqlen"] = max_seqlen
    return out


def block_causal_mask(sample_ids: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """[B, L] sub-sample ids (-1 = padding) -> additive mask [B, 1, L, L]: a token attends to
    earlier tokens of its own sub-sample only (padding rows attend to themselves, so softmax
    stays finite)."""
    L = sample_ids.shape[1]
    same = sample_ids[:, :, None] == sample_ids[:, None, :]
    causal = torch.ones(L, L, dtype=torch.bool, device=sample_ids.device).tril()
    allowed = same & causal & (sample_ids[:, None, :] >= 0)
    allowed |= torch.eye(L, dtype=torch.bool, device=sample_ids.device)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=sample_ids.device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]
