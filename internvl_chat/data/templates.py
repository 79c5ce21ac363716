"""Conversation templates and their loss masks (spec §6). Tokenizer only, no torch.

Every template renders a conversation as a list of ``(text, supervised)`` segments; the
whole string is tokenized once and a token is supervised iff its first character lies in a
supervised segment. Supervised = each assistant answer plus its end-of-turn token
(``<|im_end|>`` / ``<|end|>``); never BOS, system, role headers, user turns, image tokens,
the newline after ``<|im_end|>`` (internvl2_5) or padding.

What a sample becomes follows the official code at the model's ``revision`` (``pin`` /
``head``, see ``internvl_chat.prompts``), including its edge cases; where the official code
would train on a silently broken sample (all labels masked, literal ``<image>`` text, a
crash that resamples) the sample is refused with a reason instead. docs/DIFFERENCES.md
lists each case; tests/test_official_tokens.py checks them against saved official output.
"""

from __future__ import annotations

from dataclasses import dataclass

from internvl_chat.prompts import REVISIONS, system_message
from internvl_chat.tokenizer import IMG_CONTEXT, IMG_END, IMG_START

IGNORE_INDEX = -100
IMAGE_PLACEHOLDER = "<image>"


@dataclass(frozen=True)
class Template:
    name: str
    system_header: str  # text before the system message
    user_header: str
    assistant_header: str
    end: str  # end-of-turn token, supervised after each answer
    after_end: str  # unsupervised text after every end token ("\n" for internvl2_5)
    strip_values: bool  # official preprocess .strip()s every value (internlm2-chat only)
    per_message: bool
    """internvl2_5: every message rendered on its own, any human/gpt order, a leading system
    turn allowed and a leading gpt turn kept. Otherwise FastChat's MPT style: strict
    alternation, a leading gpt turn dropped, an empty value rendered as its role only."""

    def default_system(self, revision: str = "head") -> str:
        """The official default system message at ``revision`` (internvl_chat.prompts)."""
        return system_message(self.name, revision)


TEMPLATES = {
    t.name: t
    for t in (
        Template("Hermes-2", "<|im_start|>system\n", "<|im_start|>user\n",
                 "<|im_start|>assistant\n", "<|im_end|>", "", False, False),
        Template("internlm2-chat", "<|im_start|>system\n", "<|im_start|>user\n",
                 "<|im_start|>assistant\n", "<|im_end|>", "", True, False),
        Template("phi3-chat", "<|system|>\n", "<|user|>\n", "<|assistant|>\n", "<|end|>", "",
                 False, False),
        Template("internvl2_5", "<|im_start|>system\n", "<|im_start|>user\n",
                 "<|im_start|>assistant\n", "<|im_end|>", "\n", False, True),
    )
}  # fmt: skip


# Official preprocess functions that split the prompt on the end-of-turn token.
_OFFICIAL_SPLITS_ON_END = frozenset({"Hermes-2", "phi3-chat"})


class SampleError(ValueError):
    """A sample that cannot be used (broken data); counted as skipped."""


class SampleDropped(ValueError):
    """A valid sample that does not fit (e.g. image tokens past max_seq_length); counted."""


def get_template(name: str, revision: str = "head") -> Template:
    if name not in TEMPLATES:
        raise ValueError(f"conv_style {name!r} is not one of {', '.join(TEMPLATES)}")
    if revision not in REVISIONS:
        raise ValueError(f"internvl_revision {revision!r} is not one of {', '.join(REVISIONS)}")
    system_message(name, revision)  # raises for internvl2_5 at pin
    return TEMPLATES[name]


