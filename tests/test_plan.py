"""Compose -> check -> plan, compared with saved expected copies (tests/expected/plan/).

Regenerate deliberately with UPDATE_EXPECTED=1 and review the diff.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
from pathlib import Path

import pytest

from launcher.config import compose as composing
from launcher.config.spec import ConfigError
from launcher.contract import Plan
from launcher.plan import site
from launcher.plan.jobscript import REPO
from launcher.rundir import RunDir
from launcher.submit.pipeline import plan_from_config, run

EXPECTED = Path(__file__).parent / "expected" / "plan"
PYTHON = "/opt/vlm env/bin/python"


@pytest.fixture(autouse=True)
def no_site_probe(monkeypatch):
    """Saved copies must not depend on the Slurm of the machine running the tests."""
    monkeypatch.setattr(site, "partition_info", lambda *a, **k: None)


def hydra_quote(text: str) -> str:
    """Quote a value for Hydra's override grammar (what a user types in single quotes)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def make_plan(tmp_path: Path, *overrides: str, run_dir: Path | None = None):
    """Plan with `overrides`; the nodes' python is PYTHON unless cluster.setup activates one."""
    run_dir = run_dir or tmp_path / "run"
    python = (
        []
        if any(o.startswith("cluster.setup=") for o in overrides)
        else [f"cluster.python={hydra_quote(PYTHON)}"]
    )
    cfg, problems = composing.compose(
        [
            *overrides,
            f"run_dir={hydra_quote(str(run_dir))}",
            *python,
            f"cache_dir={hydra_quote(f'{tmp_path}/cache')}",
        ]
    )
    plan, spec = plan_from_config(cfg, problems)
    return plan, spec


def normalise(text: str, tmp_path: Path) -> str:
    return text.replace(str(REPO), "<REPO>").replace(str(tmp_path), "<TMP>")


CASES = {
    "internvl_20b_4x8_a800_slurm": ["model=internvl_20b", "hw=a800", "nodes=4", "dry_run=true"],
    "internvl_20b_4x8_a800_wrapper": [
        "model=internvl_20b",
        "hw=a800",
        "nodes=4",
        "cluster=wrapper",
        "cluster.partition=yjpc_a800",
        "dry_run=true",
    ],
    # a site's own environment, activated by cluster.setup, is what the nodes run; the README's
    # sbatch_extra spelling; a time limit, wckey and NCCL network named explicitly
    "internvl_20b_4x8_a800_site_env": [
        "model=internvl_20b",
        "hw=a800",
        "nodes=4",
        "dry_run=true",
        "cluster.setup=[module load cuda/12.1, source /share/envs/internvl/bin/activate]",
        "cluster.sbatch_extra={quotatype: reserved}",
        "cluster.time_min=2880",
        "cluster.wckey=vlm",
        "hw.network.NCCL_SOCKET_IFNAME=ib0",
        "hw.network.NCCL_IB_HCA='mlx5_0,mlx5_1'",  # quoted: a comma means a sweep
    ],
    "tiny_cpu_2node_slurm_zero2": [
        "model=tiny_internvl",
        "data=synthetic",
        "hw=cpu",
        "nodes=2",
        "cluster=slurm",
        "parallelism=zero2",
        "max_steps=20",
    ],
    "tiny_cpu_2node_local": [
        "model=tiny_internvl",
        "data=synthetic",
        "hw=cpu",
        "nodes=2",
        "cluster=local",
        "max_steps=20",
        "dry_run=true",  # PYTHON is not on this machine: a real cluster=local run is refused
    ],
    "internvl2_1b_zero3_offload_official": [
        "model=internvl2_1b",
        "hw=h100",
        "nodes=2",
        "parallelism=zero3_offload",
        "model.engine=internvl_official",
        "model.internvl_root=/src/InternVL",
        "model.internvl_revision=head",
        "data=ui_dataset",
        "dry_run=true",
    ],
}


PROVENANCE = {
    "config_sha256",
    "git_revision",
    "git_dirty",
    "code_sha256",
    "code_git_commit",
    "code_git_diff_sha256",
}


def files_without_provenance(plan) -> dict[str, str]:
    """The plan's files with plan.json's provenance checked for its keys and left out: the
    revision and the code hashes change with every commit."""
    files = dict(plan.files)
    record = json.loads(files["plan.json"])
    assert set(record.pop("provenance")) == PROVENANCE
    files["plan.json"] = json.dumps(record, indent=2) + "\n"
    return files


@pytest.mark.parametrize("case", sorted(CASES))
def test_rendered_files_match_expected(case: str, tmp_path: Path):
    plan, _ = make_plan(tmp_path, *CASES[case])
    want_dir = EXPECTED / case
    files = files_without_provenance(plan)
    got = {name: normalise(text, tmp_path) for name, text in files.items() if name != "config.yaml"}
    if os.environ.get("UPDATE_EXPECTED"):
        want_dir.mkdir(parents=True, exist_ok=True)
        for old in want_dir.iterdir():
            old.unlink()
        for name, text in got.items():
            (want_dir / name).write_text(text)
    want = {p.name: p.read_text() for p in want_dir.iterdir()}
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name] == want[name], f"{case}/{name} differs from the saved copy"


