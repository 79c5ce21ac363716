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

Each is capped at seq_len. Standard library only; the files are read once, by
launcher.config.datafacts.scan (the check stage's MetaRead holds what it found).
"""

from __future__ import annotations

from launcher.config.datafacts import Annotation, MetaRead, read_meta
from launcher.config.spec import JobSpec


def _scans(spec: JobSpec, meta: MetaRead) -> list[Annotation]:
    """The annotation files the job trains on, as the check stage scanned them."""
    d = spec.data
    if d.generate:
        return []
    if d.format == "llava_json":
        paths = [d.json_path] if d.json_path else []
    else:
        paths = [e["annotation"] for e in (meta.entries or {}).values() if isinstance(e, dict)]
    return [meta.annotations.get(p, Annotation()) for p in paths]


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
    scans = _scans(spec, meta or read_meta(spec))
    if scans and all(x.sizes is not None for x in scans):
        per_image = image_tokens(spec)
        lengths = [text + n * per_image for x in scans for text, n in x.sizes or ()]
        if lengths:
            n = min(max(lengths), cap)
            return n, (
                f"{n} tokens per sample (the longest of {len(lengths)} scanned samples, "
                f"{per_image} per image; batches pad to their longest)"
            )
    return cap, f"{cap} tokens per sample (seq_len: data lengths unknown here, the upper bound)"