def normalize_conversation(
    conversations, template: Template, num_images: int, insert_image: bool, revision: str = "head"
) -> tuple[str | None, list[tuple[str, str]]]:
    """Check roles and order; returns (system override, [(role, text)]), as the official
    dataset + preprocess functions at ``revision`` would see them.

    Order as the official code: with ``insert_image`` (a single-image sample, ``image`` a
    string) ``"<image>\\n"`` is prepended to the FIRST entry when it has none, whatever its
    role; then a leading gpt turn is dropped (MPT templates) or kept (internvl2_5).
    Raises SampleError naming every problem found.
    """
    if not isinstance(conversations, list) or not conversations:
        raise SampleError("'conversations' must be a non-empty list")
    problems = [p for k, msg in enumerate(conversations) for p in _value_problems(k, msg)]
    if problems:
        raise SampleError("; ".join(problems))
    msgs = [(m.get("from"), m["value"]) for m in conversations]
    if insert_image and IMAGE_PLACEHOLDER not in msgs[0][1]:
        msgs[0] = (msgs[0][0], f"{IMAGE_PLACEHOLDER}\n{msgs[0][1]}")
    system = None
    if msgs[0][0] == "system":
        if not template.per_message:
            problems.append(f"a system turn is only supported by internvl2_5, not {template.name}")
        system, msgs = msgs[0][1], msgs[1:]
    for k, (role, _) in enumerate(msgs):
        if role not in ("human", "gpt"):
            problems.append(
                f"conversations[{k + (system is not None)}]: unknown role {role!r} "
                "(expected human/gpt)"
            )
    if problems:
        raise SampleError("; ".join(problems))
    turns = [(r, v.strip() if template.strip_values else v) for r, v in msgs]
    dropped_gpt = False
    if template.per_message:
        if turns and turns[0][0] == "gpt" and IMAGE_PLACEHOLDER in turns[0][1] and insert_image:
            problems.append(
                "a leading gpt turn in a single-image sample: the official internvl2_5 code "
                "puts '<image>' into that answer"
            )
    elif turns and turns[0][0] == "gpt":
        turns, dropped_gpt = turns[1:], True
    # official internvl2_5 takes any order; we still refuse two turns of one role in a row
    first = turns[0][0] if turns and template.per_message else "human"
    for k, (role, _) in enumerate(turns):
        if (role == first) != (k % 2 == 0):
            order = "human, gpt" if first == "human" else "gpt, human"
            problems.append(f"turns must alternate {order}, ...")
            break
    if not template.per_message:
        empty = [k for k, (_, text) in enumerate(turns) if not text]
        if empty and (template.name != "internlm2-chat" or revision == "pin"):
            why = (
                "the pinned preprocess_internlm fails on it (value[0] of an empty string)"
                if template.name == "internlm2-chat"
                else "the official code renders no end token and masks the whole sample "
                "(tokenization mismatch)"
            )
            problems.append(f"empty {turns[empty[0]][0]} value in turn {empty[0]}: {why}")
    if turns and turns[-1][0] == "human" and template.name in _OFFICIAL_SPLITS_ON_END:
        problems.append(
            f"the conversation ends on a human turn: the official {template.name} code masks "
            "the whole sample (tokenization mismatch)"
        )
    if not any(role == "gpt" for role, _ in turns):
        problems.append(
            f"the conversation starts with its only gpt turn, which the {template.name} template "
            "drops (as the official code does): no assistant turn left to learn from"
            if dropped_gpt
            else "no assistant (gpt) turn to learn from"
        )
    if problems:
        raise SampleError("; ".join(problems))
    n_found = sum(text.count(IMAGE_PLACEHOLDER) for role, text in turns if role == "human")
    n_gpt = sum(text.count(IMAGE_PLACEHOLDER) for role, text in turns if role == "gpt")
    if n_found != num_images or n_gpt:
        raise SampleError(
            f"{n_found} <image> placeholder(s) in human turns for {num_images} image(s)"
            + (f" and {n_gpt} in gpt turns" if n_gpt else "")
        )
    return system, turns


def _value_problems(k: int, msg) -> list[str]:
    """Why conversations[k] cannot be used: not an object, a null or non-string value
    (official: a crash, a masked sample, or the literal text "None" trained with
    internvl2_5), or text that is not valid Unicode (a lone surrogate such as "\\ud800": the
    tokenizer raises and the official dataset resamples)."""
    if not isinstance(msg, dict) or "value" not in msg:
        return [f"conversations[{k}] must be an object with a string 'value'"]
    value = msg["value"]
    if value is None:
        return [f"conversations[{k}].value is null (the official code crashes on it, masks the "
                "sample or trains the literal text 'None', by template)"]  # fmt: skip
    if not isinstance(value, str):
        return [f"conversations[{k}].value must be a string, not {type(value).__name__}"]
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        bad = value[e.start : e.end].encode("unicode_escape").decode("ascii")
        return [f"conversations[{k}].value is not valid Unicode: lone surrogate {bad} at "
                f"character {e.start}"]  # fmt: skip
    return []


