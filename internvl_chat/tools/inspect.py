"""`python -m internvl_chat.tools.inspect META_JSON --model MODEL_DIR --index N [--json] [--revision pin|head] [--system-message TEXT]`

Shows how sample N (0-based, over the meta entries in order, after repeat_time, as in
training) is processed: per image its size [width, height], tile grid [columns, rows] and
tile count (thumbnail included), the number of image tokens, input_ids and labels. Tiling
settings come from MODEL_DIR/config.json and the meta entry (its max_dynamic_patch), the
template from config.json's ``template`` unless --conv-style is given. --revision (default
head) picks the official code whose system message and edge cases apply (pin = the
InternVL 1.5 era, seed 000); --system-message replaces the system prompt.

With --json one JSON object is printed; otherwise a readable view in which supervised spans
are wrapped in [[...]] and runs of <IMG_CONTEXT> are collapsed. A sample that training would
skip or drop prints ``error: FILE:LINE: reason`` (validate_data's words) and exits 1.
"""

from __future__ import annotations

import argparse
import json
import sys

from internvl_chat.data.meta import load_meta, read_lines, scan_sample
from internvl_chat.data.templates import IGNORE_INDEX, SampleDropped, SampleError
from internvl_chat.tokenizer import IMG_CONTEXT
from internvl_chat.tools.validate_data import load_model_tokenizer, settings


def inspect_sample(meta_path, model_dir, index: int, tokenizer=None, **overrides) -> dict:
    """The processed sample ``index`` as a dict (see module docstring)."""
    cfg = settings(model_dir, **overrides)
    tokenizer = tokenizer or load_model_tokenizer(model_dir)
    remaining = index
    for entry in load_meta(meta_path):
        lines = read_lines(entry)
        repeat = int(entry.repeat_time) if entry.repeat_time > 1 else 1
        if remaining < len(lines) * repeat:
            line, text = lines[remaining % len(lines)]
            where = f"{entry.annotation}:{line}"
            try:
                info, enc = scan_sample(line, text, entry, cfg, tokenizer)
            except SampleDropped as e:  # the same words as validate_data
                raise SampleDropped(f"{where}: dropped in training: {e}") from e
            except SampleError as e:
                raise SampleError(f"{where}: {e}") from e
            return {
                "dataset": entry.name,
                "annotation": str(entry.annotation),
                "line": line,
                "conv_style": cfg.conv_style,
                "internvl_revision": cfg.internvl_revision,
                "system_message": cfg.effective_system_message,
                "tokens_per_tile": cfg.num_image_token,
                "images": [
                    {"path": p, "size": list(s), "grid": list(g), "num_tiles": n}
                    for p, s, g, n in zip(
                        info.images, info.sizes, info.grids, info.tiles, strict=True
                    )
                ],
                "num_image_tokens": enc.num_image_tokens,
                "num_tokens": len(enc.input_ids),
                "num_supervised": sum(x != IGNORE_INDEX for x in enc.labels),
                "truncated": enc.truncated,
                "input_ids": enc.input_ids,
                "labels": enc.labels,
            }
        remaining -= len(lines) * repeat
    raise IndexError(f"--index {index} is past the end ({index - remaining} samples)")


def render_view(sample: dict, tokenizer) -> str:
    """Readable text: supervised runs in [[...]], <IMG_CONTEXT> runs as <IMG_CONTEXT>xN."""
    ctx = tokenizer.convert_tokens_to_ids(IMG_CONTEXT)
    out, run, k = [], [], 0
    ids, labels = sample["input_ids"], sample["labels"]
    while k < len(ids):
        if ids[k] == ctx:
            n = 0
            while k < len(ids) and ids[k] == ctx:
                n, k = n + 1, k + 1
            out.append(f"{IMG_CONTEXT}x{n}")
            continue
        sup = labels[k] != IGNORE_INDEX
        j = k
        while j < len(ids) and ids[j] != ctx and (labels[j] != IGNORE_INDEX) == sup:
            j += 1
        run = tokenizer.decode(ids[k:j])
        out.append(f"[[{run}]]" if sup else run)
        k = j
    head = [
        f"{sample['dataset']} {sample['annotation']}:{sample['line']} "
        f"({sample['conv_style']}, revision {sample['internvl_revision']})"
    ]
    for im in sample["images"]:
        head.append(
            f"  image {im['path']}: size {im['size'][0]}x{im['size'][1]}, grid "
            f"{im['grid'][0]}x{im['grid'][1]}, {im['num_tiles']} tile(s)"
        )
    head.append(
        f"  {sample['num_tokens']} tokens, {sample['num_image_tokens']} image tokens "
        f"({sample['tokens_per_tile']} per tile), {sample['num_supervised']} supervised"
        + (", truncated" if sample["truncated"] else "")
    )
    return "\n".join(head) + "\n" + "".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m internvl_chat.tools.inspect")
    p.add_argument("meta_path")
    p.add_argument("--model", required=True)
    p.add_argument("--index", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.add_argument("--conv-style")
    p.add_argument("--max-seq-length", type=int)
    p.add_argument("--revision", choices=["pin", "head"], help="official code revision (head)")
    p.add_argument("--system-message", help="system prompt (default: the template's at --revision)")
    a = p.parse_args(argv)
    tokenizer = load_model_tokenizer(a.model)
    try:
        sample = inspect_sample(
            a.meta_path,
            a.model,
            a.index,
            tokenizer,
            conv_style=a.conv_style,
            max_seq_length=a.max_seq_length,
            internvl_revision=a.revision,
            system_message=a.system_message,
        )
    except (SampleError, SampleDropped, IndexError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(sample) if a.json else render_view(sample, tokenizer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
