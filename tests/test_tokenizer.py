"""Tiny tokenizers: layouts, special tokens, BOS behaviour, loading without remote code."""

import json

import pytest

from internvl_chat.tokenizer import INTERNVL_SPECIAL_TOKENS, load_tokenizer, save_tiny_tokenizer

CHAT = "<|im_start|>user\n<img><IMG_CONTEXT></img>\nWhat colour is the shape?<|im_end|>你好"


@pytest.fixture(scope="module", params=["internlm2", "qwen2"])
def tiny(request, tmp_path_factory):
    family = request.param
    out = save_tiny_tokenizer(tmp_path_factory.mktemp(family), family)
    return family, out, load_tokenizer(out)


def test_layout_on_disk(tiny):
    family, out, _ = tiny
    cfg = json.loads((out / "tokenizer_config.json").read_text())
    if family == "internlm2":
        assert (out / "tokenizer.model").exists() and not (out / "tokenizer.json").exists()
        assert cfg["tokenizer_class"] == "InternLM2Tokenizer" and cfg["add_bos_token"] is True
    else:
        assert (out / "tokenizer.json").exists() and cfg["bos_token"] is None


def test_special_tokens_already_present(tiny):
    family, _, tok = tiny
    ids = [tok.convert_tokens_to_ids(t) for t in INTERNVL_SPECIAL_TOKENS]
    assert ids == sorted(ids) and len(set(ids)) == 9  # present, in InternVL's order
    assert tok.unk_token_id not in ids
    n_new = tok.add_special_tokens(
        {"additional_special_tokens": list(INTERNVL_SPECIAL_TOKENS)},
        replace_extra_special_tokens=False,
    )
    assert n_new == 0
    assert 200 <= len(tok) <= 1000


def test_encoding_bos_and_atomic_specials(tiny):
    family, _, tok = tiny
    enc = tok(CHAT, return_offsets_mapping=True)
    pieces = tok.convert_ids_to_tokens(enc["input_ids"])
    if family == "internlm2":
        assert (tok.bos_token_id, tok.eos_token_id) == (1, 2)
        assert enc["input_ids"][0] == 1 and pieces[1] == "<|im_start|>"
    else:
        assert tok.bos_token_id is None and pieces[0] == "<|im_start|>"
        assert tok.eos_token == "<|im_end|>"
    for special in ("<|im_start|>", "<img>", "<IMG_CONTEXT>", "</img>", "<|im_end|>"):
        assert special in pieces
    assert pieces[-1] != "</s>"  # no EOS appended (add_eos_token is off)
    # Round trip, including bytes outside the tiny vocabulary.
    assert tok.decode(enc["input_ids"], skip_special_tokens=False).endswith(CHAT)


def test_deterministic(tmp_path, tiny):
    family, out, _ = tiny
    again = save_tiny_tokenizer(tmp_path, family)
    name = "tokenizer.model" if family == "internlm2" else "tokenizer.json"
    assert (again / name).read_bytes() == (out / name).read_bytes()


def test_unknown_family_and_missing_files(tmp_path):
    with pytest.raises(ValueError, match="llama"):
        save_tiny_tokenizer(tmp_path, "llama")
    with pytest.raises(FileNotFoundError, match="no tokenizer.json or tokenizer.model"):
        load_tokenizer(tmp_path)


def test_phi3_family(tmp_path):
    """Phi-3-mini's layout: a Llama-style tokenizer.json, BOS added, <|endoftext|> as EOS and
    pad, chat tokens that swallow the whitespace after them (rstrip), as phi3-chat needs."""
    out = save_tiny_tokenizer(tmp_path / "phi3", "phi3")
    cfg = json.loads((out / "tokenizer_config.json").read_text())
    assert (out / "tokenizer.json").exists() and cfg["tokenizer_class"] == "LlamaTokenizer"
    tok = load_tokenizer(out)
    assert tok.bos_token == "<s>" and tok.eos_token == tok.pad_token == "<|endoftext|>"
    enc = tok("<|user|>\n<img></img>\nWhat colour?<|end|><|assistant|>\n red<|end|>")
    pieces = tok.convert_ids_to_tokens(enc["input_ids"])
    assert pieces[:3] == ["<s>", "<|user|>", "<img>"]  # "\n" after <|user|> is absorbed
    assert pieces[-3:] == ["<|assistant|>", "red", "<|end|>"]
    assert tok.convert_ids_to_tokens(tok("What colour")["input_ids"])[1] == "▁What"
    ids = [tok.convert_tokens_to_ids(t) for t in INTERNVL_SPECIAL_TOKENS]
    assert len(set(ids)) == 9 and tok.unk_token_id not in ids
    again = save_tiny_tokenizer(tmp_path / "again", "phi3")
    assert (again / "tokenizer.json").read_bytes() == (out / "tokenizer.json").read_bytes()