def official_masks(template: Template, turns: list[tuple[str, str]], tokenizer) -> str | None:
    """Why the official MPT-style preprocessing (Hermes-2, internlm2-chat, phi3-chat) would
    mask every label of these turns, or None. It counts the sample's length as its tokens
    that are not the pad token, and Hermes-2 / phi3-chat split the text on their end-of-turn
    token: a value holding the pad token's text (``</s>`` for InternLM2, ``<|endoftext|>``
    for Qwen2 / Phi-3) or that end token makes its count disagree ("tokenization mismatch").
    internvl2_5 tokenizes each message on its own and trains such text as written."""
    if template.per_message:
        return None
    marks = [m for m in (tokenizer.pad_token,) if m]
    if template.name in _OFFICIAL_SPLITS_ON_END:
        marks.append(template.end)
    for k, (role, text) in enumerate(turns):
        found = [m for m in marks if m in text]
        if found:
            return (
                f"{role} turn {k} contains {found[0]!r}: the official {template.name} code "
                "masks the whole sample (tokenization mismatch)"
            )
    return None


class ImageMark(str):
    """The ``<img></img>`` marker render() puts where an ``<image>`` placeholder was; encode()
    expands only these, so ``<img>`` / ``</img>`` written in the text stay plain tokens."""


IMAGE_MARK = ImageMark(IMG_START + IMG_END)


def render(template: Template, system: str, turns: list[tuple[str, str]]) -> list[tuple[str, bool]]:
    """Segments ``(text, supervised)``; ``<image>`` in turns is replaced by a compact
    ``<img></img>`` marker, expanded to the real image tokens after tokenization. An empty
    value in an MPT template renders as its role header alone (FastChat's ``if message``)."""
    t = template
    segs = [(f"{t.system_header}{system}{t.end}{t.after_end}", False)]
    for role, text in turns:
        header = t.user_header if role == "human" else t.assistant_header
        if not text and not t.per_message:
            segs.append((header, False))
        elif role == "human":
            parts = f"{header}{text}{t.end}{t.after_end}".split(IMAGE_PLACEHOLDER)
            for k, part in enumerate(parts):
                segs += [(IMAGE_MARK, False)] * (k > 0) + [(part, False)] * bool(part)
        else:
            segs.append((header, False))
            segs.append((f"{text}{t.end}", True))
            if t.after_end:
                segs.append((t.after_end, False))
    return segs


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    num_image_tokens: int
    truncated: bool


def encode(
    segments: list[tuple[str, bool]],
    tokenizer,
    image_tiles: list[int],
    tokens_per_tile: int,
    max_seq_length: int,
) -> Encoded:
    """Tokenize the rendered conversation, mask labels, expand the image markers into
    ``<img>`` + ``<IMG_CONTEXT>`` x (tokens_per_tile x tiles) + ``</img>`` and truncate.

    Raises SampleDropped when truncation would cut image tokens or leave nothing supervised.
    """
    text = "".join(s for s, _ in segments)
    supervised = bytearray(len(text))
    marks, pos = set(), 0
    for s, sup in segments:
        if sup:
            supervised[pos : pos + len(s)] = b"\x01" * len(s)
        if isinstance(s, ImageMark):
            marks.add(pos)
        pos += len(s)
    enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=True)
    ids = enc["input_ids"]
    start_id = tokenizer.convert_tokens_to_ids(IMG_START)
    context_id = tokenizer.convert_tokens_to_ids(IMG_CONTEXT)
    if context_id in ids:  # officially more image-context tokens than image features
        raise SampleError(f"the text itself contains {IMG_CONTEXT} tokens")
    input_ids, labels, ends = [], [], []
    for tok, (a, b) in zip(ids, enc["offset_mapping"], strict=True):
        input_ids.append(tok)
        labels.append(tok if b > a and supervised[a] else IGNORE_INDEX)
        if tok == start_id and a in marks and len(ends) < len(image_tiles):
            n = tokens_per_tile * image_tiles[len(ends)]
            input_ids.extend([context_id] * n)
            labels.extend([IGNORE_INDEX] * n)
            ends.append(len(input_ids))  # where this image's IMG_END goes
    if len(ends) != len(image_tiles):
        raise SampleError(f"{len(image_tiles)} image(s) but {len(ends)} image marker(s) tokenized")
    n_image_tokens = tokens_per_tile * sum(image_tiles)
    truncated = len(input_ids) > max_seq_length
    if truncated:
        last_img_end = max(ends, default=-1)
        if last_img_end >= max_seq_length:
            raise SampleDropped(
                f"image tokens end at position {last_img_end + 1} > max_seq_length "
                f"{max_seq_length} ({len(input_ids)} tokens in all)"
            )
        input_ids, labels = input_ids[:max_seq_length], labels[:max_seq_length]
    if all(label == IGNORE_INDEX for label in labels):
        raise SampleDropped(f"no supervised token within max_seq_length {max_seq_length}")
    return Encoded(input_ids, labels, n_image_tokens, truncated)
