"""Issue 18 item 4: each input file is read once per launch.

The check stage reads data.meta_file and data.eval_meta_file, and scans each annotation file, once
(launcher.config.datafacts.read_meta); the data problems, the sample counts, the memory
estimate, the duration line and every engine's check and files take that read instead of
opening the files again."""

from __future__ import annotations

import builtins
import io
import json
import os
from collections import Counter
from pathlib import Path

import pytest

from launcher.config import compose as composing
from launcher.plan import site
from launcher.submit.pipeline import plan_from_config

ENGINES = {
    "internvl_chat": ["model=internvl2_2b", "hw=a800"],
    "internvl_official": [  # a checkout absent here: a dry run plans it all the same
        "model=internvl2_2b",
        "hw=a800",
        "model.engine=internvl_official",
        "model.internvl_root=/src/InternVL",
    ],
    "xtuner": [
        "model=internvl2_2b",
        "hw=a800",
        "model.engine=xtuner",
        "model.xtuner_base=internvl_v2_internlm2_2b_finetune",
        "max_steps=30",
    ],
    "mindspeed": [
        "model=internvl2_2b",
        "hw=ascend910b",
        "model.engine=mindspeed",
        "parallelism=megatron",
        "model.mindspeed_root=/src/MindSpeed-MM",
        "per_device_batch_size=4",
        "gradient_accumulation_steps=16",
    ],
}


@pytest.fixture(autouse=True)
def no_site_probe(monkeypatch):
    monkeypatch.setattr(site, "partition_info", lambda *a, **k: None)


def opened(monkeypatch) -> Counter[str]:
    """Count every open of a named file in this process (Path.open goes through io.open)."""
    counts: Counter[str] = Counter()
    real = io.open

    def counting(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)):
            counts[os.path.abspath(os.fspath(file))] += 1
        return real(file, *args, **kwargs)

    monkeypatch.setattr(io, "open", counting)
    monkeypatch.setattr(builtins, "open", counting)
    return counts


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_meta_and_annotations_are_read_once(engine: str, tmp_path: Path, monkeypatch):
    (tmp_path / "images").mkdir()
    ann = tmp_path / "train.jsonl"
    row = {"image": "a.png", "conversations": [{"from": "human", "value": "<image>\nHi"}]}
    ann.write_text("".join(json.dumps({"id": i, **row}) + "\n" for i in range(40)))
    meta = tmp_path / "meta.json"  # relative paths: the plan's copy makes them absolute
    meta.write_text(json.dumps({"d": {"root": "images", "annotation": "train.jsonl"}}))
    evals = tmp_path / "meta_eval.json"
    evals.write_text(json.dumps({"e": {"root": "images", "annotation": "train.jsonl"}}))
    cfg, problems = composing.compose(
        [
            *ENGINES[engine],
            "data=meta_file",
            f"data.meta_file={meta}",
            f"data.eval_meta_file={evals}",
            "check_data=false",
            "dry_run=true",
            f"run_dir={tmp_path}/run",
            f"cache_dir={tmp_path}/cache",
        ]
    )
    counts = opened(monkeypatch)
    plan, _ = plan_from_config(cfg, problems)
    assert counts[str(meta)] == 1, counts
    assert counts[str(ann)] == 1, counts
    assert counts[str(evals)] == 1, counts
    # what the one read fed: the sample count, the memory estimate's lengths, the engine's files
    assert any("40 samples, lines counted" in n for n in plan.notes), plan.notes
    assert any(str(ann) in text for name, text in plan.files.items() if name != "plan.json")
    if plan.memory_estimate is not None:
        assert "scanned samples" in plan.memory_estimate.detail
