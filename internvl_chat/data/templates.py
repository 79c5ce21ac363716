"""Conversation templates and their loss masks (spec §6). Tokenizer only, no torch.

Every template renders a conversation as a list of ``(text, supervised)`` segments; the
whole string is tokenized once and a token is supervised iff its first character lies in a
supervised segment. Supervised = each assistant answer plus its end-of-turn token
(``<|im_end|>`` / ``<|end|>``); never BOS, system, role headers, user turns, image tokens,
the newline after ``<|im_end|>`` (internvl2_5) or padding.
"""

from __future__ import annotations

from dataclasses import dataclass

from internvl_chat.tokenizer import IMG_CONTEXT, IMG_END, IMG_START

IGNORE_INDEX = -100
IMAGE_PLACEHOLDER = "<image>"

_HEAD_SYSTEM = (
    "你是由上海人工智能实验室联合商汤科技开发的书生多模态大模型，英文名叫InternVL, "
    "是一个有用无害的人工智能助手。"
)
_INTERNVL2_5_SYSTEM = (
    "你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的"
    "多模态大语言模型。"
)
# Default system messages of the pinned (2024-06) code, for checkpoints of that era.
PIN_SYSTEM = {
    "Hermes-2": "Answer the questions.",
    "internlm2-chat": "You are an AI assistant whose name is InternLM (书生·浦语).",
    "phi3-chat": "You are an AI assistant whose name is Phi-3.",
}


@dataclass(frozen=True)
class Template:
    name: str
    system_header: str  # text before the system message
    user_header: str
    assistant_header: str
    end: str  # end-of-turn token, supervised after each answer
    after_end: str  # unsupervised text after every end token ("\n" for internvl2_5)
    default_system: str
    strip_values: bool
    allows_system_turn: bool  # a leading {"from": "system"} entry overrides the default


TEMPLATES = {
    t.name: t
    for t in (
        Template("Hermes-2", "<|im_start|>system\n", "<|im_start|>user\n",
                 "<|im_start|>assistant\n", "<|im_end|>", "", _HEAD_SYSTEM, True, False),
        Template("internlm2-chat", "<|im_start|>system\n", "<|im_start|>user\n",
                 "<|im_start|>assistant\n", "<|im_end|>", "", _HEAD_SYSTEM, True, False),
        Template("phi3-chat", "<|system|>\n", "<|user|>\n", "<|assistant|>\n", "<|end|>", "",
                 _HEAD_SYSTEM, True, False),
        Template("internvl2_5", "<|im_start|>system\n", "<|im_start|>user\n",
                 "<|im_start|>assistant\n", "<|im_end|>", "\n", _INTERNVL2_5_SYSTEM, False, True),
    )
}  # fmt: skip


class SampleError(ValueError):
    """A sample that cannot be used (broken data); counted as skipped."""


class SampleDropped(ValueError):
    """A valid sample that does not fit (e.g. image tokens past max_seq_length); counted."""


def get_template(name: str) -> Template:
    if name not in TEMPLATES:
        raise ValueError(f"conv_style {name!r} is not one of {', '.join(TEMPLATES)}")
    return TEMPLATES[name]