def test_seed_000_defaults(tmp_path: Path):
    plan, _ = make_plan(tmp_path, "model=internvl_20b", "hw=a800", "nodes=4", "dry_run=true")
    record = json.loads(plan.files["plan.json"])
    assert {k: record[k] for k in ("nodes", "gpus_per_node", "world_size", "seq_len", "lr")} == {
        "nodes": 4,
        "gpus_per_node": 8,
        "world_size": 32,
        "seq_len": 8192,
        "lr": 2e-4,
    }
    assert (record["freeze_llm"], record["freeze_mlp"], record["freeze_backbone"]) == (
        True,
        False,
        False,
    )
    assert (
        record["per_device_batch_size"] * record["gradient_accumulation_steps"] * 32
        == record["global_batch_size"]
    )
    assert [n["node_rank"] for n in record["node_launch"]] == [0, 1, 2, 3]
    argv = record["node_launch"][3]["argv"]
    assert "--node_rank=3" in argv and "--nproc_per_node=8" in argv and "--nnodes=4" in argv
    assert "--master_port={master_port}" in argv  # filled on the node from the job id, never fixed
    ds = json.loads(plan.files["deepspeed.json"])
    assert ds["train_batch_size"] == record["global_batch_size"]
    assert ds["bf16"]["enabled"] is True and ds["zero_optimization"]["stage"] == 3
    meta = json.loads(plan.files["meta.json"])
    assert meta["ai2d_train_12k"]["annotation"].endswith("ai2d_train_12k.jsonl")


@pytest.mark.parametrize(
    ("overrides", "settings"),
    [
        (["nodes=3", "global_batch_size=100", "per_device_batch_size=4"], {"global_batch_size"}),
        (
            ["per_device_batch_size=2", "gradient_accumulation_steps=3", "global_batch_size=7"],
            {"global_batch_size"},
        ),
        (["nodes=0"], {"nodes"}),
        (["hw=cpu", "parallelism=zero3_offload"], {"parallelism"}),
        (["model=internvl_20b", "hw=a800", "seq_len=1024"], {"seq_len"}),
        (["model=internvl_20b", "hw=a800", "hw.gres=gpu:4"], {"hw.gres"}),
        # a tiny model and generated data are files like any other for it (issue 19 item 7)
        (["model.engine=internvl_official"], {"model.internvl_root"}),
    ],
)
def test_bad_settings_are_named(tmp_path: Path, overrides: list[str], settings: set[str]):
    with pytest.raises(ConfigError) as e:
        make_plan(tmp_path, *overrides, "dry_run=true")
    assert settings <= {p.setting for p in e.value.problems}


def test_every_problem_at_once_and_nothing_written(tmp_path: Path, capsys):
    run_dir = tmp_path / "never"
    cfg, problems = composing.compose(
        [
            "model=nope",
            "bogus=1",
            "per_device_batch=2",
            "nodes=x",
            "hw=a800",
            "hw.gres=gpu:3",
            "model.freeze_llm=maybe",
            f"run_dir={run_dir}",
        ]
    )
    with pytest.raises(ConfigError) as e:
        run(cfg, problems)
    named = {p.setting for p in e.value.problems}
    assert {"model", "bogus", "per_device_batch", "nodes"} <= named
    assert "per_device_batch_size" in str(e.value)  # did-you-mean
    assert not run_dir.exists()
    assert list(tmp_path.iterdir()) == []


def test_batch_any_two_give_the_third(tmp_path: Path):
    def numbers(*o):
        plan, _ = make_plan(
            tmp_path, "model=internvl_20b", "hw=a800", "nodes=4", "dry_run=true", *o
        )
        d = plan.derived
        return d.per_device_batch_size, d.gradient_accumulation_steps, d.global_batch_size

    assert numbers("per_device_batch_size=4", "gradient_accumulation_steps=8") == (4, 8, 1024)
    assert numbers("per_device_batch_size=1", "global_batch_size=512") == (1, 16, 512)
    assert numbers("gradient_accumulation_steps=4", "global_batch_size=512") == (4, 4, 512)
    assert numbers() == (2, 32, 2048)  # seed 000: PER_DEVICE_BATCH_SIZE=2, global 2048 on 32 GPUs


def test_existing_run_dir_is_never_overwritten(tmp_path: Path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "precious.txt").write_text("keep me")
    with pytest.raises(ConfigError) as e:
        make_plan(tmp_path, "dry_run=true", run_dir=run_dir)
    assert {p.setting for p in e.value.problems} == {"run_dir"}
    assert (run_dir / "precious.txt").read_text() == "keep me"


