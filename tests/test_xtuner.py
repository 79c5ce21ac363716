"""XTuner engine: rendered config / DeepSpeed JSON / node command vs saved expected copies,
effective values as mmengine loads them, verdict and metrics, and real `xtuner train` runs.

Regenerate expected copies deliberately with UPDATE_EXPECTED=1 and review the diff.
The `xtuner` tests need .venv-xtuner (bash xtuner_cfgs/make_env.sh); without it they skip,
except under CI=true where that is a failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from launcher.config import compose as composing
from launcher.contract import Outcome
from launcher.engines.xtuner import judge, render_xtuner_config, vis_to_metrics, warmup_iters
from launcher.plan.jobscript import REPO
from launcher.submit.pipeline import plan_from_config

EXPECTED = Path(__file__).parent / "expected" / "xtuner"
XTUNER_ENV = REPO / ".venv-xtuner"
XPY = XTUNER_ENV / "bin" / "python"

A800 = ["model=llava_internlm2_20b", "data=llava_pretrain", "hw=a800", "nodes=4", "dry_run=true"]


# The tiny checkpoints' sizes, so the memory check sees the model that runs (a 20B on hw=cpu
# is refused)
TINY_PARAMS = [
    "model.dims.llm.params=1e6",
    "model.dims.vit.params=1e6",
    "model.dims.vit.layers=2",
    "model.dims.vit.hidden=64",
    "model.dims.vit.heads=4",
    "model.dims.vit.intermediate=128",
    "model.dims.projector_params=1e4",
]


def tiny_overrides(root: str) -> list[str]:
    """The tiny LLaVA pretrain on this CPU (models and data from make_tiny_llava.py in root)."""
    return [
        "model=llava_internlm2_20b",
        "data=llava_pretrain",
        "hw=cpu",
        "cluster=local",
        "parallelism=zero2",
        "max_steps=4",
        "per_device_batch_size=2",
        "gradient_accumulation_steps=1",
        "seq_len=128",
        "check_data=false",
        "model.xtuner_base=tiny_llava_pretrain",
        "model.llm_family=llama",
        f"model.llm_path={root}/llm",
        f"model.vision_path={root}/clip",
        "model.force_image_size=28",
        "model.dims.llm.hidden=64",
        "model.dims.llm.layers=2",
        "model.dims.llm.vocab=387",
        "model.dims.llm.intermediate=128",
        *TINY_PARAMS,
        f"data.json_path={root}/data/blip_laion_cc_sbu_558k.json",
        f"data.image_folder={root}/data/images",
        "data.num_workers=0",
    ]


# seed 003: InternVL2-2B through XTuner's InternVL recipe (its base trains the ViT; ours freezes it)
INTERNVL2_2B = ["model=internvl2_2b", "model.engine=xtuner", "data=llava_pretrain", "hw=a800",
                "model.xtuner_base=internvl_v2_internlm2_2b_finetune", "max_steps=30",
                "dry_run=true"]  # fmt: skip
CASES = {
    "a800_4x8": A800,
    "tiny_cpu": [*tiny_overrides("/data/tiny llava"), "dry_run=true"],
    "internvl2_2b_a800": INTERNVL2_2B,
}


def make_plan(tmp_path: Path, overrides: list[str]):
    cfg, problems = composing.compose(
        [*overrides, f"run_dir={tmp_path}/run", f"cache_dir={tmp_path}/cache"]
    )
    return plan_from_config(cfg, problems)


def need_xtuner_env() -> None:
    if not XPY.exists():
        msg = f"{XTUNER_ENV} is absent: build it with bash xtuner_cfgs/make_env.sh"
        if os.environ.get("CI") == "true":
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)


@pytest.mark.parametrize("case", sorted(CASES))
def test_rendered_files_and_node_command_match_expected(case: str, tmp_path: Path):
    plan, _ = make_plan(tmp_path, CASES[case])
    record = json.loads(plan.files["plan.json"])
    rendered = {
        "xtuner_config.py": plan.files["xtuner_config.py"],
        "deepspeed.json": plan.files["deepspeed.json"],
        "node_launch.json": json.dumps(record["node_launch"], indent=2) + "\n",
    }
    assert any(name.startswith("xtuner_base/") for name in plan.files)
    for name, text in rendered.items():
        text = text.replace(str(REPO), "<REPO>").replace(str(tmp_path), "<TMP>")
        path = EXPECTED / case / name
        if os.environ.get("UPDATE_EXPECTED") == "1":
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        assert text == path.read_text(), f"{path} differs (UPDATE_EXPECTED=1 to accept)"


def test_node_command_sets_xtuner_rendezvous_and_path(tmp_path: Path):
    plan, _ = make_plan(tmp_path, A800)
    for rank, node in enumerate(plan.node_launch):
        env = node.env
        assert env["NODE_RANK"] == str(rank) and env["NNODES"] == "4"
        assert env["NPROC_PER_NODE"] == "8"
        assert env["ADDR"] == "{master_addr}" and env["PORT"] == "{master_port}"
        assert env["PATH"] == str(XTUNER_ENV / "bin")
        assert node.argv[1:3] == ("train", f"{tmp_path}/run/xtuner_config.py")
    ds = json.loads(plan.files["deepspeed.json"])
    assert ds["zero_optimization"]["stage"] == 2
    assert ds["bf16"]["enabled"] is True and ds["fp16"]["enabled"] is False
    assert '"auto"' not in plan.files["deepspeed.json"]  # no value left for XTuner to guess


def test_render_lists_every_problem_at_once():
    with pytest.raises(ValueError) as e:
        render_xtuner_config("tiny_llava_pretrain", {"batch_sise": 2, "model_path": "/m"})
    msg = str(e.value)
    for part in ("'batch_sise'", "'model_path'", "max_iters, max_epochs", "throughput.hidden_size"):
        assert part in msg


def test_nasty_paths_stay_python_literals(tmp_path: Path):
    nasty = '/data/it\'s a "dir"\nwith newline'
    text = render_xtuner_config(
        "tiny_llava_pretrain",
        {
            "data_path": nasty,
            "max_iters": 4,
            "throughput": {"hidden_size": 1, "num_layers": 1, "vocab_size": 1, "mlp_ratio": 1.0},
        },
    )
    ns: dict = {}
    line = next(
        ln for ln in text.splitlines() if ln.startswith("train_dataloader.dataset.data_path")
    )
    exec(line.replace("train_dataloader.dataset.data_path", "value"), ns)
    assert ns["value"] == nasty


@pytest.mark.parametrize(
    ("iters", "ratio", "warm"),
    [(1, 0.03, 1), (2, 0.03, 1), (4, 0.03, 2), (100, 0.03, 3), (2181, 0.03, 65)],
)
def test_warmup_is_never_zero_and_leaves_the_cosine_phase(iters, ratio, warm):
    assert warmup_iters(iters, ratio) == warm


def test_vis_data_to_metrics_jsonl():
    # Real vis_data lines of a 2-process CPU run (ZeRO-2, per-device batch 2).
    from launcher.report.collect import xtuner as vis

    rows = vis.parse(EXPECTED / "vis_data_2proc.json").records
    out = vis_to_metrics(rows, world_size=2, per_device_batch=2, accumulation=1)
    raw = [json.loads(ln) for ln in (EXPECTED / "vis_data_2proc.json").read_text().splitlines()]
    assert [m["step"] for m in out] == [r["iter"] for r in raw]
    for m, r in zip(out, raw, strict=True):
        assert m["loss"] == r["loss"] and m["lr"] == r["lr"]
        assert m["step_time"] == r["time"] and m["data_time"] == r["data_time"]
        assert m["tokens_per_sec"] == pytest.approx(2 * r["tokens_per_sec"])
        assert m["samples_per_sec"] == pytest.approx(4 / r["time"])
        assert m["tflops_per_device"] == r["tflops"]
    # with accumulation 2 the renderer logs every 2 iters: step = iter / 2
    acc = vis_to_metrics(
        [{"step": 4, "loss": 1.0, "lr": 0.1}], world_size=1, per_device_batch=1, accumulation=2
    )
    assert acc[0]["step"] == 2


def test_judge(tmp_path: Path):
    ckpt = tmp_path / "iter_4.pth"
    ckpt.mkdir()
    rows = [{"step": i} for i in range(1, 5)]
    ok = judge("Iter(train) [4/4]", rows, planned_iters=4, last_checkpoint=ckpt, returncode=0)
    assert ok == Outcome(True, "training finished: 4 iterations")
    cases = {
        "status 1": judge("", rows, planned_iters=4, last_checkpoint=ckpt, returncode=1),
        "FileNotFoundError: [Errno 2]": judge(
            "Traceback (most recent call last):\nFileNotFoundError: [Errno 2] x.json",
            rows,
            planned_iters=4,
            last_checkpoint=ckpt,
            returncode=0,
        ),
        "no vis_data": judge("", None, planned_iters=4, last_checkpoint=ckpt, returncode=0),
        "iteration 3 of 4": judge(
            "", rows[:3], planned_iters=4, last_checkpoint=ckpt, returncode=0
        ),
        "no final checkpoint": judge("", rows, planned_iters=4, last_checkpoint=None, returncode=0),
    }
    for needle, outcome in cases.items():
        assert not outcome.ok and needle in outcome.reason, (needle, outcome)


# --- in the XTuner environment -------------------------------------------------------------


@pytest.mark.xtuner
@pytest.mark.parametrize("case", sorted(CASES))
def test_effective_values_as_mmengine_loads_them(case: str, tmp_path: Path):
    need_xtuner_env()
    plan, spec = make_plan(tmp_path, CASES[case])
    run = tmp_path / "written"
    for name, text in plan.files.items():
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text(text)
    done = subprocess.run(
        [str(XPY), str(REPO / "xtuner_cfgs" / "check_config.py"), str(run / "xtuner_config.py")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    # what plan.json states, read back as it was written (not from the spec)
    stated = json.loads(plan.files["plan.json"])
    d, m = plan.derived, spec.model
    acc = d.gradient_accumulation_steps
    assert acc == stated["gradient_accumulation_steps"]
    assert got["batch_size"] == stated["per_device_batch_size"]
    assert got["accumulative_counts"] == acc
    assert got["lr"] == stated["lr"]
    assert got["freeze_llm"] == stated["freeze_llm"]
    assert got["freeze_visual_encoder"] == stated["freeze_backbone"]
    assert not stated["freeze_mlp"]  # XTuner always trains the projector
    ds = json.loads((run / "deepspeed.json").read_text())
    assert ds["zero_optimization"]["stage"] == stated["zero_stage"]
    if "model_path" in got:  # InternVL recipe: one checkpoint folder, the image budget inside
        assert got["model_path"] == got["dataset_model_path"] == m.path
        assert got["max_length"] == stated["seq_len"]
        assert got["data_paths"] == [spec.data.json_path]
        assert got["image_folders"] == [spec.data.image_folder]
        assert got["sampler_group_size"] == stated["per_device_batch_size"] * acc
        assert got["train_cfg"] == {"max_iters": stated["max_steps"] * acc}
        return
    image_tokens = (m.force_image_size // m.patch_size) ** 2
    assert got["max_length"] == stated["seq_len"] - image_tokens
    assert got["llm_path"] == m.llm_path and got["tokenizer_paths"] == [m.llm_path]
    assert got["visual_encoder_path"] == got["image_processor_path"] == m.vision_path
    assert got["data_path"] == spec.data.json_path
    assert got["image_folder"] == spec.data.image_folder
    assert got["checkpoint_interval"] == spec.save_steps * acc
    assert got["log_interval"] == acc
    assert got["dist_backend"] == spec.hw.dist_backend
    llm = m.dims.llm
    assert got["throughput"] == {
        "hidden_size": llm.hidden,
        "num_layers": llm.layers,
        "vocab_size": llm.vocab,
        "mlp_ratio": llm.intermediate / llm.hidden,
    }
    if spec.max_steps is None:
        assert got["train_cfg"] == {"max_epochs": 1}
        assert [s["end"] for s in got["param_scheduler"]] == [m.warmup_ratio, 1]
    else:
        iters = spec.max_steps * acc
        assert got["train_cfg"] == {"max_iters": iters}
        warm = warmup_iters(iters, m.warmup_ratio)
        assert [(s["begin"], s["end"]) for s in got["param_scheduler"]] == [
            (0, warm),
            (warm, iters),
        ]
        assert not any(s["by_epoch"] for s in got["param_scheduler"])


@pytest.fixture(scope="session")
def tiny_llava(tmp_path_factory) -> Path:
    need_xtuner_env()
    root = tmp_path_factory.mktemp("xtuner") / "tiny llava"
    subprocess.run(
        [str(XPY), str(REPO / "xtuner_cfgs" / "make_tiny_llava.py"), str(root), "--samples=8"],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return root


def launch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "launch.py", *args], cwd=REPO, capture_output=True, text=True, timeout=900
    )


@pytest.mark.xtuner
@pytest.mark.slow
def test_tiny_xtuner_train_on_cpu(tiny_llava: Path, tmp_path: Path):
    run = tmp_path / "run"
    r = launch(
        *tiny_overrides(str(tiny_llava)), f"run_dir={run}", f"cache_dir={tmp_path}/c",
        "tracking=wandb",
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed", summary["reason"]
    rows = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in rows] == [1, 2, 3, 4]
    # tracking=wandb (offline): one run id, our composed config (node 0's open) and XTuner's
    # scalars, one row per logged iteration (mmengine's WandbVisBackend resuming that id)
    runs = [wandb_run(p) for p in sorted(run.glob("wandb/offline-run-*/run-*.wandb"))]
    assert {r["id"] for r in runs} == {"run"} and len(runs) == 2, runs
    assert runs[0]["config"]["launch"]["model"]["engine"] == "xtuner"
    assert runs[0]["config"]["launch"]["tracking"]["backend"] == "wandb"
    got = [(h["iter"], h["loss"]) for h in runs[1]["history"] if "loss" in h]
    assert got == [(m["step"], pytest.approx(m["loss"], rel=1e-6)) for m in rows]
    assert runs[1]["exit_code"] == 0
    for key in (
        "loss",
        "lr",
        "samples_per_sec",
        "tokens_per_sec",
        "tflops_per_device",
        "step_time",
    ):
        assert all(isinstance(m[key], float) for m in rows), key
    assert max(m["lr"] for m in rows) == pytest.approx(1e-3)  # warm-up reached the set lr
    assert list(run.glob("output/*/vis_data/*.json"))
    assert json.loads((run / "output" / "hf" / "config.json").read_text())["model_type"] == "llava"


@pytest.mark.xtuner
@pytest.mark.slow
def test_internlm2_llava_keeps_xtuners_own_export(tiny_llava: Path, tmp_path: Path):
    """Seed 001's LLM (InternLM2) has no native transformers class: the run must still
    complete, exported in XTuner's own format instead of a native LLaVA folder."""
    run = tmp_path / "run"
    overrides = [
        *(
            o
            for o in tiny_overrides(str(tiny_llava))
            if not o.startswith(("model.llm_family=", "max_steps="))
        ),
        "model.llm_family=internlm2",
        "max_steps=2",
    ]
    r = launch(*overrides, f"run_dir={run}", f"cache_dir={tmp_path}/c")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-3000:]
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"
    assert (run / "output" / "hf" / "projector").is_dir()
    assert not (run / "output" / "hf" / "model.safetensors").exists()