def normalize_conversation(
    conversations, template: Template, num_images: int, insert_image: bool
) -> tuple[str | None, list[tuple[str, str]]]:
    """Check roles and alternation; returns (system override, [(role, text)]).

    A leading gpt turn is dropped (as the reference does). With ``insert_image`` (single-image
    samples) ``"<image>\\n"`` is prepended to the first human turn when it has none.
    Raises SampleError naming every problem found.
    """
    if not isinstance(conversations, list) or not conversations:
        raise SampleError("'conversations' must be a non-empty list")
    problems, turns, system = [], [], None
    for k, msg in enumerate(conversations):
        if not isinstance(msg, dict) or not isinstance(msg.get("value"), str):
            problems.append(f"conversations[{k}] must be an object with a string 'value'")
            continue
        role = msg.get("from")
        if role == "system" and k == 0:
            if not template.allows_system_turn:
                problems.append(
                    f"a system turn is only supported by internvl2_5, not {template.name}"
                )
            system = msg["value"]
            continue
        if role not in ("human", "gpt"):
            problems.append(f"conversations[{k}]: unknown role {role!r} (expected human/gpt)")
            continue
        value = msg["value"].strip() if template.strip_values else msg["value"]
        turns.append((role, value))
    if turns and turns[0][0] == "gpt":
        turns = turns[1:]
    for k, (role, _) in enumerate(turns):
        if role != ("human" if k % 2 == 0 else "gpt"):
            problems.append("turns must alternate human, gpt, human, ...")
            break
    if not any(role == "gpt" for role, _ in turns):
        problems.append("no assistant (gpt) turn to learn from")
    if problems:
        raise SampleError("; ".join(problems))
    if insert_image and IMAGE_PLACEHOLDER not in turns[0][1]:
        turns[0] = ("human", f"{IMAGE_PLACEHOLDER}\n{turns[0][1]}")
    n_found = sum(text.count(IMAGE_PLACEHOLDER) for role, text in turns if role == "human")
    n_gpt = sum(text.count(IMAGE_PLACEHOLDER) for role, text in turns if role == "gpt")
    if n_found != num_images or n_gpt:
        raise SampleError(
            f"{n_found} <image> placeholder(s) in human turns for {num_images} image(s)"
            + (f" and {n_gpt} in gpt turns" if n_gpt else "")
        )
    return system, turns


def render(template: Template, system: str, turns: list[tuple[str, str]]) -> list[tuple[str, bool]]:
    """Segments ``(text, supervised)``; ``<image>`` is replaced by a compact ``<img></img>``
    marker, expanded to the real image tokens after tokenization."""
    t = template
    segs = [(f"{t.system_header}{system}{t.end}{t.after_end}", False)]
    for role, text in turns:
        text = text.replace(IMAGE_PLACEHOLDER, IMG_START + IMG_END)
        if role == "human":
            segs.append((f"{t.user_header}{text}{t.end}{t.after_end}", False))
        else:
            segs.append((t.assistant_header, False))
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
    pos = 0
    for s, sup in segments:
        if sup:
            supervised[pos : pos + len(s)] = b"\x01" * len(s)
        pos += len(s)
    enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=True)
    ids = enc["input_ids"]
    start_id = tokenizer.convert_tokens_to_ids(IMG_START)
    context_id = tokenizer.convert_tokens_to_ids(IMG_CONTEXT)
    end_id = tokenizer.convert_tokens_to_ids(IMG_END)
    if ids.count(start_id) != len(image_tiles) or ids.count(end_id) != len(image_tiles):
        raise SampleError(f"the text itself contains {IMG_START} / {IMG_END} tokens")
    input_ids, labels, k = [], [], 0
    for tok, (a, b) in zip(ids, enc["offset_mapping"], strict=True):
        input_ids.append(tok)
        labels.append(tok if b > a and supervised[a] else IGNORE_INDEX)
        if tok == start_id:
            n = tokens_per_tile * image_tiles[k]
            k += 1
            input_ids.extend([context_id] * n)
            labels.extend([IGNORE_INDEX] * n)
    n_image_tokens = tokens_per_tile * sum(image_tiles)
    truncated = len(input_ids) > max_seq_length
    if truncated:
        last_img_end = max((i for i, t in enumerate(input_ids) if t == end_id), default=-1)
        if last_img_end >= max_seq_length:
            raise SampleDropped(
                f"image tokens end at position {last_img_end + 1} > max_seq_length "
                f"{max_seq_length} ({len(input_ids)} tokens in all)"
            )
        input_ids, labels = input_ids[:max_seq_length], labels[:max_seq_length]
    if all(label == IGNORE_INDEX for label in labels):
        raise SampleDropped(f"no supervised token within max_seq_length {max_seq_length}")
    return Encoded(input_ids, labels, n_image_tokens, truncated)
