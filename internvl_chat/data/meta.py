"""Meta JSON (spec §5.1), annotation lines (§5.2) and the per-sample scan. No torch.

The scan opens each image's header (size only), plans its tiles and tokenizes the text, so
every sample's exact length is known before training: truncation drops, broken samples and
the lengths used by group_by_length / packing all come from it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from internvl_chat.data.config import DataConfig
from internvl_chat.data.templates import (
    Encoded,
    SampleError,
    encode,
    get_template,
    normalize_conversation,
    official_masks,
    render,
)
from internvl_chat.data.tiling import plan_tiles
from internvl_chat.tokenizer import IMG_END

TEXT_ONLY_SIZE = (224, 224)  # the white dummy image of text-only samples


@dataclass(frozen=True)
class MetaEntry:
    name: str
    root: str
    annotation: Path
    data_augment: bool
    repeat_time: float
    max_dynamic_patch: int | None


def load_meta(meta_path: str | os.PathLike) -> list[MetaEntry]:
    """Parse a meta file; raises ValueError listing every problem (see parse_meta)."""
    entries, problems = parse_meta(meta_path)
    if problems:
        raise ValueError("invalid meta file:\n  " + "\n  ".join(problems))
    return entries


def parse_meta(meta_path: str | os.PathLike) -> tuple[list[MetaEntry], list[str]]:
    """(valid entries, problems of the others). Relative ``root`` and ``annotation`` paths
    are resolved against the meta file's folder."""
    meta_path = Path(meta_path)
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        return [], [f"{meta_path}: cannot read meta JSON: {e}"]
    if not isinstance(meta, dict) or not meta:
        return [], [f"{meta_path}: must be a non-empty JSON object {{name: {{...}}}}"]
    base = meta_path.resolve().parent
    entries, problems = [], []
    for name, d in meta.items():
        where = f"{meta_path}: {name}"
        if not isinstance(d, dict):
            problems.append(f"{where}: must be an object")
            continue
        mine = [
            f"{where}: missing '{k}'" for k in ("root", "annotation", "repeat_time") if k not in d
        ]
        ann = d.get("annotation")
        if isinstance(ann, str) and not ann.endswith(".jsonl"):
            mine.append(f"{where}.annotation: {ann!r} is not a .jsonl file")
        elif isinstance(ann, str) and not (base / ann).is_file():
            mine.append(f"{where}.annotation: {base / ann} does not exist")
        rt = d.get("repeat_time")
        if rt is not None and (
            not isinstance(rt, int | float) or rt <= 0 or (rt > 1 and rt != int(rt))
        ):
            mine.append(f"{where}.repeat_time: {rt!r} must be > 0, and an integer when > 1")
        mdp = d.get("max_dynamic_patch")
        if mdp is not None and (not isinstance(mdp, int) or mdp < 1):
            mine.append(f"{where}.max_dynamic_patch: {mdp!r} must be an integer >= 1")
        problems += mine
        if not mine:
            root = d["root"] if d["root"].startswith("s3://") else str(base / d["root"])
            augment = bool(d.get("data_augment", False))
            entries.append(MetaEntry(name, root, base / ann, augment, rt, mdp))
    return entries, problems


def read_lines(entry: MetaEntry) -> list[tuple[int, str]]:
    """(1-based line number, text) of the annotation lines this entry uses: the first
    ``int(N * repeat_time)`` when repeat_time < 1 (the head, not a random subset); blank lines
    are ignored. Repetition (> 1) is applied by the caller on the scanned samples."""
    with open(entry.annotation, encoding="utf-8") as f:
        lines = [(i, s) for i, s in enumerate(f, start=1) if s.strip()]
    if entry.repeat_time < 1:
        lines = lines[: int(len(lines) * entry.repeat_time)]
    return lines


def image_path(root: str, rel: str) -> str:
    return root + rel if root.startswith("s3://") else os.path.join(root, rel)


@dataclass
class SampleInfo:
    """What the scan learned about one annotation line."""

    line: int
    row: dict
    images: list[str] = field(default_factory=list)  # absolute paths
    sizes: list[tuple[int, int]] = field(default_factory=list)  # (width, height)
    grids: list[tuple[int, int]] = field(default_factory=list)  # (cols, rows)
    tiles: list[int] = field(default_factory=list)
    length: int = 0  # tokens after truncation
    num_image_tokens: int = 0
    truncated: bool = False

    @property
    def text_only(self) -> bool:
        return not self.images


