"""Tiny local tokenizers in the InternLM2 / Qwen2 / Phi-3 on-disk layouts, and one loader.

`python -c "from internvl_chat.tokenizer import save_tiny_tokenizer; save_tiny_tokenizer('OUT', 'qwen2')"`

`save_tiny_tokenizer(out_dir, family)` trains a small deterministic vocabulary from a built-in
English corpus (no network) and writes the files a real checkpoint of that family carries:

- ``internlm2``: sentencepiece ``tokenizer.model`` + ``tokenizer_config.json`` naming the
  remote-code ``InternLM2Tokenizer`` class (as OpenGVLab checkpoints do); BOS ``<s>`` = 1,
  EOS ``</s>`` = 2, ``add_bos_token`` true, chat tokens ``<|im_start|>`` / ``<|im_end|>``.
- ``qwen2``: byte-level BPE ``tokenizer.json`` + ``tokenizer_config.json``; no BOS;
  ``<|endoftext|>`` / ``<|im_start|>`` / ``<|im_end|>``.
- ``phi3``: Llama-style sentencepiece (dummy "▁" prefix, byte fallback) as a tokenizers
  ``tokenizer.json`` with ``tokenizer_class`` LlamaTokenizer, as Phi-3-mini ships; BOS ``<s>``
  = 1 added, EOS and pad ``<|endoftext|>``; the chat tokens ``<|system|>`` / ``<|user|>`` /
  ``<|assistant|>`` / ``<|end|>`` are added tokens that swallow the whitespace after them
  (``rstrip``), as in Phi-3's tokenizer.json.

Both already contain InternVL's nine special tokens, so adding them is a no-op
(``num_new_tokens == 0``, as with released checkpoints).

`load_tokenizer(path)` loads either layout through transformers' native, tokenizers-backed
classes without ``trust_remote_code``; it always returns a tokenizer that supports
``return_offsets_mapping`` (the data pipeline derives loss masks from character offsets).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

# Order matters: InternVL adds them in this order (internvl/train/constants.py).
INTERNVL_SPECIAL_TOKENS = (
    "<img>",
    "</img>",
    "<IMG_CONTEXT>",
    "<quad>",
    "</quad>",
    "<ref>",
    "</ref>",
    "<box>",
    "</box>",
)
IMG_START, IMG_END, IMG_CONTEXT = INTERNVL_SPECIAL_TOKENS[:3]

INTERNLM2_CHAT_TOKENS = ("<|im_start|>", "<|im_end|>")
QWEN2_CHAT_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
PHI3_CHAT_TOKENS = ("<|assistant|>", "<|end|>", "<|system|>", "<|user|>")
FAMILIES = ("internlm2", "qwen2", "phi3")
# Tokenizer classes that only exist as remote code; we load their files natively instead.
_REMOTE_SPM_CLASSES = {"InternLM2Tokenizer", "InternLM2TokenizerFast"}

# Words the synthetic data set uses; kept here so the tiny vocabulary covers them well.
COLOURS = ("red", "green", "blue", "yellow", "purple", "orange", "black", "white")
SHAPES = ("circle", "square", "triangle", "rectangle", "star", "cross")
_SENTENCES = (
    "What colour is the shape?",
    "What shape is this?",
    "How many images are there?",
    "Describe the image in one word.",
    "The shape in the picture is a small {colour} {shape}.",
    "The first image shows a {colour} {shape} and the second shows a {shape}.",
    "Answer the question with a single word.",
    "You are a helpful assistant that answers questions about pictures.",
    "Please describe this picture.",
    "What is the capital of France? Paris is the capital of France.",
    "Count from one to ten: one two three four five six seven eight nine ten.",
    "The quick brown fox jumps over the lazy dog.",
    "A model learns to read images and text together.",
    "Numbers like 0 1 2 3 4 5 6 7 8 9 and 448 appear in data.",
    "system user assistant: Image-1: Image-2: Frame-1:",
)


def _corpus() -> list[str]:
    lines = []
    for colour in COLOURS:
        for shape in SHAPES:
            for s in _SENTENCES:
                lines.append(s.format(colour=colour, shape=shape))
            lines.append(f"{colour}\n{shape}\n{colour} {shape}")
    return lines


def save_tiny_tokenizer(out_dir: str | os.PathLike, family: str) -> Path:
    """Write a tiny tokenizer of ``family`` ("internlm2" | "qwen2") into ``out_dir``.

    Deterministic: the same call always writes the same vocabulary. Returns ``out_dir``.
    """
    if family not in FAMILIES:
        raise ValueError(f"tokenizer family {family!r} is not one of {', '.join(FAMILIES)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if family == "internlm2":
        _save_internlm2(out)
    elif family == "phi3":
        _save_phi3(out)
    else:
        _save_qwen2(out)
    return out


def _added_tokens_decoder(ids_and_tokens) -> dict:
    return {
        str(i): {
            "content": tok,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "single_word": False,
            "special": True,
        }
        for i, tok in ids_and_tokens
    }


def _train_spm(vocab_size: int, add_dummy_prefix: bool, specials: list[str]) -> bytes:
    """A small BPE sentencepiece model of the built-in corpus (unk 0, <s> 1, </s> 2)."""
    import io

    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_corpus()),
        model_writer=model,
        model_type="bpe",
        vocab_size=vocab_size,
        hard_vocab_limit=False,
        byte_fallback=True,  # Chinese system prompts fall back to bytes, never <unk>
        normalization_rule_name="identity",  # keep "\n" and repeated spaces as they are
        remove_extra_whitespaces=False,
        add_dummy_prefix=add_dummy_prefix,
        split_digits=True,
        user_defined_symbols=specials,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        num_threads=1,
        minloglevel=2,
    )
    return model.getvalue()


def _save_internlm2(out: Path) -> None:
    import sentencepiece as spm

    specials = list(INTERNLM2_CHAT_TOKENS) + list(INTERNVL_SPECIAL_TOKENS)
    model = _train_spm(700, False, specials)
    (out / "tokenizer.model").write_bytes(model)
    sp = spm.SentencePieceProcessor(model_proto=model)
    config = {
        "tokenizer_class": "InternLM2Tokenizer",
        "auto_map": {
            "AutoTokenizer": [
                "tokenization_internlm2.InternLM2Tokenizer",
                "tokenization_internlm2_fast.InternLM2TokenizerFast",
            ]
        },
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": "</s>",
        "add_bos_token": True,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 1000000000000000019884624838656,
        "added_tokens_decoder": _added_tokens_decoder(
            [(0, "<unk>"), (1, "<s>"), (2, "</s>")] + [(sp.piece_to_id(t), t) for t in specials]
        ),
        "additional_special_tokens": specials,
    }
    _write_json(out / "tokenizer_config.json", config)
    _write_json(
        out / "special_tokens_map.json",
        {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "</s>"},
    )


def _save_phi3(out: Path) -> None:
    from tokenizers import AddedToken
    from transformers import LlamaTokenizer

    model = _train_spm(600, True, [])  # Llama-2 / Phi-3 vocabularies prefix "▁"
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "tokenizer.model").write_bytes(model)
        names = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
        _write_json(
            Path(tmp) / "tokenizer_config.json", {"tokenizer_class": "LlamaTokenizer", **names}
        )
        tok = LlamaTokenizer.from_pretrained(
            tmp, add_bos_token=True, add_eos_token=False, legacy=False, add_prefix_space=True
        )
    # Phi-3 appends its chat tokens after the sentencepiece vocabulary (ids 32000+ there).
    tok.add_tokens([AddedToken("<|endoftext|>", normalized=False, special=True)])
    tok.add_tokens(
        [AddedToken(t, rstrip=True, normalized=False, special=True) for t in PHI3_CHAT_TOKENS]
    )
    tok.add_tokens([AddedToken(t, normalized=False, special=True) for t in INTERNVL_SPECIAL_TOKENS])
    tok.eos_token = tok.pad_token = "<|endoftext|>"
    tok.model_max_length = 4096
    tok.save_pretrained(str(out))
    # as Phi-3-mini's tokenizer_config.json (loaders re-render the post-processor from these)
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg.update({"add_bos_token": True, "add_eos_token": False, "legacy": False})
    _write_json(cfg_path, cfg)


def _save_qwen2(out: Path) -> None:
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    specials = list(QWEN2_CHAT_TOKENS) + list(INTERNVL_SPECIAL_TOKENS)
    tok = Tokenizer(models.BPE())
    # Qwen2's split pattern: contractions, letters, single digits, punctuation, newlines, spaces.
    pattern = (
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
        r"|\s*[\r\n]+|\s+(?!\S)|\s+"
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=800,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    # Specials go after the learned vocabulary, as in Qwen2 (ids >= the BPE vocab).
    tok.add_special_tokens(specials)
    tok.save(str(out / "tokenizer.json"))
    config = {
        "tokenizer_class": "Qwen2Tokenizer",
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "errors": "replace",
        "split_special_tokens": False,
        "model_max_length": 32768,
        "added_tokens_decoder": _added_tokens_decoder([(tok.token_to_id(t), t) for t in specials]),
        "additional_special_tokens": specials[1:],
    }
    _write_json(out / "tokenizer_config.json", config)


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def load_tokenizer(path: str | os.PathLike, **kwargs):
    """Load the tokenizer in ``path`` (a checkpoint or tokenizer folder) without remote code.

    - ``tokenizer.json`` present: transformers' ``AutoTokenizer`` (tokenizers backend).
    - only a sentencepiece ``tokenizer.model`` whose config names a remote-code class
      (InternLM2): converted to a native ``LlamaTokenizer`` with the config's BOS/EOS,
      ``add_bos_token`` and special tokens; a leading space is added only if the
      sentencepiece model itself adds one.
    Extra ``kwargs`` go to ``from_pretrained`` (e.g. ``model_max_length``).
    """
    from transformers import AutoTokenizer, LlamaTokenizer

    path = Path(path)
    cfg_file = path / "tokenizer_config.json"
    cfg = json.loads(cfg_file.read_text(encoding="utf-8")) if cfg_file.exists() else {}
    kwargs.setdefault("add_eos_token", False)
    if (
        "add_bos_token" in cfg
    ):  # transformers 5 drops it from the config once add_eos_token is passed
        kwargs.setdefault("add_bos_token", cfg["add_bos_token"])
    if (path / "tokenizer.json").exists() and cfg.get("tokenizer_class") not in _REMOTE_SPM_CLASSES:
        tok = AutoTokenizer.from_pretrained(str(path), **kwargs)
    elif (path / "tokenizer.model").exists():
        tok = _load_spm_as_llama(path, cfg, LlamaTokenizer, kwargs)
    else:
        raise FileNotFoundError(
            f"{path}: no tokenizer.json or tokenizer.model (is this a model/tokenizer folder?)"
        )
    missing = [t for t in INTERNVL_SPECIAL_TOKENS if t not in tok.get_vocab()]
    if missing:
        # Checkpoints without them get them appended, as the official script does; the model
        # side must then resize embeddings (num_new_tokens > 0).
        tok.add_special_tokens(
            {"additional_special_tokens": missing}, replace_extra_special_tokens=False
        )
    return tok


def _load_spm_as_llama(path: Path, cfg: dict, cls, kwargs: dict):
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb2

    proto = pb2.ModelProto()
    proto.ParseFromString((path / "tokenizer.model").read_bytes())
    dummy_prefix = proto.normalizer_spec.add_dummy_prefix
    sp = spm.SentencePieceProcessor(model_file=str(path / "tokenizer.model"))
    # The remote class is not importable; copy the files to a folder whose config names a
    # native class so from_pretrained converts the sentencepiece model itself.
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(path / "tokenizer.model", Path(tmp) / "tokenizer.model")
        native = {
            k: v
            for k, v in cfg.items()
            if k not in ("auto_map", "tokenizer_class", "tokenizer_file", "added_tokens_decoder")
        }
        native["tokenizer_class"] = "LlamaTokenizer"
        _write_json(Path(tmp) / "tokenizer_config.json", native)
        opts = {
            "add_bos_token": cfg.get("add_bos_token", True),
            "add_prefix_space": dummy_prefix,
            "legacy": False,
        }
        opts.update(kwargs)
        tok = cls.from_pretrained(tmp, **opts)
    # Special tokens declared in the config (or user-defined in the model) stay atomic.
    declared = [v["content"] for v in cfg.get("added_tokens_decoder", {}).values()]
    declared += [
        p.piece for p in proto.pieces if p.type == pb2.ModelProto.SentencePiece.USER_DEFINED
    ]
    known = set(tok.all_special_tokens)
    extra = [t for t in dict.fromkeys(declared) if t not in known and sp.piece_to_id(t) != 0]
    if extra:
        tok.add_special_tokens(
            {"additional_special_tokens": extra}, replace_extra_special_tokens=False
        )
    tok.init_kwargs["name_or_path"] = str(path)
    return tok
