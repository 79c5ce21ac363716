"""The plan matches what runs: every value plan.json states, read back from the rendered files
as the engine parses them: our trainer's parse_args; the official script's own dataclasses
through HfArgumentParser in .venv-internvl (pin and head; skips without the env or the
checkouts, fails under CI=true); MindSpeed's argv + model.json/data.json (XTuner's config
through mmengine: tests/test_xtuner.py)."""

from __future__ import annotations

import argparse
import json
import subprocess
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


# The official engine, planned against the real checkouts (tests/test_official_parity.py's),
# its train_args.json parsed by the revision's own dataclasses in .venv-internvl.
OFFICIAL_CASES = {
    # seed 000: InternVL-Chat-V1-5 at the pinned revision, 4 x 8 A800, freeze_llm, max_steps
    "pin-internvl_20b-a800": (
        "pin",
        ["model=internvl_20b", "hw=a800", "nodes=4", "data=ai2d_train_12k", "max_steps=300"],
    ),
    # head: an InternVL2 checkpoint, ZeRO-3 offload, epochs, one dataset's own tile count
    "head-internvl2_1b-h100": (
        "head",
        [
            "model=internvl2_1b",
            "hw=h100",
            "nodes=2",
            "parallelism=zero3_offload",
            "epochs=2",
            "data=ai2d_train_12k",
            "+data.datasets.ai2d_train_12k.max_dynamic_patch=4",
        ],
    ),  # fmt: skip
    # CPU: the nodes run the copy with edits E1-E4, generated data, bf16 on fp32 hardware
    "pin-tiny-cpu": (
        "pin",
        ["model=tiny_internvl", "data=synthetic", "hw=cpu", "nodes=2", "max_steps=20"],
    ),
}
UNKNOWN = {"pin": "use_packed_ds", "head": "neftune_alpha"}
"""A name only the other revision's dataclasses have: each revision's parse must refuse it."""
FINETUNE = "official/internvl_chat/internvl/train/internvl_chat_finetune.py"


def torchrun_world(plan) -> int:
    """The processes torchrun starts: --nnodes x --nproc_per_node, the same on every node."""
    worlds = set()
    for launch in plan.node_launch:
        opts = dict(a[2:].split("=", 1) for a in launch.argv if a.startswith("--") and "=" in a)
        worlds.add(int(opts["nnodes"]) * int(opts["nproc_per_node"]))
    assert len(worlds) == 1, worlds
    return worlds.pop()


