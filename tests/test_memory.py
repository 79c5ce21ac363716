"""Memory pre-flight against DeepSpeed's own model-state estimators (the test may import
deepspeed; launcher.plan.memory must not)."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_flops import LLMS, TILE_448, VITS

from launcher.flops import ModelDims, Trainable
from launcher.plan.memory import GIB, estimate, llm_activation_bytes, model_states

ds2 = pytest.importorskip("deepspeed.runtime.zero.stage_1_and_2")
ds3 = pytest.importorskip("deepspeed.runtime.zero.stage3")

CASES = [(25.5e9, 8, 4), (1.9e9, 8, 1), (7.7e9, 4, 2), (0.4e6, 1, 2)]


@pytest.mark.parametrize("params, gpn, nodes", CASES)
@pytest.mark.parametrize("offload", [False, True])
def test_zero2_equals_deepspeed(params, gpn, nodes, offload):
    cpu, gpu = ds2.estimate_zero2_model_states_mem_needs(
        params, num_gpus_per_node=gpn, num_nodes=nodes, cpu_offload=offload
    )
    ours = model_states(
        params, params, largest_layer_params=1, zero_stage=2, gpus_per_node=gpn, nodes=nodes,
        offload_optimizer=offload,
    )  # fmt: skip
    assert ours.gpu_bytes == pytest.approx(gpu, abs=1)
    assert ours.cpu_bytes_per_node == pytest.approx(cpu, abs=1)


@pytest.mark.parametrize("params, gpn, nodes", CASES)
@pytest.mark.parametrize(
    "offload_opt, offload_param", [(False, False), (True, False), (True, True)]
)
def test_zero3_equals_deepspeed(params, gpn, nodes, offload_opt, offload_param):
    largest = params / 40
    cpu, gpu, _ = ds3.estimate_zero3_model_states_mem_needs(
        params, largest, num_gpus_per_node=gpn, num_nodes=nodes,
        cpu_offload=offload_opt, cpu_offload_params=offload_param,
    )  # fmt: skip
    ours = model_states(
        params, params, largest_layer_params=largest, zero_stage=3, gpus_per_node=gpn,
        nodes=nodes, offload_optimizer=offload_opt, offload_param=offload_param,
    )  # fmt: skip
    assert ours.gpu_bytes == pytest.approx(gpu, abs=1)
    assert ours.cpu_bytes_per_node == pytest.approx(cpu, abs=1)


def test_frozen_part_costs_weights_only():
    """Seed 000 shape: LLM (19.86B) frozen, 5.6B trainable, ZeRO-2 on 32 devices: 2 bytes for
    every weight, 18 bytes per trainable parameter shared over 32."""
    p, pt = 25.5e9, 5.6e9
    s = model_states(p, pt, largest_layer_params=1, zero_stage=2, gpus_per_node=8, nodes=4)
    assert s.gpu_bytes == pytest.approx(2 * p + 18 * pt / 32)
    s1 = model_states(p, pt, largest_layer_params=1, zero_stage=1, gpus_per_node=8, nodes=4)
    assert s1.gpu_bytes == pytest.approx(2 * p + 2 * pt + 16 * pt / 32)
    s0 = model_states(p, pt, largest_layer_params=1, zero_stage=0, gpus_per_node=8, nodes=4)
    assert s0.gpu_bytes == pytest.approx(2 * p + 18 * pt)


def test_bad_combinations_all_listed():
    with pytest.raises(ValueError) as e:
        model_states(1e9, 2e9, largest_layer_params=1, zero_stage=0, gpus_per_node=1, nodes=1,
                     offload_optimizer=True, offload_param=True)  # fmt: skip
    msg = str(e.value)
    assert "offload_param needs ZeRO stage 3" in msg
    assert "offload_optimizer needs ZeRO stage 1-3" in msg
    assert "trainable_params" in msg


def test_activations_by_hand_and_checkpointing():
    llm = LLMS["internlm2-20b"]
    dims = ModelDims(llm=llm)
    # per token per layer 2*(6*6144 + 2*1024 + 4*16384) = 208896 bytes; logits 6*92544
    full = llm_activation_bytes(dims, 8192, checkpointing=False)
    assert full == 8192 * (48 * 208896 + 6 * 92544)
    ckpt = llm_activation_bytes(dims, 8192, checkpointing=True)
    assert ckpt == 8192 * (48 * 2 * 6144 + 208896 + 6 * 92544)
    assert full / GIB == pytest.approx(80.7, abs=0.1) and ckpt / GIB == pytest.approx(10.3, abs=0.1)


def test_seed000_estimate_orders_configurations():
    dims = ModelDims(
        llm=dataclasses.replace(LLMS["internlm2-20b"], params=19.86e9),
        vit=VITS["internvit-6b-448px-v1-5"], projector_params=0.09e9, tile=TILE_448,
    )  # fmt: skip
    tr = Trainable(llm=False, vit=True, projector=True)
    kw = dict(trainable=tr, gpus_per_node=8, nodes=4, seq_len=8192, tiles_per_sample=13,
              grad_checkpoint=True)  # fmt: skip
    z2_b1 = estimate(dims, zero_stage=2, per_device_batch=1, **kw)
    z2_b4 = estimate(dims, zero_stage=2, per_device_batch=4, **kw)
    z3_b1 = estimate(dims, zero_stage=3, per_device_batch=1, **kw)
    assert z3_b1.total < z2_b1.total < z2_b4.total
    assert z2_b1.fits(80) and not z2_b4.fits(80)
    no_ckpt = estimate(dims, zero_stage=2, per_device_batch=1, **{**kw, "grad_checkpoint": False})
    assert not no_ckpt.fits(80)
    assert "GiB per device" in z2_b1.describe()


def test_launcher_modules_import_no_heavy_packages():
    code = (
        "import sys, launcher.flops, launcher.plan.memory, launcher.report.collect, launcher.report.collect.metrics,"
        " launcher.report.verdict, launcher.report.make;"
        " bad = {'torch', 'deepspeed', 'transformers', 'matplotlib'} & set(sys.modules);"
        " sys.exit(','.join(sorted(bad)) or 0)"
    )
    root = Path(__file__).parent.parent
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root)
    assert r.returncode == 0, r.stderr or r.stdout


# --- activations follow the data's real lengths (launcher.plan.lengths) -------------------------


def _spec(tmp_path, *overrides):
    from launcher.config import compose
    from launcher.config.spec import to_spec

    cfg, problems = compose.compose([*overrides, "dry_run=true", f"run_dir={tmp_path / 'run'}"])
    assert not problems
    return to_spec(compose.to_container(cfg))


def test_seed001_recipe_fits_8x_a100_80g(tmp_path):
    """XTuner's own recipe (seed 001): 8 x A100-80G, batch 32 per device, LLM and ViT frozen,
    ZeRO-2, runs. Padded to max_length it would not (~123 GiB); at the data's real lengths
    (576 image + short caption tokens) it does, and the plan says which bound it used."""
    from launcher.plan.check import check
    from launcher.plan.preflight import memory_estimate, memory_problem

    spec = _spec(tmp_path, "model=llava_internlm2_20b", "hw=a100", "nodes=1")
    derived = check(spec).derived
    assert (derived.per_device_batch_size, spec.parallelism.zero_stage) == (32, 2)
    est = memory_estimate(spec, derived)
    assert est.total_gb < 80 and memory_problem(spec, derived) is None
    assert est.tokens_per_sample == 704 and "data.max_sample_tokens" in est.describe()
    padded = _spec(tmp_path, "model=llava_internlm2_20b", "hw=a100", "nodes=1",
                   "data.max_sample_tokens=null")  # fmt: skip
    worst = memory_estimate(padded, check(padded).derived)
    assert worst.total_gb > 80 and "seq_len" in worst.basis and "upper bound" in worst.basis
    # only the projector trains: no LLM/ViT gradients or optimizer states
    assert est.grads / GIB < 0.1 and est.optimizer / GIB < 1


def test_the_seed001_command_plans_without_a_memory_warning(tmp_path):
    from launcher.config import compose
    from launcher.submit.pipeline import plan_from_config

    cfg, problems = compose.compose(
        [
            "model=llava_internlm2_20b",
            "hw=a800",
            "nodes=4",
            "dry_run=true",
            f"run_dir={tmp_path / 'run'}",
        ]  # fmt: skip
    )
    plan, _ = plan_from_config(cfg, problems)
    assert not [w for w in plan.warnings if "exceeds" in w], plan.warnings
    record = json.loads(plan.files["plan.json"])["memory_estimate"]
    assert record["fits"] and "704 tokens per sample" in record["detail"]


def test_lengths_are_scanned_where_the_data_is_readable(tmp_path):
    from launcher.config.datafacts import TURN_TOKENS
    from launcher.plan.lengths import sample_tokens

    rows = [
        {"id": 1, "image": "a.png", "conversations": [
            {"from": "human", "value": "<image>\nDescribe."},
            {"from": "gpt", "value": "x" * 300}]},
        {"id": 2, "image": "b.png", "conversations": [
            {"from": "human", "value": "<image>\nDescribe."},
            {"from": "gpt", "value": "短" * 100}]},  # 300 UTF-8 bytes: 100 tokens
    ]  # fmt: skip
    data = tmp_path / "llava.json"
    data.write_text(json.dumps(rows))
    spec = _spec(tmp_path, "model=llava_internlm2_20b", "hw=a100", "data.max_sample_tokens=null",
                 f"data.json_path={data}", f"data.image_folder={tmp_path}")  # fmt: skip
    tokens, basis = sample_tokens(spec)
    text = (len("\nDescribe.") + 300) // 3 + 2 * TURN_TOKENS
    assert tokens == 576 + text and "longest of 2 scanned samples" in basis
    # InternVL jsonl with per-sample `length` (as group_by_length uses): taken as given
    ann = tmp_path / "a.jsonl"
    ann.write_text("".join(json.dumps({"image": "i.png", "length": n, "conversations": []}) + "\n"
                           for n in (100, 900)))  # fmt: skip
    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps({"d": {"root": str(tmp_path), "annotation": str(ann), "length": 2}}))
    spec = _spec(tmp_path, "model=internvl2_8b", "hw=a100", "data=meta_file",
                 f"data.meta_file={meta}")  # fmt: skip
    tokens, _ = sample_tokens(spec)
    assert tokens == 900 + 256 * 7  # 6 tiles + thumbnail


def test_fewer_tokens_fewer_llm_activations():
    dims = ModelDims(llm=LLMS["internlm2-20b"], vit=VITS["internvit-6b-448px-v1-5"])
    common = dict(trainable=Trainable(llm=False), zero_stage=3, gpus_per_node=8, nodes=4,
                  per_device_batch=2, seq_len=8192, tiles_per_sample=0, grad_checkpoint=True)  # fmt: skip
    full = estimate(dims, **common)
    half = estimate(dims, **common, tokens_per_sample=4096)
    capped = estimate(dims, **common, tokens_per_sample=10_000)
    assert half.activations == pytest.approx(full.activations / 2)
    assert capped.activations == full.activations and capped.tokens_per_sample == 8192
