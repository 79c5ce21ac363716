"""Data pipeline end to end on tiny tokenizers and synthetic/fixture data (no network)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from internvl_chat.data import (
    DataConfig,
    LengthGroupedSampler,
    block_causal_mask,
    build_train_dataset,
)
from internvl_chat.data.config import NORMALIZE
from internvl_chat.data.dataset import Transform
from internvl_chat.tokenizer import load_tokenizer, save_tiny_tokenizer
from internvl_chat.tools.inspect import inspect_sample
from internvl_chat.tools.make_synthetic import make_synthetic
from internvl_chat.tools.validate_data import validate

FIXTURE = Path(__file__).parent / "fixtures" / "data"
REPO = Path(__file__).parents[1]
# Tiles of 56 px with patch 14 and ratio 0.5: 4 image tokens per tile keeps sequences short.
CFG = {"conv_style": "internvl2_5", "force_image_size": 56, "max_seq_length": 512,
       "max_dynamic_patch": 6, "system_message": "Answer.", "seed": 1}  # fmt: skip


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = save_tiny_tokenizer(tmp_path_factory.mktemp("model"), "qwen2")
    config = {"model_type": "internvl_chat", "force_image_size": 56, "downsample_ratio": 0.5,
              "max_dynamic_patch": 6, "min_dynamic_patch": 1, "use_thumbnail": True,
              "dynamic_image_size": True, "template": "internvl2_5",
              "vision_config": {"patch_size": 14, "image_size": 56}}  # fmt: skip
    (d / "config.json").write_text(json.dumps(config))
    return d


@pytest.fixture(scope="module")
def tok(model_dir):
    return load_tokenizer(model_dir)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return make_synthetic(tmp_path_factory.mktemp("syn") / "data", num_samples=40, num_eval=4)


def _meta(tmp_path, **entries):
    path = tmp_path / "meta.json"
    path.write_text(json.dumps(entries))
    return path


def test_repeat_time_head_and_repeat(tmp_path, synthetic, tok):
    ann = str(synthetic.parent / "train.jsonl")
    e = {"root": str(synthetic.parent), "annotation": ann, "data_augment": False}
    meta = _meta(tmp_path, half={**e, "repeat_time": 0.25}, triple={**e, "repeat_time": 3})
    ds = build_train_dataset(meta, tok, CFG)
    half, triple = ds.datasets
    assert len(half) == 10 and [s.line for s in half.samples] == list(range(1, 11))  # the head
    assert len(triple) == 120 and [s.line for s in triple.samples[40:43]] == [1, 2, 3]
    assert ds.stats["triple"] == {"lines": 40, "samples": 120, "skipped": 0,
                                  "dropped_truncated": 0, "repeat": 3}  # fmt: skip


def test_items_and_collate(synthetic, tok):
    ds = build_train_dataset(synthetic, tok, CFG)
    text_only = next(i for i, s in enumerate(ds.datasets[0].samples) if s.text_only)
    multi = next(i for i, s in enumerate(ds.datasets[0].samples) if len(s.images) == 2)
    item = ds[text_only]
    assert item["pixel_values"].shape == (1, 3, 56, 56) and item["image_flags"].tolist() == [0]
    s = ds.datasets[0].samples[multi]
    assert all(n <= 6 // 2 + 1 for n in s.tiles)  # max(1, 6 // 2) tiles per image (+ thumb)
    assert (ds[multi]["input_ids"] == tok.convert_tokens_to_ids("<IMG_CONTEXT>")).sum() == 4 * sum(
        s.tiles
    )
    # augmentation is random per tile but reproducible per index
    assert torch.equal(ds[0]["pixel_values"], ds[0]["pixel_values"])
    items = [ds[i] for i in (0, text_only, multi)]
    b = ds.collate(items)
    n = [len(x["input_ids"]) for x in items]
    assert b["attention_mask"].sum(1).tolist() == n
    pad = tok.pad_token_id
    assert pad != 0 and (b["input_ids"][b["attention_mask"] == 0] == pad).all()
    assert (b["labels"][b["attention_mask"] == 0] == -100).all()
    assert b["position_ids"][1, : n[1]].tolist() == list(range(n[1]))
    assert (
        b["pixel_values"].shape[0]
        == b["image_flags"].shape[0]
        == sum(len(x["image_flags"]) for x in items)
    )


def test_truncated_image_tokens_are_dropped_and_counted(tmp_path, tok):
    from PIL import Image

    Image.new("RGB", (1000, 10), "red").save(tmp_path / "wide.png")  # 12 + 1 tiles
    Image.new("RGB", (50, 50), "red").save(tmp_path / "small.png")  # 1 tile
    rows = [{"image": im, "conversations": [{"from": "human", "value": "What colour is it?"},
                                            {"from": "gpt", "value": "red"}]}
            for im in ("wide.png", "small.png", "wide.png")]  # fmt: skip
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    meta = _meta(tmp_path, d={"root": ".", "annotation": "a.jsonl", "repeat_time": 1})
    cfg = {**CFG, "max_dynamic_patch": 12, "max_seq_length": 40}
    ds = build_train_dataset(meta, tok, cfg)
    assert ds.stats["d"]["dropped_truncated"] == 2 and ds.stats["d"]["skipped"] == 0
    assert len(ds) == 1 and ds.datasets[0].samples[0].line == 2
    assert (ds[0]["labels"] != -100).any()
    # with room for the image tokens, all three are kept
    assert len(build_train_dataset(meta, tok, {**cfg, "max_seq_length": 100})) == 3


def test_group_lengths_take_a_rows_precomputed_length(tmp_path, tok):
    """group_by_length sorts by a row's integer ``length`` where given, as the official dataset
    does; the exact length (truncation, packing) stays what the scan measured."""
    from PIL import Image

    Image.new("RGB", (50, 50), "red").save(tmp_path / "small.png")
    conv = [{"from": "human", "value": "What colour is it?"}, {"from": "gpt", "value": "red"}]
    rows = [{"image": "small.png", "conversations": conv, "length": 7},
            {"image": "small.png", "conversations": conv, "length": True},
            {"image": "small.png", "conversations": conv}]  # fmt: skip
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    meta = _meta(tmp_path, d={"root": ".", "annotation": "a.jsonl", "repeat_time": 1})
    ds = build_train_dataset(meta, tok, CFG)
    exact = ds.lengths[0]
    assert ds.lengths == [exact] * 3 and exact != 7
    assert ds.group_lengths == [7, exact, exact]


def test_broken_samples_skipped_counted_and_threshold(tmp_path, tok, caplog, monkeypatch):
    lines = (FIXTURE / "broken.jsonl").read_text().splitlines(keepends=True)
    no_video = [s for s in lines if '"video"' not in s]
    (tmp_path / "b.jsonl").write_text("".join(no_video))
    meta = _meta(tmp_path, b={"root": str(FIXTURE), "annotation": "b.jsonl", "repeat_time": 1})
    with pytest.raises(ValueError, match=r"b \(.*\): 5 of 8 samples are broken"):
        build_train_dataset(meta, tok, {**CFG, "max_seq_length": 4096})
    caplog.clear()
    monkeypatch.setattr("internvl_chat.data.dataset.MAX_LOGGED_PROBLEMS", 2)
    ds = build_train_dataset(
        meta, tok, {**CFG, "max_seq_length": 4096, "max_bad_sample_ratio": 0.7}
    )
    assert ds.stats["b"]["skipped"] == 5 and len(ds) == 3
    messages = [r.getMessage() for r in caplog.records]
    assert sum("skipped sample" in m for m in messages) == 2  # bounded log
    assert any("5 skipped (broken)" in m and "3 not shown" in m for m in messages)
    (tmp_path / "v.jsonl").write_text("".join(lines))
    meta = _meta(tmp_path, v={"root": str(FIXTURE), "annotation": "v.jsonl", "repeat_time": 1})
    with pytest.raises(ValueError, match=r"video samples are not supported.*v.jsonl:7"):
        build_train_dataset(meta, tok, {**CFG, "max_bad_sample_ratio": 1.0})


def test_group_by_length_sampler():
    lengths = [5, 100, 7, 90, 3, 80, 60, 1, 2, 70, 50, 4, 30, 20, 10, 40]
    kw = {"batch_size": 2, "world_size": 2, "grad_accum": 2, "seed": 3}
    s0 = LengthGroupedSampler(lengths, rank=0, **kw)
    order = s0.global_order()
    assert sorted(order) == list(range(16))
    for m in range(0, 16, 8):  # per mega-batch of world*GA*bs: balanced chunks of 2
        mega = order[m : m + 8]
        totals = [lengths[mega[c]] + lengths[mega[c + 1]] for c in range(0, 8, 2)]
        assert max(totals) - min(totals) <= max(lengths[i] for i in mega)
        assert lengths[mega[0]] == max(lengths[i] for i in mega)  # longest first
    r0, r1 = list(s0), list(LengthGroupedSampler(lengths, rank=1, **kw))
    assert len(r0) == len(r1) == 8 and sorted(r0 + r1) == list(range(16))
    assert r0[:2] == order[:2] and r1[:2] == order[2:4]  # micro-batch k goes to rank k % world
    s0.set_epoch(1)
    assert s0.global_order() != order
    odd = LengthGroupedSampler(lengths[:13], rank=1, **kw)
    assert len(list(odd)) == len(odd) == 8  # padded by wrapping around


def test_packed_rows(synthetic, tok):
    plain = build_train_dataset(synthetic, tok, CFG)
    packed = build_train_dataset(synthetic, tok, {**CFG, "packed": True, "max_packed_tokens": 300})
    covered = sorted(i for row in packed.rows for i in row)
    assert covered == list(range(len(plain)))
    assert len(packed) < len(plain) / 2
    assert all(n <= 300 for n in packed.lengths)
    b = packed.collate([packed[0], packed[1]])
    row = packed.rows[0]
    want = torch.cat([plain[i]["labels"] for i in row])
    assert torch.equal(b["labels"][0, : len(want)], want)
    starts = torch.nonzero(b["position_ids"][0] == 0).flatten().tolist()
    ends = [plain.lengths[i] for i in row]
    assert starts[: len(row)] == [sum(ends[:k]) for k in range(len(row))]
    assert b["cu_seqlens"][-1] == b["input_ids"].numel()
    mask = block_causal_mask(b["sample_ids"])
    assert mask.shape == (2, 1, b["input_ids"].shape[1], b["input_ids"].shape[1])
    a = ends[0]  # first token of sub-sample 1 sees itself, not sub-sample 0
    assert mask[0, 0, a, a] == 0 and mask[0, 0, a, a - 1] < 0 and mask[0, 0, a - 1, 0] == 0


def test_normalisation_types():
    from PIL import Image

    white = Image.new("RGB", (10, 10), "white")
    for name, (mean, std) in NORMALIZE.items():
        x = Transform(False, 14, False, name)(white, None)
        assert x.shape == (3, 14, 14)
        assert torch.allclose(x[:, 0, 0], (1 - torch.tensor(mean)) / torch.tensor(std), atol=1e-5)
    assert (
        DataConfig.from_any({"normalize_type": "x", "max_dynamic_patch": 0})
        .problems()[1]
        .startswith("need 1")
    )


def test_inspect_json_cli(synthetic, model_dir, tok):
    # meta entry max_dynamic_patch overrides the model's
    meta = json.loads(synthetic.read_text())
    name = next(iter(meta))
    meta[name]["max_dynamic_patch"] = 2
    synthetic.with_name("meta_mdp.json").write_text(json.dumps(meta))
    out = subprocess.run(
        [sys.executable, "-m", "internvl_chat.tools.inspect", str(synthetic), "--model",
         str(model_dir), "--index", "0", "--json"],
        capture_output=True, text=True, check=True, cwd=REPO,
    )  # fmt: skip
    got = json.loads(out.stdout)
    assert got["images"] == [{"path": str(synthetic.parent / "images/s00000.png"),
                              "size": [240, 60], "grid": [4, 1], "num_tiles": 5}]  # fmt: skip
    assert got["num_image_tokens"] == 20 and len(got["input_ids"]) == len(got["labels"])
    sup = [t for t in got["labels"] if t != -100]
    assert tok.decode(sup) == "circle<|im_end|>"
    capped = inspect_sample(synthetic.with_name("meta_mdp.json"), model_dir, 0, tok)
    assert capped["images"][0]["grid"] == [2, 1] and capped["images"][0]["num_tiles"] == 3


def test_validate_lists_every_problem(model_dir, tok, tmp_path):
    problems = validate(
        FIXTURE / "meta.json", model_dir, tok, max_seq_length=100, system_message="Answer."
    )
    where = {p.split(": ", 1)[0].rsplit("/", 1)[-1]: p for p in problems}
    assert set(where) == {"meta.json", *(f"broken.jsonl:{n}" for n in range(2, 9))}, problems
    expect = {2: "bad JSON", 3: "image not found", 4: "unreadable image", 5: "alternate",
              6: "1 <image> placeholder(s) in human turns for 2 image(s)", 7: "video",
              8: "max_seq_length"}  # fmt: skip
    for n, text in expect.items():
        assert text in where[f"broken.jsonl:{n}"]
    assert "'broken.json' is not a .jsonl file" in where["meta.json"]
    clean = shutil.copytree(FIXTURE, tmp_path / "clean")
    (clean / "meta.json").write_text(
        json.dumps({"ok": {"root": ".", "annotation": "ok.jsonl", "repeat_time": 1}})
    )
    (clean / "ok.jsonl").write_text((FIXTURE / "broken.jsonl").read_text().splitlines()[0] + "\n")
    rc = subprocess.run(
        [sys.executable, "-m", "internvl_chat.tools.validate_data", str(clean / "meta.json"),
         "--model", str(model_dir)], capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip
    assert rc.returncode == 0 and "OK" in rc.stdout
