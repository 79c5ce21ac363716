# ruff: noqa: F811  (the fixtures are imported and then requested by name)
"""Packed training as the official InternVL3.5 recipe: ``loss_reduction`` token / sample /
square weights, and a real stop + resume in the middle of a packed epoch (2 ranks, ZeRO-2,
CPU) that sees every sample once with the uninterrupted run's losses, saving in the format
asked (``save_format=hf``: transformers' own InternVL loads the result)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
from test_train_deepspeed import _args, _ds_config
from test_train_resume import COMPARED, _metrics, _run

from internvl_chat.data.dataset import IGNORE_INDEX
from internvl_chat.train.loss import token_weights

X = IGNORE_INDEX


def test_token_weights_follow_the_official_len2weight():
    # row 0 packs two samples (2 and 1 supervised labels), row 1 is one sample (3) + padding
    labels = torch.tensor([[X, 5, 6, X, 7, X], [X, 1, 2, 3, X, X]])
    sample_ids = torch.tensor([[0, 0, 0, 1, 1, -1], [0, 0, 0, 0, -1, -1]])
    sq = token_weights(labels, sample_ids, "square")
    want = [[0, 2**-0.5, 2**-0.5, 0, 1, 0], [0, *[3**-0.5] * 3, 0, 0]]
    torch.testing.assert_close(sq, torch.tensor(want))
    torch.testing.assert_close(
        token_weights(labels, sample_ids, "sample")[1, 1:4], torch.full((3,), 1 / 3)
    )
    assert token_weights(labels, sample_ids, "token").sum() == 6
    unpacked = token_weights(labels, None, "sample")  # one sample per row
    torch.testing.assert_close(unpacked[0], torch.tensor([0, 1, 1, 0, 1, 0]) / 3)
    with pytest.raises(ValueError, match="loss_reduction 'mean'"):
        token_weights(labels, None, "mean")


def test_weighted_loss_is_the_weighted_mean_over_full_logits(tmp_path):
    """The training path (LM head on supervised positions only) gives sum(w * CE) / sum(w) of
    the full logits; with token weights that is the plain mean."""
    from test_model_layouts import _load

    from internvl_chat.tools.make_tiny import make_tiny

    model = _load(make_tiny(tmp_path / "m", "original", "qwen3", seed=0))
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(10, 200, (2, 12), generator=g)
    labels = torch.where(torch.rand(2, 12, generator=g) < 0.6, ids, X)
    labels[:, 0] = X
    sample_ids = torch.tensor([[0] * 5 + [1] * 7, [0] * 12])
    with torch.no_grad():
        logits = model(None, ids)["logits"][:, :-1].float()
    ce = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), reduction="none",
        ignore_index=X).reshape(2, 11)  # fmt: skip
    model.train()
    for red in ("token", "sample", "square"):
        w = token_weights(labels, sample_ids, red)
        with torch.no_grad():
            got = model(None, ids, labels=labels, loss_weight=w)["loss"]
        torch.testing.assert_close(got, (ce * w[:, 1:]).sum() / w[:, 1:].sum())
    with torch.no_grad():
        plain = model(None, ids, labels=labels)["loss"]
    torch.testing.assert_close(plain, ce.sum() / (labels[:, 1:] != X).sum())


@pytest.fixture(scope="module")
def packed_assets(tmp_path_factory):
    from internvl_chat.tools.make_synthetic import make_synthetic
    from internvl_chat.tools.make_tiny import make_tiny

    root = tmp_path_factory.mktemp("packed_assets")
    make_synthetic(root / "data", num_samples=40, num_eval=0, seed=3)
    return root / "data", make_tiny(root / "qwen3-original", "original", "qwen3", seed=0)


def _packed_args(tmp: Path, assets) -> dict:
    data, model = assets
    return _args(tmp, data, model, conv_style="internvl2_5", use_packed_ds=True,
                 max_packed_tokens=600, num_images_expected=10, loss_reduction="square",
                 per_device_train_batch_size=1, max_steps=-1, num_train_epochs=1,
                 save_steps=2, save_total_limit=2, drop_path_rate=0.1, save_format="hf",
                 stop_file=str(tmp / "stop"),
                 deepspeed=str(_ds_config(tmp / "ds_packed.json", 2, 2, 1)))  # fmt: skip


@pytest.mark.slow
def test_stop_in_a_packed_epoch_resumes_at_the_same_row(packed_assets, tmp_path):
    from transformers import InternVLForConditionalGeneration

    from internvl_chat.model import detect_layout

    (tmp_path / "full").mkdir()
    full_args = _packed_args(tmp_path / "full", packed_assets)
    rc, out, err = _run(tmp_path / "full", full_args)
    assert rc == 0, out[-3000:] + err[-3000:]
    full = _metrics(full_args)
    steps = len(full)
    seen = sum(m["samples"] for m in full)
    # one epoch: every sample once (18 rows over 2 ranks: no wrap-around padding)
    assert steps >= 4 and seen == 40
    assert seen > 2 * steps
    assert all(math.isfinite(m["loss"]) for m in full)

    args = _packed_args(tmp_path, packed_assets)
    stop = Path(args["stop_file"])

    def request_stop(line: str, proc) -> None:
        if line.startswith("{'loss'"):
            stop.touch()

    rc, out, err = _run(tmp_path, args, request_stop)
    said = re.findall(r"stop requested: saved checkpoint-(\d+) at step", out)
    assert len(said) == 1 and 1 <= int(said[0]) < steps, out[-3000:] + err[-3000:]
    stop.unlink()
    rc, out, err = _run(tmp_path, args)
    assert rc == 0, out[-3000:] + err[-3000:]
    resumed = _metrics(args)
    assert [{k: m[k] for k in COMPARED} for m in resumed] == [
        {k: m[k] for k in COMPARED} for m in full
    ]
    out_dir = Path(args["output_dir"])
    assert detect_layout(out_dir) == "hf"  # save_format=hf, loaded from the GitHub format
    _, info = InternVLForConditionalGeneration.from_pretrained(out_dir, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
