"""Rules for the newer InternVL generations (2.5, 3, 3.5): backbones not supported yet, and
packed-training settings that cannot work (the most reported packing mistakes, InternVL
#1158/#1166/#879), each naming the setting to change. Called by launcher.plan.check."""

from __future__ import annotations

from launcher.config.spec import JobSpec, Problem

UNSUPPORTED = {
    "qwen3_moe": "Qwen3 MoE backbones (InternVL3.5-30B-A3B, InternVL3.5-241B-A28B)",
    "gpt_oss": "the GPT-OSS backbone (InternVL3.5-GPT-OSS-20B-A4B)",
}
DENSE_35 = "internvl3_5_1b, _2b, _4b, _8b, _14b or _38b"


def packed(spec: JobSpec) -> bool:
    return spec.data.packed or spec.model.packed


def check(spec: JobSpec) -> list[Problem]:
    m, out = spec.model, []
    if m.llm_family in UNSUPPORTED:
        out.append(
            Problem(
                "model.llm_family",
                f"{m.llm_family}: {UNSUPPORTED[m.llm_family]} cannot be trained here yet "
                f"(no MoE support in our trainer or the official engine's tree); "
                f"a dense InternVL3.5 trains: model={DENSE_35}",
            )
        )
    if not packed(spec):
        for key in ("max_packed_tokens", "num_images_expected"):
            if getattr(m, key) is not None:
                out.append(Problem(f"model.{key}", "only applies to packed training: set "
                                   "data.packed=true (or model.packed=true) or leave it null"))  # fmt: skip
        return out
    if m.max_packed_tokens is not None and m.max_packed_tokens < spec.seq_len:
        out.append(
            Problem(
                "model.max_packed_tokens",
                f"{m.max_packed_tokens} < seq_len {spec.seq_len}: a sample of seq_len tokens "
                "would fit no packed row; raise it or lower seq_len",
            )
        )
    if m.num_images_expected is not None and m.num_images_expected < m.max_tiles:
        out.append(
            Problem(
                "model.num_images_expected",
                f"{m.num_images_expected} < {m.max_tiles} tiles one image can take "
                "(max_dynamic_patch + thumbnail): such samples would fit no packed row",
            )
        )
    return out


def generation_args(spec: JobSpec) -> dict:
    """train_args.json keys of the packed recipe and the save format, only those set."""
    m = spec.model
    keys = ("max_packed_tokens", "num_images_expected", "loss_reduction", "save_format")
    return {k: getattr(m, k) for k in keys if getattr(m, k) is not None}


def packed_row(spec: JobSpec) -> tuple[int, int, str] | None:
    """(tokens, tiles, basis) one packed row holds, for the memory estimate: a micro-batch
    sample is a whole row (max_packed_tokens, else seq_len; num_images_expected tiles, the
    trainer's default 40 unless set); None when not packed."""
    if not packed(spec):
        return None
    m = spec.model
    tokens = m.max_packed_tokens or spec.seq_len
    tiles = m.num_images_expected or 40
    return tokens, tiles, f"{tokens} tokens and {tiles} tiles per packed row"
