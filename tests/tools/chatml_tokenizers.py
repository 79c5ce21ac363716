"""Tiny Qwen2.5 / Qwen3 tokenizers, as InternVL2.5/3 (Qwen2.5) and InternVL3.5 (Qwen3) ship them.

`save_chatml_tokenizer(out_dir, "qwen2_5" | "qwen3")` takes the byte-level BPE of the project's
tiny Qwen2 tokenizer (``internvl_chat.tokenizer.save_tiny_tokenizer(..., "qwen2")``) and writes
it with the added tokens of the real family, in the real order and with the real ``special``
flags, right after the BPE vocabulary, then InternVL's nine tokens after them (as InternVL's
checkpoints append them): Qwen2.5 has 22 added tokens (``<|endoftext|>`` .. ``<|file_sep|>``,
the tool-call and FIM ones not special), Qwen3 four more (``<tool_response>``,
``</tool_response>``, ``<think>``, ``</think>``, not special). Both normalise with NFC, add no
BOS, and end turns with ``<|im_end|>`` (the instruct models' EOS); pad is ``<|endoftext|>``.

Used by tests/tools/gen_official_tokens.py and tests/test_official_tokens.py only: model
families and their make_tiny support live in internvl_chat.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

QWEN2_5_ADDED = (
    ("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True),
    ("<|object_ref_start|>", True), ("<|object_ref_end|>", True), ("<|box_start|>", True),
    ("<|box_end|>", True), ("<|quad_start|>", True), ("<|quad_end|>", True),
    ("<|vision_start|>", True), ("<|vision_end|>", True), ("<|vision_pad|>", True),
    ("<|image_pad|>", True), ("<|video_pad|>", True), ("<tool_call>", False),
    ("</tool_call>", False), ("<|fim_prefix|>", False), ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False), ("<|fim_pad|>", False), ("<|repo_name|>", False),
    ("<|file_sep|>", False),
)  # fmt: skip
QWEN3_EXTRA = (
    ("<tool_response>", False), ("</tool_response>", False), ("<think>", False),
    ("</think>", False),
)  # fmt: skip
FAMILIES = {"qwen2_5": QWEN2_5_ADDED, "qwen3": QWEN2_5_ADDED + QWEN3_EXTRA}


def save_chatml_tokenizer(out_dir: str | os.PathLike, family: str) -> Path:
    """Write a tiny ``family`` ("qwen2_5" | "qwen3") tokenizer into ``out_dir``; returns it."""
    from internvl_chat.tokenizer import INTERNVL_SPECIAL_TOKENS, save_tiny_tokenizer

    out = Path(out_dir)
    base = save_tiny_tokenizer(out, "qwen2")
    data = json.loads((base / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = data["model"]["vocab"]
    added = list(FAMILIES[family]) + [(t, True) for t in INTERNVL_SPECIAL_TOKENS]
    data["added_tokens"] = [
        {"id": len(vocab) + k, "content": t, "single_word": False, "lstrip": False,
         "rstrip": False, "normalized": False, "special": special}
        for k, (t, special) in enumerate(added)
    ]  # fmt: skip
    data["normalizer"] = {"type": "NFC"}
    (out / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    cfg = json.loads((base / "tokenizer_config.json").read_text(encoding="utf-8"))
    cfg["added_tokens_decoder"] = {
        str(t["id"]): {k: t[k] for k in ("content", "lstrip", "normalized", "rstrip",
                                         "single_word", "special")}
        for t in data["added_tokens"]
    }  # fmt: skip
    cfg["additional_special_tokens"] = [
        t for t, special in added if special and t != "<|endoftext|>"
    ]
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
    return out
