"""Default system messages of the official InternVL templates, per code revision. No imports.

`from internvl_chat.prompts import system_message; system_message("internlm2-chat", "pin")`

The official ``internvl/conversation.py`` changed its defaults between the pinned revision
(``pin`` = OpenGVLab/InternVL@764fdc9, 2024-06, seed 000, InternVL 1.5 checkpoints) and the
current one (``head``, InternVL2 and later checkpoints). A checkpoint was trained with the
prompt of its era, so the model config's ``internvl_revision`` picks it (spec 6.1, 14.11).
The launcher (torch-free) and the data pipeline both read this one table.
"""

from __future__ import annotations

REVISIONS = ("pin", "head")

_HEAD_CHAT = (
    "你是由上海人工智能实验室联合商汤科技开发的书生多模态大模型，英文名叫InternVL, "
    "是一个有用无害的人工智能助手。"
)
SYSTEM_MESSAGES = {
    "pin": {
        "Hermes-2": "Answer the questions.",
        "internlm2-chat": "You are an AI assistant whose name is InternLM (书生·浦语).",
        "phi3-chat": "You are an AI assistant whose name is Phi-3.",
    },
    "head": {
        "Hermes-2": _HEAD_CHAT,
        "internlm2-chat": _HEAD_CHAT,
        "phi3-chat": _HEAD_CHAT,
        "internvl2_5": (
            "你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的"
            "多模态大语言模型。"
        ),
    },
}


def system_message(template: str, revision: str) -> str:
    """The default system message of ``template`` in the official code at ``revision``.

    Raises ValueError for an unknown revision or a template that revision does not have
    (internvl2_5 exists only at head)."""
    if revision not in SYSTEM_MESSAGES:
        raise ValueError(f"internvl_revision {revision!r} is not one of {', '.join(REVISIONS)}")
    table = SYSTEM_MESSAGES[revision]
    if template not in table:
        known = sorted({t for rev in SYSTEM_MESSAGES.values() for t in rev})
        if template in known:
            raise ValueError(
                f"template {template!r} does not exist in the official code at revision "
                f"{revision!r} (it has {', '.join(table)})"
            )
        raise ValueError(f"template {template!r} is not one of {', '.join(known)}")
    return table[template]
