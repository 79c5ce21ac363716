"""engine=mindspeed through the real local two-node Slurm, with small stand-ins for what cannot
be installed here (tests/fakes/pretrain_internvl.py and tests/fakes/mm-convert): each node gets
its rank and the master address from Slurm, the weights are converted with the plan's split
and loaded from where they were converted, and `report` reads the Megatron log lines."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FAKES = REPO / "tests" / "fakes"


def launch(*args: str, env: dict[str, str], timeout: int = 600):
    return subprocess.run(
        [sys.executable, "launch.py", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def ascend_env(env: dict[str, str]) -> dict[str, str]:
    """`env` with the torch_npu stand-in importable: a real Ascend submit refuses a nodes'
    python without torch_npu (launcher.plan.site's interpreter probe)."""
    return {
        **env,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(FAKES / "python"), env.get("PYTHONPATH")])),
    }


def make_inputs(tmp: Path) -> tuple[Path, Path, Path]:
    hf = tmp / "InternVL2-8B"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({
        "llm_config": {"num_hidden_layers": 32, "num_key_value_heads": 8},
        "vision_config": {"num_hidden_layers": 24},
    }))  # fmt: skip
    (hf / "model.safetensors").write_bytes(b"")
    root = tmp / "MindSpeed-MM"
    (root / "mindspeed_mm" / "tools").mkdir(parents=True)
    (root / "mindspeed_mm" / "tools" / "tools.json").write_text("{}\n")
    shutil.copy(FAKES / "pretrain_internvl.py", root / "pretrain_internvl.py")
    data = tmp / "data"
    data.mkdir()
    rows = [
        {"id": i, "image": f"img{i}.png", "conversations": [
            {"from": "human", "value": "<image>\nWhat shape is this?"},
            {"from": "gpt", "value": "A red circle." * (i + 1)}]}
        for i in range(8)
    ]  # fmt: skip
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    meta = tmp / "meta.json"
    meta.write_text(json.dumps({"shapes": {"root": str(data), "annotation": str(data / "train.jsonl"),
                                           "repeat_time": 1, "length": 8}}))  # fmt: skip
    return hf, root, meta


@pytest.mark.slurm
def test_two_node_mindspeed_job_on_slurm(slurm_cluster, tmp_path: Path):
    hf, root, meta = make_inputs(tmp_path)
    run_dir = tmp_path / "run"
    r = launch(
        "model=internvl2_8b", "model.engine=mindspeed", f"model.path={hf}",
        f"model.mindspeed_root={root}", "hw=ascend910b", "hw.devices_per_node=2",
        "hw.gres=null", "hw.env.ASCEND_RT_VISIBLE_DEVICES='0,1'", "hw.cpus_per_node=1",
        "hw.node_mem_gb=1", "cluster=slurm",
        f"cluster.setup=['export PATH={FAKES}:$PATH']", "nodes=2", "parallelism=megatron",
        "parallelism.pp=2", "per_device_batch_size=1", "gradient_accumulation_steps=2",
        "data=meta_file", f"data.meta_file={meta}", "check_data=false", "max_steps=6",
        "save_steps=3", "wait=true", f"run_dir={run_dir}", f"cache_dir={tmp_path / 'cache'}",
        env=ascend_env(slurm_cluster.env),
    )  # fmt: skip
    logs = "".join(p.read_text() for p in sorted(run_dir.glob("logs/node*.log")))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:] + logs[-4000:]
    plan = json.loads((run_dir / "plan.json").read_text())
    split = plan["megatron"]
    assert split["pp"] == 2 and split["data_parallel_size"] == 2

    # every rank ran, on the node Slurm gave it, with the master on the first node
    addr = slurm_cluster.run(["scontrol", "show", "node", "node1"]).stdout
    master = addr.split("NodeAddr=")[1].split()[0]
    recs = {
        int(p.stem[4:]): json.loads(p.read_text())
        for p in (run_dir / "output" / "fake_pretrain").glob("rank*.json")
    }
    assert sorted(recs) == [0, 1, 2, 3]
    for rank, rec in recs.items():
        env = rec["env"]
        node = rank // 2
        assert env["NODE_RANK"] == env["GROUP_RANK"] == str(node)
        assert env["NNODES"] == "2" and env["NPUS_PER_NODE"] == "2"
        assert env["MASTER_ADDR"] == master and env["WORLD_SIZE"] == "4"
        assert env["HCCL_CONNECT_TIMEOUT"] == "1200" and env["CUDA_DEVICE_MAX_CONNECTIONS"] == "1"
        assert env["ASCEND_RT_VISIBLE_DEVICES"] == "0,1"
        # the JSONs it was given are the ones the plan wrote
        assert rec["model"] == json.loads((run_dir / "mindspeed" / "model.json").read_text())
        assert rec["data"] == json.loads((run_dir / "mindspeed" / "data.json").read_text())
        assert rec["start_iteration"] == 0  # from the converted release checkpoint
        argv = rec["argv"]
        assert argv[argv.index("--load") + 1] == argv[argv.index("--save") + 1]
    model = recs[0]["model"]
    assert model["text_decoder"]["pipeline_num_layers"] == split["llm_pp_layers"]
    # the weights were converted with that split, into the folder training loaded
    converted = Path(split["converted_checkpoint"])
    stamp = json.loads((converted / "vlm_launch_split.json").read_text())
    assert stamp["llm_pp_layers"] == split["llm_pp_layers"]
    called = json.loads((converted / "fake_mm_convert.json").read_text())
    assert called[called.index("--cfg.mm_dir") + 1] == str(converted)
    assert (run_dir / "output" / "release").resolve() == (converted / "release").resolve()
    # checkpoints with optimizer and RNG state, for resume
    assert (run_dir / "output" / "latest_checkpointed_iteration.txt").read_text() == "6\n"
    saved = json.loads((run_dir / "output" / "iter_0000006" / "mp_rank_00_001"
                        / "model_optim_rng.pt").read_text())  # fmt: skip
    assert saved == {"iteration": 6, "optimizer": True, "rng": True}

    # the last node's log has Megatron's lines; metrics.jsonl and report read them
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in rows] == [1, 2, 3, 4, 5, 6]
    assert all(x["samples"] == 4 and x["tokens"] > 0 for x in rows)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed", summary
    rep = launch("report", str(run_dir), env=slurm_cluster.env, timeout=120)
    assert rep.returncode == 0, rep.stdout + rep.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 6 and summary["sps"] > 0 and summary["tps_per_device"] > 0
    assert summary["sps_window"] == "steps 6-6 (fewer than 150)"  # a short run says so
