"""Real DeepSpeed training runs of `python -m internvl_chat.train` under torchrun on CPU."""

from __future__ import annotations

import ast
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
METRIC_KEYS = {"step", "loss", "lr", "samples_per_sec", "tokens_per_sec", "epoch", "grad_norm",
               "step_time", "data_time", "tokens", "image_tokens", "text_tokens", "samples",
               "peak_mem_gb"}  # fmt: skip


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    from internvl_chat.tools.make_synthetic import make_synthetic
    from internvl_chat.tools.make_tiny import make_tiny

    root = tmp_path_factory.mktemp("train_assets")
    make_synthetic(root / "data", num_samples=64, num_eval=8, seed=0)
    models = {
        (llm, layout): make_tiny(root / f"{llm}-{layout}", layout, llm, seed=0)
        for llm, layout in (("internlm2", "original"), ("qwen2", "components"), ("qwen2", "hf"))
    }
    return root / "data", models


def _ds_config(path: Path, stage: int, world: int, micro: int) -> Path:
    zero = {"stage": stage, "overlap_comm": False, "contiguous_gradients": True}
    if stage == 3:
        zero.update(stage3_param_persistence_threshold=1e4,
                    stage3_gather_16bit_weights_on_model_save=True)  # fmt: skip
    else:
        zero.update(allgather_partitions=True, reduce_scatter=True,
                    allgather_bucket_size=1e8, reduce_bucket_size=1e8)  # fmt: skip
    cfg = {
        "train_batch_size": micro * world,
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": 1.0,
        "zero_optimization": zero,
        "fp16": {"enabled": False},
        "bf16": {"enabled": False},
        "zero_allow_untested_optimizer": True,
        "zero_force_ds_cpu_optimizer": False,
    }
    path.write_text(json.dumps(cfg))
    return path


def _args(tmp: Path, data: Path, model: Path, **over) -> dict:
    conv = "internlm2-chat" if "internlm2" in model.name else "Hermes-2"
    a = {
        "model_name_or_path": str(model), "vision_path": None, "llm_path": None, "mlp_path": None,
        "meta_path": str(data / "meta.json"), "conv_style": conv, "max_seq_length": 256,
        "force_image_size": 56, "down_sample_ratio": 0.5, "dynamic_image_size": True,
        "use_thumbnail": True, "min_dynamic_patch": 1, "max_dynamic_patch": 4,
        "ps_version": "v2", "output_dir": str(tmp / "output"), "overwrite_output_dir": False,
        "per_device_train_batch_size": 4, "gradient_accumulation_steps": 1,
        "learning_rate": 2e-3, "weight_decay": 0.0, "warmup_ratio": 0.1,
        "lr_scheduler_type": "cosine", "num_train_epochs": 1, "max_steps": 8,
        "logging_steps": 1, "save_strategy": "steps", "save_steps": 4, "save_total_limit": 1,
        "bf16": False, "seed": 42, "dataloader_num_workers": 0, "grad_checkpoint": True,
        "deepspeed": str(_ds_config(tmp / "ds.json", 2, 1, 4)), "report_to": "tensorboard",
        "metrics_file": str(tmp / "metrics.jsonl"), "do_train": True,
        "evaluation_strategy": "no",
    }  # fmt: skip
    a.update(over)
    return a


def _train(tmp: Path, args: dict, nproc: int = 1) -> tuple[list[dict], list[dict]]:
    path = tmp / "train_args.json"
    path.write_text(json.dumps(args))
    # An empty extension cache of its own: on CPU the run must JIT-build nothing (DeepSpeed's
    # shm-comm op took ~3 min of a cold demo and needs a compiler).
    ext = tmp / "torch_extensions"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
           "TORCH_EXTENSIONS_DIR": str(ext)}  # fmt: skip
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           "--nproc_per_node", str(nproc), "-m", "internvl_chat.train", str(path)]  # fmt: skip
    # Own session, so a hung run is killed with all its workers rather than orphaned.
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, start_new_session=True)  # fmt: skip
    try:
        out, err = p.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        pytest.fail(f"training timed out:\n{out[-3000:]}\n{err[-3000:]}")
    assert p.returncode == 0, out[-3000:] + err[-5000:]
    assert not ext.exists() or not any(ext.iterdir()), sorted(ext.rglob("*"))[:5]
    assert "built successfully" not in out + err
    lines = [ast.literal_eval(x) for x in out.splitlines() if x.startswith("{'")]
    metrics = [json.loads(x) for x in Path(args["metrics_file"]).read_text().splitlines()]
    return lines, metrics