def parse_line(text: str) -> dict:
    try:
        row = json.loads(text.strip())
    except json.JSONDecodeError as e:
        raise SampleError(f"bad JSON: {e}") from e
    if not isinstance(row, dict):
        raise SampleError("line is not a JSON object")
    return row


class VideoNotSupported(SampleError):
    pass


def scan_sample(
    line: int, text: str, entry: MetaEntry, cfg: DataConfig, tokenizer
) -> tuple[SampleInfo, Encoded]:
    """Parse, check and encode one line. Raises SampleError (broken) or SampleDropped."""
    return scan_row(line, parse_line(text), entry, cfg, tokenizer)


def conversation_of(row: dict, cfg: DataConfig) -> tuple[list[str], str | None, list]:
    """(image paths as written, system override, turns) of one parsed sample: roles,
    placeholders and the official edge cases checked (raises SampleError)."""
    if row.get("video"):
        raise VideoNotSupported("video samples are not supported by internvl_chat")
    image = row.get("image")
    if isinstance(image, str):
        images = [image] if image else []
    elif isinstance(image, list) and all(isinstance(p, str) and p for p in image):
        images = image
    elif image is None:
        images = []
    else:
        raise SampleError("'image' must be a path or a list of non-empty paths")
    for path in images:
        if not _is_unicode(path):
            raise SampleError(f"image path {path!r} is not valid Unicode (a lone surrogate)")
    template = get_template(cfg.conv_style, cfg.internvl_revision)
    # official: only a string `image` gets "<image>\n" inserted; a list must carry its tags
    system, turns = normalize_conversation(
        row.get("conversations"),
        template,
        len(images),
        insert_image=isinstance(image, str) and bool(image),
        revision=cfg.internvl_revision,
    )
    return images, system, turns


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def encode_conversation(
    system: str | None, turns: list, tiles: list[int], cfg: DataConfig, tokenizer
) -> Encoded:
    """Render and tokenize checked turns (see conversation_of) with ``tiles`` per image."""
    template = get_template(cfg.conv_style, cfg.internvl_revision)
    why = official_masks(template, turns, tokenizer)
    if why:
        raise SampleError(why)
    if system is None:
        system = cfg.effective_system_message
    segments = render(template, system, turns)
    enc = encode(segments, tokenizer, tiles, cfg.num_image_token, cfg.max_seq_length)
    n_end = enc.input_ids.count(tokenizer.convert_tokens_to_ids(IMG_END))
    if tiles and cfg.internvl_revision == "head" and n_end != len(tiles):
        raise SampleError(
            f"{n_end - len(tiles)} literal {IMG_END} in the text beside {len(tiles)} image(s): "
            "the official code at head asserts one per image and resamples"
        )
    return enc


def scan_row(
    line: int, row: dict, entry: MetaEntry, cfg: DataConfig, tokenizer
) -> tuple[SampleInfo, Encoded]:
    """Check and encode one parsed sample (see scan_sample)."""
    images, system, turns = conversation_of(row, cfg)
    info = SampleInfo(line, row)
    max_patch = entry.max_dynamic_patch or cfg.max_dynamic_patch
    per_image = max(1, max_patch // len(images)) if images else 1
    for rel in images:
        path = image_path(entry.root, rel)
        try:
            with Image.open(path) as im:
                size = im.size
        except FileNotFoundError as e:
            raise SampleError(f"image not found: {path}") from e
        except OSError as e:
            raise SampleError(f"unreadable image {path}: {e}") from e
        grid, n = plan_tiles(
            size,
            dynamic=cfg.dynamic_image_size,
            min_num=cfg.min_dynamic_patch,
            max_num=per_image,
            image_size=cfg.force_image_size,
            use_thumbnail=cfg.use_thumbnail,
        )
        info.images.append(path)
        info.sizes.append(size)
        info.grids.append(grid)
        info.tiles.append(n)
    enc = encode_conversation(system, turns, info.tiles, cfg, tokenizer)
    info.length, info.num_image_tokens, info.truncated = (
        len(enc.input_ids),
        enc.num_image_tokens,
        enc.truncated,
    )
    return info, enc
