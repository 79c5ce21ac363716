"""engine=internvl_official at head runs the tree of the model's generation (issue 22 item 5):
internvl_chat/ for InternVL2.5/3, internvl_chat_gpt_oss/ for InternVL3.5, each given only the
argument names its own finetune script declares (re-read here from the checkouts), with the
3.5 packed recipe rendered from the model config; what a tree cannot build or run is a check
problem naming the setting. The real run (slow) trains a tiny Qwen3 InternVL through the 3.5
tree in .venv-internvl-gpt-oss: skipped without that env (tests/run.sh does not build it).
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import os
import subprocess
from pathlib import Path

import pytest

from launcher.config import compose as composing
from launcher.engines.internvl import TRAINING_ARGS
from launcher.engines.official import trees
from launcher.submit.pipeline import main, plan_from_config

REPO = Path(__file__).resolve().parents[1]
UPSTREAM = REPO.parent / "shared" / "upstream"
HEAD = UPSTREAM / "InternVL-2410d1d"
PIN = UPSTREAM / "InternVL-764fdc9"
GPT_OSS_PY = REPO / ".venv-internvl-gpt-oss" / "bin" / "python"


def need(path: Path) -> Path:
    if not path.exists():
        msg = f"{path} is absent (the official InternVL checkouts, shared/upstream)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    return path


def declared_args(script: Path) -> set[str]:
    """Field names of ModelArguments + DataTrainingArguments in an official finetune script."""
    names = set()
    for node in ast.parse(script.read_text()).body:
        if isinstance(node, ast.ClassDef) and node.name in (
            "ModelArguments",
            "DataTrainingArguments",
        ):
            names |= {s.target.id for s in node.body if isinstance(s, ast.AnnAssign)}
    return names


@pytest.mark.parametrize(
    ("key", "checkout", "tree"),
    [("pin", PIN, "internvl_chat"), ("head", HEAD, "internvl_chat"),
     ("gpt_oss", HEAD, "internvl_chat_gpt_oss")],
)  # fmt: skip
def test_argument_tables_are_the_trees_own(key: str, checkout: Path, tree: str):
    script = need(checkout) / tree / "internvl" / "train" / "internvl_chat_finetune.py"
    assert trees.MODEL_ARGS[key] | trees.DATA_ARGS[key] == declared_args(script)


def plan(tmp_path: Path, *overrides: str) -> dict[str, str]:
    cfg, problems = composing.compose(
        [
            "model.engine=internvl_official",
            f"model.internvl_root={need(HEAD)}",
            "data=synthetic",
            "dry_run=true",
            f"run_dir={tmp_path}/run",
            f"cache_dir={tmp_path}/cache",
            *overrides,
        ]
    )
    p, _ = plan_from_config(cfg, problems)
    return dict(p.files)


def test_internvl3_5_trains_in_the_gpt_oss_tree_with_its_packed_recipe(tmp_path: Path):
    files = plan(tmp_path, "model=internvl3_5_8b", "hw=a100", "nodes=2", "max_steps=100")
    args = json.loads(files["train_args.json"])
    renamed = trees.TRAINING_RENAMES[trees.GPT_OSS]  # transformers 4.55's names
    assert set(args) <= trees.allowed_args_for("gpt_oss") | TRAINING_ARGS | set(renamed.values())
    assert not set(renamed) & set(args) and args["eval_strategy"] == "no"
    assert {"use_data_resampling", "loss_reduction_all_gather"}.isdisjoint(args)  # 3.5 lacks them
    packed = {k: args[k] for k in ("use_packed_ds", "max_packed_tokens", "num_images_expected")}
    assert packed == {"use_packed_ds": True, "max_packed_tokens": 32768, "num_images_expected": 96}
    assert args["loss_reduction"] == "square" and args["conv_style"] == "internvl2_5"
    assert args["per_device_train_batch_size"] == 1 and args["max_steps"] == 100
    launch = json.loads(files["plan.json"])["node_launch"][1]
    code = f"{tmp_path}/run/official/internvl_chat_gpt_oss"
    assert launch["argv"][0].endswith(".venv-internvl-gpt-oss/bin/python")
    assert launch["argv"][-2] == f"{code}/internvl/train/internvl_chat_finetune.py"
    assert launch["env"]["PYTHONPATH"] == code
    # our torchrun owns the rendezvous: two nodes, node rank 1, no WORLD_SIZE=nodes
    assert "--nnodes=2" in launch["argv"] and "--node_rank=1" in launch["argv"]
    assert not {"WORLD_SIZE", "RANK", "MASTER_PORT"} & set(launch["env"])
    assert files["official_edits.patch"] == ""  # GPU hardware: the tree as it is
    warnings = json.loads(files["plan.json"])["warnings"]
    assert any("keeps no data position" in w for w in warnings)  # its "TODO: quick resume"
    assert any(k.startswith("official/internvl_chat_gpt_oss/internvl/patch/") for k in files)


def test_internvl2_5_and_3_stay_in_internvl_chat(tmp_path: Path):
    for model in ("internvl2_5_8b", "internvl3_8b"):
        files = plan(tmp_path / model, f"model={model}", "hw=a100", "nodes=1")
        launch = json.loads(files["plan.json"])["node_launch"][0]
        assert "/official/internvl_chat/internvl/train/" in launch["argv"][-2]
        assert launch["argv"][0].endswith(".venv-internvl/bin/python")
        assert (
            set(json.loads(files["train_args.json"]))
            <= trees.allowed_args_for("head") | TRAINING_ARGS
        )


def test_cpu_copy_gets_the_edits_the_3_5_tree_needs(tmp_path: Path):
    files = plan(tmp_path, *TINY_QWEN3)
    listing = files["official_edits.md"]
    assert listing.startswith("# Edits to the official internvl_chat_gpt_oss/ tree (head)")
    for name in ("E1", "E2", "E3", "E4"):
        assert f"- {name}: " in listing, listing
    patch = files["official_edits.patch"]
    assert "a/internvl_chat_gpt_oss/internvl/patch/__init__.py" in patch
    assert "replace_gpt_oss_with_flash_sink_attn = _needs_flash_attn(" in patch  # triton import
    assert patch.count("[launcher E4]") == 2


def refused(tmp_path: Path, *overrides: str) -> str:
    with contextlib.redirect_stderr(io.StringIO()) as err:
        rc = main(
            [
                "model.engine=internvl_official",
                f"model.internvl_root={need(HEAD)}",
                "data=synthetic",
                f"run_dir={tmp_path}/run",
                f"cache_dir={tmp_path}/cache",
                *overrides,
            ]
        )
    assert rc == 2, err.getvalue()
    assert not (tmp_path / "run").exists()
    return err.getvalue()


@pytest.mark.parametrize(
    ("overrides", "wanted"),
    [
        (("model=internvl3_9b", "hw=a100", "nodes=4"),
         "model.llm_family: internlm3: the official internvl_chat/ tree builds only"),
        (("model=internvl3_5_8b", "hw=a100", "max_steps=9", "model.internvl_tree=internvl_chat"),
         "model.internvl_tree: qwen3: the official internvl_chat/ tree builds only"),
        (("model=internvl2_8b", "hw=a100", "model.internvl_tree=internvl_chat_gpt_oss"),
         "model.internvl_tree: internlm2: the official internvl_chat_gpt_oss/ tree builds only"),
        (("model=internvl_20b", "hw=a100", "model.internvl_tree=internvl_chat_gpt_oss"),
         "model.internvl_tree: internvl_chat_gpt_oss/ exists only at internvl_revision=head"),
        (("model=internvl3_5_8b", "hw=a100"), "max_steps: the official packed dataset"),
        (("model=internvl3_5_8b", "hw=a100", "max_steps=9", "+engine_args.use_data_resampling=1"),
         "engine_args.use_data_resampling: unknown to engine internvl_official at "
         "internvl_revision=head (internvl_chat_gpt_oss/)"),
        (("model=internvl3_5_8b", "hw=a100", "max_steps=9", "+hw.env.WORLD_SIZE=2"),
         "hw.env.WORLD_SIZE: the launcher sets the rendezvous itself"),
    ],
)  # fmt: skip
def test_what_a_tree_cannot_build_is_refused(tmp_path: Path, overrides, wanted):
    assert wanted in refused(tmp_path, *overrides)


def test_the_tree_setting_is_refused_where_no_official_tree_runs(tmp_path: Path):
    err = refused(tmp_path, "model=tiny_internvl", "model.engine=internvl_chat",
                  "model.internvl_tree=internvl_chat_gpt_oss")  # fmt: skip
    assert "model.internvl_tree: only picks the official tree" in err


def test_packed_on_cpu_and_a_missing_env_name_the_fix(tmp_path: Path):
    err = refused(
        tmp_path, *TINY_QWEN3, "model.packed=true", f"+engine_args.official_env={tmp_path}/none"
    )
    assert "model.packed: packed rows in internvl_chat_gpt_oss/ attend through flash-attn" in err
    assert "engine_args.official_env" in err and "bash setup.sh --official-gpt-oss" in err


TINY_QWEN3 = (
    "model=tiny_internvl",
    "model.make_tiny.llm=qwen3",
    "model.llm_family=qwen3",
    "model.template=internvl2_5",
    "model.internvl_revision=head",
    "hw=cpu",
)


@pytest.mark.slow
def test_tiny_qwen3_trains_through_the_gpt_oss_tree(tmp_path: Path):
    """A few steps of the official 3.5 tree on CPU, cluster=local, metrics.jsonl written."""
    if not GPT_OSS_PY.exists():  # tests/run.sh does not build it (about 4 minutes)
        pytest.skip(f"{GPT_OSS_PY} is absent (bash setup.sh --official-gpt-oss)")
    run_dir = tmp_path / "run"
    rc = main(
        [
            *TINY_QWEN3,
            "model.engine=internvl_official",
            f"model.internvl_root={need(HEAD)}",
            "cluster=local",
            "parallelism=zero1",
            "data.num_samples=16",
            "max_steps=3",
            "wait=true",
            f"run_dir={run_dir}",
            f"cache_dir={tmp_path / 'cache'}",
        ]
    )
    assert rc == 0, (run_dir / "logs" / "node0.log").read_text()[-4000:]
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(r["loss"] > 0 for r in rows)
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"


def test_the_3_5_finetune_parses_what_the_plan_states(tmp_path: Path):
    """train_args.json of internvl3_5_8b on 2x8 A100 through the 3.5 tree's own dataclasses
    and transformers 4.55's TrainingArguments (tests/tools/official_args.py), in its env."""
    if not GPT_OSS_PY.exists():
        pytest.skip(f"{GPT_OSS_PY} is absent (bash setup.sh --official-gpt-oss)")
    from launcher.rundir import RunDir

    cfg, problems = composing.compose(
        ["model=internvl3_5_8b", "hw=a100", "nodes=2", "max_steps=100",
         "model.engine=internvl_official", f"model.internvl_root={need(HEAD)}",
         "data=synthetic", "dry_run=true", f"run_dir={tmp_path}/run"]
    )  # fmt: skip
    plan, _ = plan_from_config(cfg, problems)
    RunDir(plan.run_dir).materialize(plan.files, code={})
    run = Path(plan.run_dir)
    script = run / "official/internvl_chat_gpt_oss/internvl/train/internvl_chat_finetune.py"
    # parsed on this CPU machine: 4.55 refuses bf16 without a GPU unless use_cpu (not the nodes')
    args = json.loads((run / "train_args.json").read_text())
    assert "use_cpu" not in args
    (run / "parse_args.json").write_text(json.dumps({**args, "use_cpu": True}))
    job = {"script": str(script), "args": str(run / "parse_args.json"), "world_size": 16}
    tool = Path(__file__).parent / "tools" / "official_args.py"
    proc = subprocess.run([str(GPT_OSS_PY), str(tool)], input=json.dumps([job]),
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    (got,) = json.loads(proc.stdout)
    assert "error" not in got, got
    data, training = got["data"], got["training"]
    assert (data["use_packed_ds"], data["max_packed_tokens"], data["num_images_expected"]) == (
        True, 32768, 96)  # fmt: skip
    assert data["loss_reduction"] == "square" and data["conv_style"] == "internvl2_5"
    assert training["per_device_train_batch_size"] == 1 and training["max_steps"] == 100
    assert training["gradient_accumulation_steps"] * 16 == 512 and training["bf16"] is True
    assert got["deepspeed_mismatches"] == []