@pytest.mark.slow
def test_zero2_original_internlm2_trains_and_writes_the_contract(assets, tmp_path):
    from internvl_chat.model import detect_layout, load_model

    data, models = assets
    args = _args(tmp_path, data, models[("internlm2", "original")],
                 eval_meta_path=str(data / "meta_eval.json"))  # fmt: skip
    lines, metrics = _train(tmp_path, args)

    steps = [x for x in lines if "loss" in x and "train_loss" not in x]
    assert [set(x) for x in steps] == [{"loss", "grad_norm", "learning_rate", "epoch"}] * 8
    final = lines[-1]
    assert set(final) == {"train_runtime", "train_samples_per_second", "train_steps_per_second",
                          "train_loss", "epoch"}  # fmt: skip
    assert any("eval_loss" in x for x in lines)
    assert [m["step"] for m in metrics] == list(range(1, 9))
    for m in metrics:
        assert set(m) >= METRIC_KEYS
        assert m["tokens"] == m["image_tokens"] + m["text_tokens"] and m["image_tokens"] > 0
        assert m["samples"] == 4
        assert m["tokens_per_sec"] == pytest.approx(m["tokens"] / m["step_time"])
    loss = [m["loss"] for m in metrics]
    assert sum(loss[-3:]) / 3 < loss[0] - 0.5, loss
    assert metrics[0]["lr"] == 0.0 and max(m["lr"] for m in metrics) == pytest.approx(2e-3)

    out = Path(args["output_dir"])
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-8"]  # limit 1
    assert not list(out.glob("checkpoint-*.tmp-*"))
    assert (out / "checkpoint-8" / "COMPLETE.json").exists()
    assert list((out / "runs").rglob("events.out.tfevents.*"))
    assert detect_layout(out) == "original" and (out / "tokenizer.model").exists()
    listed = (out / "trainable_parameters.txt").read_text().split()
    assert listed and len(listed) == len(set(listed))
    trained = load_model(out)
    assert trained.config.force_image_size == 56 and trained.config.template == "internlm2-chat"


@pytest.mark.slow
@pytest.mark.parametrize("key", [("qwen2", "components"), ("qwen2", "hf")])
def test_zero2_other_layouts_train_and_save_in_their_layout(assets, tmp_path, key):
    from internvl_chat.model import detect_layout

    data, models = assets
    args = _args(tmp_path, data, models[key], max_steps=6, save_steps=100)
    _, metrics = _train(tmp_path, args)
    loss = [m["loss"] for m in metrics]
    assert sum(loss[-2:]) / 2 < loss[0] - 0.3, loss
    assert detect_layout(args["output_dir"]) == key[1]


@pytest.mark.slow
def test_zero3_two_processes_resume_continues_the_same_run(assets, tmp_path):
    data, models = assets
    model = models[("internlm2", "original")]
    ds = str(_ds_config(tmp_path / "ds3.json", 3, 2, 2))
    common = {"per_device_train_batch_size": 2, "deepspeed": ds, "max_steps": 4,
              "save_steps": 2, "save_total_limit": 3}  # fmt: skip
    full = tmp_path / "full"
    full.mkdir()
    _, a = _train(full, _args(full, data, model, **common), nproc=2)
    assert [m["samples"] for m in a] == [4] * 4  # 2 ranks x 2
    # A second run that finds only checkpoint-2 picks up there and repeats steps 3 and 4.
    resumed = tmp_path / "resumed"
    (resumed / "output").mkdir(parents=True)
    shutil.copytree(full / "output" / "checkpoint-2", resumed / "output" / "checkpoint-2")
    lines, b = _train(resumed, _args(resumed, data, model, **common), nproc=2)
    assert lines[0] == {"resumed_from": str(resumed / "output" / "checkpoint-2"), "global_step": 2}
    assert [m["step"] for m in b] == [3, 4]
    for x, y in zip(a[2:], b, strict=True):
        assert y["loss"] == pytest.approx(x["loss"], rel=1e-4)
        assert y["lr"] == pytest.approx(x["lr"])
