"""The plan matches what runs: every value plan.json states, read back from the rendered files
as the engine parses them (XTuner's config through mmengine: tests/test_xtuner.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import test_mindspeed
import test_plan

from internvl_chat.train import parse_args
from launcher.rundir import RunDir


def stated(plan) -> dict:
    return json.loads(plan.files["plan.json"])


def check_deepspeed(plan, p: dict) -> None:
    ds = json.loads(plan.files["deepspeed.json"])
    assert ds["zero_optimization"]["stage"] == p["zero_stage"]
    assert ds["train_micro_batch_size_per_gpu"] == p["per_device_batch_size"]
    assert ds["gradient_accumulation_steps"] == p["gradient_accumulation_steps"]
    assert ds["train_batch_size"] == p["global_batch_size"]


@pytest.mark.parametrize("case", ["tiny_cpu_2node_slurm_zero2", "internvl_20b_4x8_a800_slurm"])
def test_our_trainer_reads_what_the_plan_states(case: str, tmp_path: Path):
    roots = [f"models_root={tmp_path}/models", f"data_root={tmp_path}/data"]
    plan, spec = test_plan.make_plan(tmp_path, *test_plan.CASES[case], *roots)
    p = stated(plan)
    RunDir(plan.run_dir).materialize(plan.files, code={})
    raw = json.loads(plan.files["train_args.json"])
    for key in ("model_name_or_path", "vision_path", "llm_path"):  # the checkpoints, empty here
        Path(raw[key]).mkdir(parents=True, exist_ok=True) if raw.get(key) else None
    for key in ("meta_path", "eval_meta_path"):  # generated data: written on node 0
        if raw.get(key) and not Path(raw[key]).exists():
            Path(raw[key]).parent.mkdir(parents=True, exist_ok=True)
            Path(raw[key]).write_text("{}")
    got = parse_args(raw, "train_args.json")  # what the trainer's first line does
    assert got.per_device_train_batch_size == p["per_device_batch_size"]
    assert got.gradient_accumulation_steps == p["gradient_accumulation_steps"]
    assert got.learning_rate == p["lr"] and got.max_seq_length == p["seq_len"]
    if p["max_steps"] is not None:
        assert got.max_steps == p["max_steps"]
    else:
        assert got.num_train_epochs == p["epochs"]
    for flag in ("freeze_llm", "freeze_mlp", "freeze_backbone"):
        assert getattr(got, flag) == p[flag], flag
    if spec.data.generate:
        assert got.meta_path.startswith(str(spec.data.dir))
    else:
        assert got.meta_path == str(Path(plan.run_dir) / "meta.json")
        meta = json.loads(plan.files["meta.json"])
        for name, entry in spec.data.datasets.items():
            assert (meta[name]["annotation"], meta[name]["root"]) == (entry.annotation, entry.root)
    check_deepspeed(plan, p)


def test_the_official_finetune_reads_what_the_plan_states(tmp_path: Path):
    """The official script parses train_args.json with HfArgumentParser; TrainingArguments'
    share is parsed here the same way (use_cpu: this machine has no GPU for bf16)."""
    from transformers import HfArgumentParser, TrainingArguments

    plan, _ = test_plan.make_plan(tmp_path, *test_plan.CASES["internvl2_1b_zero3_offload_official"])
    p = stated(plan)
    raw = json.loads(plan.files["train_args.json"])
    (targs,) = HfArgumentParser(TrainingArguments).parse_dict(
        {**raw, "deepspeed": None, "use_cpu": True}, allow_extra_keys=True
    )
    assert targs.per_device_train_batch_size == p["per_device_batch_size"]
    assert targs.gradient_accumulation_steps == p["gradient_accumulation_steps"]
    assert targs.learning_rate == p["lr"]
    assert targs.max_steps == (p["max_steps"] if p["max_steps"] is not None else -1)
    assert raw["max_seq_length"] == p["seq_len"]
    for flag in ("freeze_llm", "freeze_mlp", "freeze_backbone"):
        assert raw[flag] == p[flag], flag
    check_deepspeed(plan, p)


@pytest.mark.parametrize("case", sorted(test_mindspeed.CASES))
def test_mindspeed_reads_what_the_plan_states(case: str, tmp_path: Path, monkeypatch):
    monkeypatch.setattr(test_mindspeed.site, "partition_info", lambda *a, **k: None)
    plan, spec = test_mindspeed.plan_for(
        tmp_path, *test_mindspeed.COMMON, *test_mindspeed.CASES[case]
    )
    p = stated(plan)
    argv = list(plan.node_launch[0].argv)
    parser = argparse.ArgumentParser()
    for flag in ("--micro-batch-size", "--global-batch-size", "--seq-length", "--train-iters",
                 "--tensor-model-parallel-size", "--pipeline-model-parallel-size"):  # fmt: skip
        parser.add_argument(flag, type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--virtual-pipeline-model-parallel-size", type=int)
    got, _ = parser.parse_known_args(argv[argv.index("--mm-data") :])
    mega = p["megatron"]
    assert got.micro_batch_size == p["per_device_batch_size"]
    assert got.global_batch_size == p["global_batch_size"]
    assert got.seq_length == p["seq_len"] and got.lr == p["lr"]
    assert got.train_iters == p["max_steps"]
    assert (got.tensor_model_parallel_size, got.pipeline_model_parallel_size) == (
        mega["tp"],
        mega["pp"],
    )
    assert got.virtual_pipeline_model_parallel_size == mega["vpp"]
    model = json.loads(plan.files["mindspeed/model.json"])
    vit = model["image_encoder"]["vision_encoder"]
    llm = model["text_decoder"]
    if mega["pp"] > 1:
        assert llm["pipeline_num_layers"] == mega["llm_pp_layers"]
        assert vit["pipeline_num_layers"] == mega["vit_pp_layers"]
    assert vit["freeze"] == p["freeze_backbone"]
    assert model["image_encoder"]["vision_projector"]["freeze"] == p["freeze_mlp"]
    assert llm.get("freeze", False) == p["freeze_llm"]
    data = json.loads(plan.files["mindspeed/data.json"])["dataset_param"]["basic_parameters"]
    d = spec.data
    entries = list(d.datasets.values()) if d.datasets else []
    if entries:
        assert data["data_path"] == entries[0].annotation
        assert data["data_folder"] == entries[0].root
