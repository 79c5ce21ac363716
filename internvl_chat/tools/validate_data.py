"""`python -m internvl_chat.tools.validate_data META_JSON --model MODEL_DIR [--conv-style S --max-seq-length N --revision pin|head --system-message TEXT --max-bad-sample-ratio R]`

Checks a whole InternVL-format data set before a job is submitted and prints every problem
as ``file:line: reason`` (meta-file problems as ``meta.json: name: reason``): bad JSON,
missing or unreadable images, wrong roles / alternation, ``<image>`` count vs images, null
values or text that is not valid Unicode, samples the official code would not train (see
docs/DIFFERENCES.md), video samples, samples that would be truncated (dropped when image
tokens would be cut), non-.jsonl annotations. Exit status 1 if anything is wrong, else 0 with a
one-line summary; with --max-bad-sample-ratio R (the launcher passes data.max_bad_sample_ratio)
broken samples the trainer would skip are listed but block only when a dataset has more than R
of them.

Tiling and template come from MODEL_DIR/config.json (overridable by flags), the tokenizer
from MODEL_DIR. --revision (default head) checks the samples as the official code at that
revision treats them (pin = InternVL 1.5 era, seed 000); --system-message replaces the
template's system prompt (it changes lengths, hence truncation). No model weights are loaded; torch is imported only through transformers'
tokenizer loading.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from internvl_chat.data.config import DataConfig, model_data_settings
from internvl_chat.data.meta import parse_meta, read_lines, scan_sample
from internvl_chat.data.templates import SampleDropped, SampleError


def settings(model_dir, **overrides) -> DataConfig:
    """DataConfig from the model's config.json, then non-None ``overrides``."""
    merged = model_data_settings(model_dir)
    merged.update({k: v for k, v in overrides.items() if v is not None})
    return DataConfig.from_any(merged)


def load_model_tokenizer(model_dir):
    from internvl_chat.tokenizer import load_tokenizer

    model_dir = Path(model_dir)
    for cand in (model_dir, model_dir / "llm", model_dir / "language_model"):
        if (cand / "tokenizer.json").exists() or (cand / "tokenizer.model").exists():
            return load_tokenizer(cand)
    raise FileNotFoundError(f"{model_dir}: no tokenizer files (tokenizer.json / tokenizer.model)")


def validate(meta_path, model_dir, tokenizer=None, **overrides) -> list[str]:
    """Every problem of the data set as ``file:line: reason`` strings (empty: all good)."""
    return scan(meta_path, model_dir, tokenizer, **overrides)[0]


def scan(meta_path, model_dir, tokenizer=None, **overrides):
    """(problems, broken): every problem, and per meta entry (broken samples, lines), where
    broken samples are the ones the trainer skips and counts against max_bad_sample_ratio;
    broken is None when the settings or the meta file itself are wrong."""
    cfg = settings(model_dir, **overrides)
    problems = [f"settings: {p}" for p in cfg.problems()]
    if problems:
        return problems, None
    entries, problems = parse_meta(meta_path)
    broken = None if problems else {}
    tokenizer = tokenizer or load_model_tokenizer(model_dir)
    for entry in entries:
        lines = read_lines(entry)
        bad = 0
        for line, text in lines:
            try:
                info, _ = scan_sample(line, text, entry, cfg, tokenizer)
            except SampleDropped as e:
                problems.append(f"{entry.annotation}:{line}: dropped in training: {e}")
                continue
            except SampleError as e:
                problems.append(f"{entry.annotation}:{line}: {e}")
                bad += 1
                continue
            if info.truncated:
                problems.append(
                    f"{entry.annotation}:{line}: text would be truncated to max_seq_length "
                    f"{cfg.max_seq_length}"
                )
        if broken is not None:
            broken[entry.annotation] = (bad, len(lines))
    return problems, broken


def tolerated(broken, ratio: float | None) -> bool:
    """The trainer's rule: no dataset has more than `ratio` of its lines broken (None: none may)."""
    if broken is None or ratio is None:
        return False
    return all(not lines or bad / lines <= ratio for bad, lines in broken.values())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m internvl_chat.tools.validate_data")
    p.add_argument("meta_path")
    p.add_argument("--model", required=True, help="checkpoint folder (config.json, tokenizer)")
    p.add_argument("--conv-style")
    p.add_argument("--max-seq-length", type=int)
    p.add_argument("--max-dynamic-patch", type=int)
    p.add_argument("--force-image-size", type=int)
    p.add_argument("--revision", choices=["pin", "head"], help="official code revision (head)")
    p.add_argument("--system-message", help="system prompt (default: the template's at --revision)")
    p.add_argument("--ok-file", help="touch this file when the data has no problem (job steps)")
    p.add_argument(
        "--max-bad-sample-ratio",
        type=float,
        help="accept the data when no dataset has a larger share of broken samples (the "
        "trainer skips those); truncated and dropped samples never block (default: none may)",
    )
    a = p.parse_args(argv)
    problems, broken = scan(
        a.meta_path,
        a.model,
        None,
        conv_style=a.conv_style,
        max_seq_length=a.max_seq_length,
        max_dynamic_patch=a.max_dynamic_patch,
        force_image_size=a.force_image_size,
        internvl_revision=a.revision,
        system_message=a.system_message,
    )
    for line in problems:
        print(line)
    ok = not problems or tolerated(broken, a.max_bad_sample_ratio)
    if not ok:
        print(f"{len(problems)} problem(s) in {a.meta_path}", file=sys.stderr)
        return 1
    bad = sum(b for b, _ in (broken or {}).values())
    within = f" (max bad sample ratio {a.max_bad_sample_ratio})" if bad else ""
    print(
        f"{a.meta_path}: OK{f', {bad} broken sample(s) the trainer skips' if bad else ''}{within}"
    )
    if a.ok_file:
        Path(a.ok_file).parent.mkdir(parents=True, exist_ok=True)
        Path(a.ok_file).touch()
    return 0


if __name__ == "__main__":
    sys.exit(main())
