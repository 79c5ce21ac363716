"""A first real run at a site (issue 23): the data is what the user named, the steps are stated
and every engine renders them, one bad-sample policy, unique run dirs, a failed submit says so.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import hydra.core.utils
import pytest

from launcher.config import compose as composing
from launcher.config.spec import ConfigError
from launcher.plan import site
from launcher.plan.jobscript import REPO
from launcher.submit.pipeline import plan_from_config, run


@pytest.fixture(autouse=True)
def no_sinfo(monkeypatch):
    monkeypatch.setattr(site, "partition_info", lambda *a, **k: None)


def plan_of(tmp_path: Path, *overrides: str):
    cfg, problems = composing.compose(
        [*overrides, f"run_dir={tmp_path}/run", f"cache_dir={tmp_path}/cache"]
    )
    return plan_from_config(cfg, problems)


def a_dataset(d: Path, lines: list[dict], name: str = "mine") -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "a.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    meta = d / "meta.json"
    meta.write_text(json.dumps({name: {"root": str(d), "annotation": "a.jsonl", "repeat_time": 2}}))
    return meta


TEXT = {"conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]}


def test_data_meta_file_alone_trains_on_it_and_the_data_line_says_so(tmp_path: Path):
    meta = a_dataset(tmp_path / "d", [TEXT] * 3)
    plan, spec = plan_of(
        tmp_path, "model=internvl2_1b", "hw=a100", f"data.meta_file={meta}", "dry_run=true"
    )
    assert spec.data.name == "meta_file" and plan.data == "meta_file"
    assert json.loads(plan.files["meta.json"])["mine"]["annotation"] == str(tmp_path / "d/a.jsonl")
    line = next(n for n in plan.notes if n.startswith("data: meta_file"))
    assert f"mine (6 samples, lines counted; root {tmp_path / 'd'})" in line  # 3 lines x repeat 2


def test_steps_are_stated_and_every_engine_renders_them(tmp_path: Path):
    # ours: 18 samples on 1 rank, batch 4 -> 5 micro-batches, // accumulation 2 = 2 per epoch
    plan, _ = plan_of(tmp_path / "a", "data.num_samples=18", "per_device_batch_size=4",
                      "gradient_accumulation_steps=2", "epochs=1.5")  # fmt: skip
    assert plan.derived.optimizer_steps == 3
    assert json.loads(plan.files["plan.json"])["optimizer_steps"] == 3
    assert "steps: 3 optimizer steps (18 samples x 1.5 epoch(s) / global batch 8)" in plan.notes
    # MindSpeed: --train-iters is the plan's count
    plan, _ = plan_of(tmp_path / "b", "model=internvl2_8b", "model.engine=mindspeed",
                      "data=synthetic", "hw=ascend910b", "parallelism=megatron", "dry_run=true")  # fmt: skip
    argv = plan.node_launch[0].argv
    iters = int(argv[argv.index("--train-iters") + 1])
    assert iters == plan.derived.optimizer_steps == 256 // 128
    # XTuner: max_iters counts micro-batches (steps x accumulation)
    plan, _ = plan_of(tmp_path / "c", "model=llava_internlm2_20b", "hw=a800", "nodes=4",
                      "max_steps=7", "gradient_accumulation_steps=2", "dry_run=true")  # fmt: skip
    assert plan.derived.optimizer_steps == 7
    assert "max_iters=14)" in plan.files["xtuner_config.py"]


def test_expected_duration_states_its_assumption(tmp_path: Path):
    plan, _ = plan_of(tmp_path, "model=internvl_20b", "hw=a800", "nodes=4", "dry_run=true")
    when = next(n for n in plan.notes if n.startswith("expected duration:"))
    assert "peak 312 TFLOPs x assumed MFU 35%" in when
    assert "steps: 6 optimizer steps (12,413 samples" in "\n".join(plan.notes)


def test_benchmark_overlays_default_to_their_step_target(tmp_path: Path):
    plan, _ = plan_of(
        tmp_path / "a", "benchmark=internvl_20b_tgs", "hw=a800", "nodes=4", "dry_run=true"
    )
    assert plan.derived.optimizer_steps == 251
    plan, _ = plan_of(
        tmp_path / "b", "benchmark=llava_20b_pretrain", "hw=a800", "nodes=4", "dry_run=true"
    )
    assert plan.derived.optimizer_steps == 500


def test_xtuner_internvl_renders_our_data_never_the_base_files(tmp_path: Path):
    meta = a_dataset(tmp_path / "d", [TEXT])
    common = ["model=internvl2_2b", "model.engine=xtuner", "hw=a100", "dry_run=true",
              "model.xtuner_base=internvl_v2_internlm2_2b_finetune"]  # fmt: skip
    plan, _ = plan_of(tmp_path / "a", *common, f"data.meta_file={meta}")
    text = plan.files["xtuner_config.py"]
    assert f"train_dataloader.dataset.data_paths = [{str(tmp_path / 'd/a.jsonl')!r}]" in text
    assert f"train_dataloader.dataset.image_folders = [{str(tmp_path / 'd')!r}]" in text
    assert "train_dataloader.dataset.repeat_times = [2]" in text
    plan, spec = plan_of(tmp_path / "b", *common, "data=synthetic")
    assert f"data_paths = [{spec.data.dir + '/train.jsonl'!r}]" in plan.files["xtuner_config.py"]
    assert any("internvl_chat.tools.make_synthetic" in p.argv for p in plan.prepare)


def test_memory_line_on_cpu_says_not_checked(tmp_path: Path):
    plan, _ = plan_of(tmp_path, "max_steps=2")
    assert "not checked on CPU)" in next(n for n in plan.notes if n.startswith("checked:"))


@pytest.mark.slow  # two validate_data subprocesses with a tiny tokenizer
def test_one_bad_sample_policy_for_preflight_and_trainer(tmp_path: Path):
    from internvl_chat.tokenizer import save_tiny_tokenizer

    model = save_tiny_tokenizer(tmp_path / "model", "internlm2")
    (model / "config.json").write_text(
        json.dumps({"force_image_size": 56, "vision_config": {"patch_size": 14}})
    )
    broken = {"conversations": [{"from": "gpt", "value": "A"}]}  # starts with the answer
    meta = a_dataset(tmp_path / "d", [TEXT] * 39 + [broken])
    common = ["model=tiny_internvl", "model.make_tiny=null", f"model.path={model}",
              f"data.meta_file={meta}", f"cluster.python={sys.executable}"]  # fmt: skip
    plan, _ = plan_of(tmp_path / "a", *common, "data.max_bad_sample_ratio=0.1")
    note = next(n for n in plan.notes if "meta file(s) OK" in n)
    assert "1 sample problem(s) within data.max_bad_sample_ratio=0.1" in note
    assert json.loads(plan.files["train_args.json"])["max_bad_sample_ratio"] == 0.1
    with pytest.raises(ConfigError) as e:
        plan_of(tmp_path / "b", *common, "data.max_bad_sample_ratio=0.01")
    assert "a.jsonl:40:" in str(e.value)
    assert "data.max_bad_sample_ratio=0.01" in str(e.value) and "check_data=false" in str(e.value)


class _SameSecond(datetime):
    @classmethod
    def now(cls, tz=None):
        return datetime(2026, 12, 7, 3, 0, 0)


def test_two_launches_in_the_same_second_both_start(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setattr(hydra.core.utils, "datetime", _SameSecond)
    for _ in range(2):
        cfg, problems = composing.compose(
            [f"runs_root={tmp_path}", f"cache_dir={tmp_path}/cache", "dry_run=true", "max_steps=1"]
        )
        assert run(cfg, problems) == 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "cache") == [
        "20261207-030000-tiny_internvl",
        "20261207-030000-tiny_internvl-2",
    ]


@pytest.mark.slurm
def test_a_failed_submit_exits_nonzero_and_the_run_dir_says_failed(slurm_cluster, tmp_path: Path):
    run_dir = tmp_path / "run"
    env = {**slurm_cluster.env}
    r = subprocess.run(
        [sys.executable, "launch.py", "cluster=slurm", "data=synthetic", "max_steps=1",
         "cluster.sbatch_extra={reservation: no_such_reservation}", f"run_dir={run_dir}",
         f"cache_dir={tmp_path}/cache"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 1, r.stdout + r.stderr
    assert "reservation" in r.stderr.lower() and "Traceback" not in r.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and "reservation" in summary["reason"].lower()
    status = subprocess.run([sys.executable, "launch.py", "status", str(run_dir)], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert status.stdout.startswith("FAILED"), status.stdout


@pytest.mark.slow  # a tiny local training run: make_tiny, make_synthetic, 3 optimizer steps
def test_our_trainer_takes_the_steps_the_plan_states(tmp_path: Path):
    """18 samples, batch 4, accumulation 2, 1.5 epochs: the plan says 3 steps, the trainer
    (its own DistributedSampler and epoch arithmetic) takes exactly those."""
    run_dir = tmp_path / "runs" / "first"
    r = subprocess.run(
        [sys.executable, "launch.py", "data.num_samples=18", "per_device_batch_size=4",
         "gradient_accumulation_steps=2", "epochs=1.5", f"run_dir={run_dir}",
         f"runs_root={tmp_path / 'runs'}", f"cache_dir={tmp_path / 'cache'}"],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "steps: 3 optimizer steps (18 samples x 1.5 epoch(s) / global batch 8)" in r.stdout
    planned = json.loads((run_dir / "plan.json").read_text())["optimizer_steps"]
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == list(range(1, planned + 1)) == [1, 2, 3]
    # the next plan of this model on this hw takes its expected duration from that run
    plan, _ = plan_of(tmp_path / "next", f"runs_root={tmp_path / 'runs'}", "max_steps=30")
    when = next(n for n in plan.notes if n.startswith("expected duration:"))
    assert "(run first: " in when and "samples/s on 1 device(s), scaled to 1)" in when


@pytest.mark.xtuner
def test_mmengine_reads_our_datasets_from_the_rendered_internvl_config(tmp_path: Path):
    """What XTuner will see: the rendered config loaded by mmengine in .venv-xtuner."""
    from tests.test_xtuner import XPY, need_xtuner_env

    need_xtuner_env()
    meta = a_dataset(tmp_path / "d", [TEXT])
    cfg, problems = composing.compose(
        ["model=internvl2_2b", "model.engine=xtuner", "hw=a100", "dry_run=true",
         "model.xtuner_base=internvl_v2_internlm2_2b_finetune", f"data.meta_file={meta}",
         f"run_dir={tmp_path}/written"]
    )  # fmt: skip
    assert run(cfg, problems) == 0
    code = (
        "import json, sys; from mmengine.config import Config; "
        "d = Config.fromfile(sys.argv[1]).train_dataloader.dataset; "
        "print(json.dumps([d.data_paths, d.image_folders, d.repeat_times]))"
    )
    out = subprocess.run([str(XPY), "-c", code, f"{tmp_path}/written/xtuner_config.py"],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.splitlines()[-1]) == [
        [str(tmp_path / "d" / "a.jsonl")],
        [str(tmp_path / "d")],
        [2],
    ]