@pytest.mark.xtuner
@pytest.mark.slow
def test_failed_xtuner_run_is_marked_failed(tiny_llava: Path, tmp_path: Path):
    broken = tmp_path / "broken.json"
    broken.write_text('[{"id": "1", "image": "00000/000000000.jpg", "conversations": [')
    run = tmp_path / "run"
    r = launch(
        *tiny_overrides(str(tiny_llava)),
        f"data.json_path={broken}",
        f"run_dir={run}",
        f"cache_dir={tmp_path}/c",
        "tracking=wandb",
    )
    summary = json.loads((run / "summary.json").read_text())
    node_log = (run / "logs" / "node0.log").read_text()
    # XTuner itself exited 0 after the traceback; the launcher must still say failed.
    assert summary["returncode"] == 0, node_log[-2000:]
    assert summary["status"] == "failed"
    assert "JSONDecodeError" in summary["reason"], summary["reason"]
    assert r.returncode != 0
    # the tracked run ends as the attempt did: W&B exit code 1 (node 0's close), not 0
    last = wandb_run(sorted(run.glob("wandb/offline-run-*/run-*.wandb"))[-1])
    assert (last["id"], last["exit_code"]) == ("run", 1)


def wandb_run(path: Path) -> dict:
    """An offline W&B run file: its id, config, history rows and exit code."""
    from test_tracking import wandb_records

    out = {"config": {}, "history": [], "exit_code": None}
    for rec in wandb_records(path):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            out["id"] = rec.run.run_id
            out["config"] |= {i.key: json.loads(i.value_json) for i in rec.run.config.update}
        elif kind == "config":
            out["config"] |= {i.key: json.loads(i.value_json) for i in rec.config.update}
        elif kind == "history":
            items = rec.history.item
            out["history"].append(
                {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in items}
            )
        elif kind == "exit":
            out["exit_code"] = rec.exit.exit_code
    return out