NASTY = "we ird 'quoted' \"dq\" $HOME;`x`"


@pytest.mark.parametrize("cluster", ["local", "wrapper", "slurm"])
def test_nasty_paths_survive_quoting(tmp_path: Path, cluster: str):
    run_dir = tmp_path / NASTY / "run"
    plan, _ = make_plan(tmp_path, f"cluster={cluster}", "dry_run=true", run_dir=run_dir)
    script = plan.files["sbatch.sh" if cluster == "slurm" else "job.sh"]
    # every command line of the script parses back to arguments holding the exact path
    found = False
    for line in script.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        words = shlex.split(line.split(" & ")[0], comments=True)
        if any(str(run_dir) in w for w in words):
            found = True
    assert found
    if cluster == "slurm":
        out = next(x for x in script.splitlines() if x.startswith("#SBATCH --output="))
        assert shlex.split(out.split("=", 1)[1]) == [f"{run_dir}/submitit/%j_0_log.out"]
    args = json.loads(plan.files["train_args.json"])
    assert args["output_dir"] == f"{run_dir}/output"


@pytest.mark.parametrize(
    ("model", "revision"),
    [
        ("internvl_20b", "pin"),
        ("internvl2_1b", "head"),
        ("internvl2_2b", "head"),
        ("internvl2_8b", "head"),
    ],
)
def test_model_revision_picks_the_system_message(tmp_path: Path, model: str, revision: str):
    """A V1.5-era checkpoint trains with the pinned code's prompt, InternVL2 with HEAD's; the
    run dir records the one used (our engine only: the official script has its own)."""
    from internvl_chat.prompts import SYSTEM_MESSAGES

    data = "data=synthetic"  # a real model trains on generated data only when asked to
    plan, spec = make_plan(tmp_path, f"model={model}", data, "hw=a800", "nodes=1", "dry_run=true")
    args = json.loads(plan.files["train_args.json"])
    assert spec.model.internvl_revision == revision
    assert args["internvl_revision"] == revision
    assert args["system_message"] == SYSTEM_MESSAGES[revision][spec.model.template]
    plan, _ = make_plan(
        tmp_path,
        f"model={model}",
        data,
        "hw=a800",
        "nodes=1",
        "dry_run=true",
        "model.system_message=Hi.",
    )
    assert json.loads(plan.files["train_args.json"])["system_message"] == "Hi."


def test_template_missing_at_revision_is_refused(tmp_path: Path):
    with pytest.raises(ConfigError, match="internvl2_5.*does not exist.*'pin'"):
        make_plan(
            tmp_path, "model=internvl_20b", "hw=a800", "nodes=1", "model.template=internvl2_5"
        )


@pytest.mark.slow  # two validate_data subprocesses
def test_preflight_checks_the_data_at_the_model_revision(tmp_path: Path):
    """The pre-flight validates as training will tokenise: an empty answer in round 1 of 2
    trains (nothing on that round) at head, but the pinned code fails on it."""
    from internvl_chat.tokenizer import save_tiny_tokenizer

    model = save_tiny_tokenizer(tmp_path / "model", "internlm2")
    (model / "config.json").write_text(json.dumps({"force_image_size": 56, "vision_config": {"patch_size": 14}}))  # fmt: skip
    conv = [{"from": "human", "value": "Q"}, {"from": "gpt", "value": ""},
            {"from": "human", "value": "Q2"}, {"from": "gpt", "value": "A"}]  # fmt: skip
    (tmp_path / "a.jsonl").write_text(json.dumps({"conversations": conv}) + "\n")
    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps({"d": {"root": ".", "annotation": "a.jsonl", "repeat_time": 1}}))
    common = ["model=tiny_internvl", "model.make_tiny=null", f"model.path={hydra_quote(str(model))}",
              "data=meta_file", f"data.meta_file={hydra_quote(str(meta))}", "hw=cpu"]  # fmt: skip
    python = f"cluster.python={hydra_quote(str(REPO / '.venv' / 'bin' / 'python'))}"

    def plan(revision):
        cfg, problems = composing.compose(
            [*common, f"model.internvl_revision={revision}", python,
             f"run_dir={hydra_quote(str(tmp_path / 'run'))}"]
        )  # fmt: skip
        return plan_from_config(cfg, problems)

    plan("head")
    with pytest.raises(ConfigError, match=r"a.jsonl:1: empty gpt value in turn 1"):
        plan("pin")


@pytest.mark.parametrize("case", sorted(CASES))
def test_plan_load_reads_back_what_was_planned(case: str, tmp_path: Path):
    """The nodes read plan.json into the same dataclasses the login side wrote."""
    plan, _ = make_plan(tmp_path, *CASES[case])
    run = RunDir(plan.run_dir)
    run.materialize(plan.files)
    assert Plan.load(run.root) == dataclasses.replace(plan, files={}, notes=())
