"""engine=internvl_official renders only argument names the official finetune entry knows,
for the pinned revision (764fdc9, seed 000) and the newest one read (2410d1d)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from launcher import compose as composing
from launcher.engines.internvl import OFFICIAL_DATA_ARGS, OFFICIAL_MODEL_ARGS, TRAINING_ARGS
from launcher.pipeline import plan_from_config

# Names straight from shared/specs/internvl_finetune.md section 2 (and 1.3 for the HF flags).
SPEC_PIN_ONLY = {"use_custom_trainer", "neftune_alpha"}
SPEC_HEAD_ONLY = {
    "use_fast_tokenizer",
    "use_liger",
    "min_num_frame",
    "max_num_frame",
    "use_packed_ds",
}


@pytest.mark.parametrize("revision", ["pin", "head"])
def test_official_argv_uses_only_that_revisions_names(tmp_path: Path, revision: str):
    meta = tmp_path / "meta.json"
    meta.write_text(
        json.dumps(
            {
                "d": {
                    "root": "imgs",
                    "annotation": "a.jsonl",
                    "data_augment": False,
                    "repeat_time": 1,
                }
            }
        )
    )
    root = tmp_path / "InternVL"
    cfg, problems = composing.compose(
        [
            "model=internvl_20b",
            "hw=a800",
            "nodes=4",
            "model.engine=internvl_official",
            f"model.internvl_root={root}",
            f"model.internvl_revision={revision}",
            "data=meta_file",
            f"data.meta_file={meta}",
            "dry_run=true",
            f"run_dir={tmp_path}/run",
        ]
    )
    plan, _ = plan_from_config(cfg, problems)
    args = json.loads(plan.files["train_args.json"])
    allowed = OFFICIAL_MODEL_ARGS[revision] | OFFICIAL_DATA_ARGS[revision] | TRAINING_ARGS
    assert set(args) <= allowed
    other = "head" if revision == "pin" else "pin"
    assert not set(args) & (SPEC_HEAD_ONLY if revision == "pin" else SPEC_PIN_ONLY), other
    # seed 000's rules carried over exactly
    assert (args["freeze_llm"], args["freeze_mlp"], args["freeze_backbone"]) == (True, False, False)
    assert args["max_seq_length"] == 8192 and args["learning_rate"] == 2e-4
    assert args["overwrite_output_dir"] is False  # auto-resume stays possible after a requeue
    assert args["vision_path"].endswith("InternViT-6B-448px-V1-5")
    launch = json.loads(plan.files["plan.json"])["node_launch"][0]
    assert launch["argv"][-2] == f"{root}/internvl_chat/internvl/train/internvl_chat_finetune.py"
    assert launch["argv"][-1].endswith("train_args.json")
    assert launch["env"]["LAUNCHER"] == "pytorch"
    assert launch["env"]["PYTHONPATH"] == f"{root}/internvl_chat"
    assert "MASTER_PORT" not in launch["env"]  # torchrun gets it from the job id, never 34229
    ds = json.loads(plan.files["deepspeed.json"])
    assert ds["optimizer"]["type"] == "AdamW" and ds["optimizer"]["params"]["lr"] == 2e-4
    # the copied meta file resolves relative paths against its own folder
    meta_copy = json.loads(plan.files["meta.json"])
    assert meta_copy["d"]["annotation"] == str(tmp_path / "a.jsonl")


def test_our_trainer_gets_the_same_names_plus_extras(tmp_path: Path):
    cfg, problems = composing.compose(
        [
            "model=internvl2_1b",
            "data=synthetic",
            "hw=a100",
            "nodes=1",
            "dry_run=true",
            f"run_dir={tmp_path}/run",
        ]
    )
    plan, _ = plan_from_config(cfg, problems)
    args = json.loads(plan.files["train_args.json"])
    assert {"metrics_file", "max_bad_sample_ratio"} <= set(args)
    assert args["conv_style"] == "Hermes-2" and args["model_name_or_path"].endswith("InternVL2-1B")
