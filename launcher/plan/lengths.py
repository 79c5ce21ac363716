"""How long the samples of a job's data really are, for the memory estimate (docs/MEMORY.md).

Batches are padded to their longest sample, not to seq_len (InternVL's and XTuner's collators),
so the activations a step keeps follow the data. `sample_tokens(spec)` returns the tokens per
sample to budget and says where the number comes from, in this order:

1. `data.max_sample_tokens`, when the data config states it (a published or measured fact);
2. a scan of the annotation files readable here: the longest of the first samples (per-sample
   `length` where the file has it, as InternVL's group_by_length does, else UTF-8 bytes / 3 of
   the conversation text, about a token per CJK character and a little over one per English
   word piece) plus each image's tokens and ~16 template tokens per turn;
3. seq_len, the bound every sample is cut to.

Each is capped at seq_len. Standard library only; reads at most a few MB per file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from launcher.config.datafacts import MetaRead, read_meta
from launcher.config.spec import JobSpec

SCAN_SAMPLES = 2000
SCAN_BYTES = 8 << 20
TURN_TOKENS = 16


def _items(path: Path) -> list[dict[str, Any]]:
    """The first samples of a .jsonl file or of a JSON array, without reading it all."""
    with path.open("rb") as f:
        head = f.read(SCAN_BYTES).decode("utf-8", errors="replace")
    out: list[dict[str, Any]] = []
    stripped = head.lstrip()
    if stripped.startswith("["):
        dec, pos = json.JSONDecoder(), head.index("[") + 1
        while len(out) < SCAN_SAMPLES:
            while pos < len(head) and head[pos] in " \t\r\n,":
                pos += 1
            if pos >= len(head) or head[pos] == "]":
                break
            try:
                item, pos = dec.raw_decode(head, pos)
            except json.JSONDecodeError:
                break  # cut off at the read limit
            if isinstance(item, dict):
                out.append(item)
        return out
    for line in head.splitlines()[:SCAN_SAMPLES]:
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(item, dict):
            out.append(item)
    return out


def _tokens(item: dict[str, Any], image_tokens: int) -> int:
    turns = item.get("conversations") or []
    images = item.get("image")
    n_images = len(images) if isinstance(images, list) else (1 if images else 0)
    if isinstance(item.get("length"), int):
        text = item["length"]
    else:
        values = [str(t.get("value", "")).replace("<image>", "") for t in turns]
        text = sum(len(v.encode("utf-8")) for v in values) // 3 + TURN_TOKENS * len(turns)
    return text + n_images * image_tokens


def _annotations(spec: JobSpec, meta: MetaRead | None) -> list[Path]:
    d = spec.data
    if d.generate:
        return []
    if d.format == "llava_json":
        return [Path(d.json_path)] if d.json_path else []
    entries = (meta or read_meta(spec)).entries or {}
    return [Path(e["annotation"]) for e in entries.values() if isinstance(e, dict)]


def image_tokens(spec: JobSpec) -> int:
    """LLM tokens one sample's image becomes, at most (every tile of a dynamic-resolution image)."""
    m = spec.model
    return m.num_image_token * m.max_tiles


def sample_tokens(spec: JobSpec, meta: MetaRead | None = None) -> tuple[int, str]:
    """(tokens per sample to budget activations for, where that number comes from; `meta`:
    the launch's read of data.meta_file, read here when not given)."""
    cap = spec.seq_len
    d = spec.data
    if d.max_sample_tokens:
        n = min(d.max_sample_tokens, cap)
        return n, f"{n} tokens per sample (data.max_sample_tokens, the data's longest sample)"
    annotations = _annotations(spec, meta)
    files = [p for p in annotations if p.is_file() and os.access(p, os.R_OK)]
    if files and len(files) == len(annotations):
        per_image = image_tokens(spec)
        lengths = [_tokens(item, per_image) for p in files for item in _items(p)]
        if lengths:
            n = min(max(lengths), cap)
            return n, (
                f"{n} tokens per sample (the longest of {len(lengths)} scanned samples, "
                f"{per_image} per image; batches pad to their longest)"
            )
    return cap, f"{cap} tokens per sample (seq_len: data lengths unknown here, the upper bound)"
