"""The train_args.json contract (internvl_chat.train.args): torch-free checks, all at once."""

from __future__ import annotations

import pytest

from internvl_chat.train import ArgsError, parse_args


def test_bad_arguments_are_listed_together(tmp_path):
    raw = {
        "model_name_or_path": str(tmp_path / "nope"),
        "meta_path": None,
        "deepspeed": None,
        "freeze_llm": "yes",
        "learning_rate": "fast",
        "warmup_ratios": 0.1,
        "fp16": True,
    }
    with pytest.raises(ArgsError) as e:
        parse_args(raw, "args.json")
    msg = str(e.value)
    for needle in ("unknown argument 'warmup_ratios'", "freeze_llm must be true/false",
                   "learning_rate must be a number"):  # fmt: skip
        assert needle in msg
    raw.update(freeze_llm=True, learning_rate=1e-4)
    raw.pop("warmup_ratios")
    with pytest.raises(ArgsError) as e:
        parse_args(raw, "args.json")
    msg = str(e.value)
    for needle in ("model_name_or_path", "does not exist", "meta_path is required",
                   "deepspeed (a DeepSpeed JSON config) is required", "fp16 is not supported"):  # fmt: skip
        assert needle in msg