@pytest.fixture(scope="module")
def official(tmp_path_factory) -> dict:
    """Each case planned and written to a run dir, then parsed in one .venv-internvl process
    (tests/tools/official_args.py: the script's own dataclasses, HfArgumentParser): case ->
    (plan, spec, parsed); `unknown-<revision>` -> the parse of a train_args.json with
    UNKNOWN[revision] added."""
    from test_official_parity import CHECKOUTS, OFFICIAL_PY, need

    for revision in CHECKOUTS:
        need(revision)
    root = tmp_path_factory.mktemp("official")
    planned, jobs = {}, []
    with pytest.MonkeyPatch.context() as mp:  # no sinfo: this test must not depend on Slurm
        mp.setattr(test_plan.site, "partition_info", lambda *a, **k: None)
        for case, (revision, overrides) in OFFICIAL_CASES.items():
            tmp = root / case
            plan, spec = test_plan.make_plan(
                tmp,
                *overrides,
                "model.engine=internvl_official",
                f"model.internvl_root={CHECKOUTS[revision]}",
                f"model.internvl_revision={revision}",
                f"models_root={tmp}/models",
                f"data_root={tmp}/data",
                "dry_run=true",
            )
            RunDir(plan.run_dir).materialize(plan.files, code={})
            run = Path(plan.run_dir)
            job = {
                "script": str(run / FINETUNE),
                "args": str(run / "train_args.json"),
                "world_size": torchrun_world(plan),
            }
            planned[case] = (plan, spec)
            jobs.append(job)
            if f"unknown-{revision}" not in planned:
                bad = run / "train_args_unknown.json"
                raw = json.loads(plan.files["train_args.json"])
                bad.write_text(json.dumps({**raw, UNKNOWN[revision]: None}))
                planned[f"unknown-{revision}"] = (plan, spec)
                jobs.append({**job, "args": str(bad)})
    tool = Path(__file__).parent / "tools" / "official_args.py"
    proc = subprocess.run(
        [str(OFFICIAL_PY), str(tool)],
        input=json.dumps(jobs),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {
        case: (*planned[case], got)
        for case, got in zip(planned, json.loads(proc.stdout), strict=True)
    }


def as_hf(key: str, value):
    """A value as TrainingArguments.__post_init__ leaves it (report_to becomes a list)."""
    if key == "report_to" and isinstance(value, str):
        return [] if value == "none" else [value]
    return value


@pytest.mark.parametrize("case", sorted(OFFICIAL_CASES))
def test_the_official_finetune_reads_what_the_plan_states(case: str, official):
    """train_args.json parsed as the official script's main() parses it, with ITS revision's
    ModelArguments / DataTrainingArguments (from the run dir's copy, the file the nodes run)
    and transformers 4.37's TrainingArguments, the DeepSpeed JSON loaded by HF."""
    plan, spec, got = official[case]
    assert "error" not in got, got.get("error")
    p = stated(plan)
    model, data, training = got["model"], got["data"], got["training"]
    # every value written is the value parsed (a name no dataclass has fails the parse)
    parsed = {**model, **data, **training}
    for key, value in json.loads(plan.files["train_args.json"]).items():
        assert parsed[key] == as_hf(key, value), key
    for flag in (
        "freeze_llm",
        "freeze_mlp",
        "freeze_backbone",
        "use_llm_lora",
        "use_backbone_lora",
    ):
        assert model[flag] == p[flag], flag
    assert training["per_device_train_batch_size"] == p["per_device_batch_size"]
    assert training["gradient_accumulation_steps"] == p["gradient_accumulation_steps"]
    assert training["learning_rate"] == p["lr"]
    assert data["max_seq_length"] == p["seq_len"]
    assert (training["bf16"], training["fp16"]) == (
        p["precision"] == "bf16",
        p["precision"] == "fp16",
    )
    world = torchrun_world(plan)
    assert world == p["world_size"] == p["nodes"] * p["gpus_per_node"]
    assert (
        p["global_batch_size"]
        == world * p["per_device_batch_size"] * p["gradient_accumulation_steps"]
    )
    # iterations: HF's Trainer runs max_steps when > 0, else num_train_epochs
    if p["max_steps"] is not None:
        assert training["max_steps"] == p["max_steps"] == p["optimizer_steps"]
    else:
        assert training["max_steps"] <= 0 and training["num_train_epochs"] == p["epochs"]
    # ZeRO: the DeepSpeed JSON the Trainer loads, and HF's own consistency check of it against
    # the TrainingArguments at the planned world size (the Trainer raises on any mismatch)
    assert training["deepspeed"] == str(Path(plan.run_dir) / "deepspeed.json")
    ds = got["deepspeed"]
    zero = ds["zero_optimization"]
    assert zero["stage"] == p["zero_stage"]
    for part in ("offload_optimizer", "offload_param"):
        assert (zero.get(part, {}).get("device", "none") != "none") == p[part], part
    assert ds["train_micro_batch_size_per_gpu"] == p["per_device_batch_size"]
    assert ds["gradient_accumulation_steps"] == p["gradient_accumulation_steps"]
    assert ds["train_batch_size"] == p["global_batch_size"]
    assert ds["bf16"]["enabled"] == (p["precision"] == "bf16")
    assert got["deepspeed_mismatches"] == []
    # data: the meta file the script opens, with the keys its build_datasets reads
    meta_path = Path(data["meta_path"])
    if spec.data.generate:  # written on node 0 by a prepare step of the plan
        assert str(meta_path.parent) in [step["creates"] for step in p["prepare"]]
    else:
        assert meta_path == Path(plan.run_dir) / "meta.json"
        meta = json.loads(meta_path.read_text())
        assert set(meta) == set(spec.data.datasets)
        for name, e in spec.data.datasets.items():
            m = meta[name]
            assert (m["annotation"], m["root"]) == (e.annotation, e.root), name
            assert (m["repeat_time"], m["data_augment"]) == (e.repeat_time, e.data_augment), name
            assert m.get("max_dynamic_patch") == e.max_dynamic_patch, name
    # template and tiles: plan.json does not state them; the plan's composed config does
    m = spec.model
    assert data["conv_style"] == m.template
    assert data["down_sample_ratio"] == m.downsample_ratio
    for key in ("force_image_size", "dynamic_image_size", "use_thumbnail", "min_dynamic_patch",
                "max_dynamic_patch"):  # fmt: skip
        assert data[key] == getattr(m, key), key


@pytest.mark.parametrize("revision", sorted(UNKNOWN))
def test_the_official_parse_refuses_a_name_its_revision_does_not_know(revision: str, official):
    got = official[f"unknown-{revision}"][2]
    assert UNKNOWN[revision] in got.get("error", ""), got


@pytest.mark.parametrize("revision", sorted(UNKNOWN))
def test_the_engine_passes_each_revision_exactly_its_own_argument_names(revision: str, official):
    """The names the engine lets through (launcher.engines.internvl) are the revision's own
    ModelArguments / DataTrainingArguments fields, and its TrainingArguments names are HF's."""
    from launcher.engines.internvl import OFFICIAL_DATA_ARGS, OFFICIAL_MODEL_ARGS, TRAINING_ARGS

    case = next(c for c, (r, _) in OFFICIAL_CASES.items() if r == revision)
    fields = official[case][2]["fields"]
    assert set(fields["model"]) == OFFICIAL_MODEL_ARGS[revision]
    assert set(fields["data"]) == OFFICIAL_DATA_ARGS[revision]
    assert set(TRAINING_ARGS) <= set(official[case][2]["training"])


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
