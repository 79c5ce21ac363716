"""engine=mindspeed (seed 004): rendered files against saved copies, and the checks.

Regenerate the saved copies deliberately with UPDATE_EXPECTED=1 and review the diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from test_plan import files_without_provenance

from launcher.config import compose as composing
from launcher.config.spec import ConfigError
from launcher.plan import site
from launcher.plan.jobscript import REPO
from launcher.submit.pipeline import plan_from_config

EXPECTED = Path(__file__).parent / "expected" / "mindspeed"
PYTHON = "/opt/ms env/bin/python"
COMMON = [
    "model.engine=mindspeed",
    "hw=ascend910b",
    "parallelism=megatron",
    "data=ai2d_train_12k",
    "models_root=/share/ckpt",
    "data_root=/share/data",
    "model.mindspeed_root=/src/MindSpeed-MM",
    "max_steps=5000",
    "save_steps=5000",
    "dry_run=true",
]
# The seed's four launch scripts (MBS, GRAD_ACC_STEP, TP/PP/VPP) and, where given, its splits.
CASES = {
    "internvl2_2b_pp1": [
        "model=internvl2_2b",
        "per_device_batch_size=4",
        "gradient_accumulation_steps=16",
    ],
    "internvl2_8b_pp4": [  # split: MindSpeed-MM's recipe
        "model=internvl2_8b",
        "parallelism.pp=4",
        "per_device_batch_size=1",
        "gradient_accumulation_steps=64",
    ],
    "internvl2_8b_vpp": [
        "model=internvl2_8b",
        "model.freeze_backbone=false",
        "parallelism.pp=4",
        "parallelism.vpp=3",
        "parallelism.llm_pp_layers=[[0,0,0,1],[4,4,4,4],[4,4,4,3]]",
        "parallelism.vit_pp_layers=[[6,7,7,4],[0,0,0,0],[0,0,0,0]]",
        "per_device_batch_size=1",
        "gradient_accumulation_steps=64",
    ],
    "internvl2_76b_2x8_pp16": [
        "model=internvl2_76b",
        "nodes=2",
        "parallelism.pp=16",
        "parallelism.llm_pp_layers=[0,0,0,1,5,6,7,7,7,7,7,7,7,7,6,6]",
        "parallelism.vit_pp_layers=[11,12,12,10,0,0,0,0,0,0,0,0,0,0,0,0]",
        "per_device_batch_size=1",
        "gradient_accumulation_steps=128",
    ],
}


@pytest.fixture(autouse=True)
def no_site_probe(monkeypatch):
    """Saved copies must not depend on this machine's Slurm (sinfo adds partition warnings)."""
    monkeypatch.setattr(site, "partition_info", lambda *a, **k: None)


def quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def plan_for(tmp_path: Path, *overrides: str):
    cfg, problems = composing.compose(
        [
            *overrides,
            f"run_dir={quote(str(tmp_path / 'run'))}",
            f"cluster.python={quote(PYTHON)}",
            f"cache_dir={quote(str(tmp_path / 'cache'))}",
        ]
    )
    return plan_from_config(cfg, problems)


def problems_of(tmp_path: Path, *overrides: str) -> dict[str, str]:
    with pytest.raises(ConfigError) as e:
        plan_for(tmp_path, *overrides)
    assert not (tmp_path / "run").exists()
    return {p.setting: p.message for p in e.value.problems}


def normalise(text: str, tmp_path: Path) -> str:
    return text.replace(str(REPO), "<REPO>").replace(str(tmp_path), "<TMP>")


@pytest.mark.parametrize("case", sorted(CASES))
def test_rendered_files_match_expected(case: str, tmp_path: Path):
    plan, _ = plan_for(tmp_path, *COMMON, *CASES[case])
    files = files_without_provenance(plan)
    got = {n: normalise(t, tmp_path) for n, t in files.items() if n != "config.yaml"}
    want_dir = EXPECTED / case
    if os.environ.get("UPDATE_EXPECTED"):
        for old in sorted(want_dir.rglob("*"), reverse=True) if want_dir.exists() else []:
            old.unlink() if old.is_file() else old.rmdir()
        for name, text in got.items():
            (want_dir / name).parent.mkdir(parents=True, exist_ok=True)
            (want_dir / name).write_text(text)
    want = {str(p.relative_to(want_dir)): p.read_text() for p in want_dir.rglob("*") if p.is_file()}
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name] == want[name], f"{case}/{name} differs from the saved copy"


def test_one_split_everywhere(tmp_path: Path):
    """model.json, hf_to_mm, mm_to_hf and plan.json carry the same split; the converted folder
    training loads is the one convert.sh writes."""
    plan, _ = plan_for(tmp_path, *COMMON, *CASES["internvl2_76b_2x8_pp16"])
    model = json.loads(plan.files["mindspeed/model.json"])
    llm = model["text_decoder"]["pipeline_num_layers"]
    vit = model["image_encoder"]["vision_encoder"]["pipeline_num_layers"]
    assert llm == [0, 0, 0, 1, 5, 6, 7, 7, 7, 7, 7, 7, 7, 7, 6, 6]
    assert vit == [11, 12, 12, 10] + [0] * 12
    convert = plan.files["mindspeed/convert.sh"]
    compact = lambda x: ",".join(map(str, x))  # noqa: E731
    assert f"--cfg.parallel_config.llm_pp_layers '[[{compact(llm)}]]'" in convert
    assert f"--cfg.parallel_config.vit_pp_layers '[[{compact(vit)}]]'" in convert
    assert f"--cfg.parallel_config.llm_pp_layers '[{compact(llm)}]'" in convert  # mm_to_hf
    record = json.loads(plan.files["plan.json"])
    target = record["megatron"]["converted_checkpoint"]
    assert f"--cfg.mm_dir {target} " in convert
    assert record["prepare"][-1]["argv"][3] == target  # linked as output/release, then --load
    argv = record["node_launch"][1]["argv"]
    assert argv[argv.index("--load") + 1] == argv[argv.index("--save") + 1]
    assert "--no-save-optim" not in argv and "--no-save-rng" not in argv
    assert "--node_rank=1" in argv and "--nnodes=2" in argv
    assert record["node_launch"][1]["env"]["NODE_RANK"] == "1"
    assert not any("hostfile" in a.lower() for a in argv)


def test_contract_command_with_computed_split(tmp_path: Path):
    plan, spec = plan_for(
        tmp_path,
        "model=internvl2_8b",
        "model.engine=mindspeed",
        "data=synthetic",  # a real model trains on generated data only when asked to
        "hw=ascend910b",
        "nodes=1",
        "parallelism=megatron",
        "parallelism.pp=4",
        "dry_run=true",
    )
    assert sorted(n for n in plan.files if n.startswith("mindspeed/")) == [
        "mindspeed/convert.sh",
        "mindspeed/data.json",
        "mindspeed/model.json",
    ]
    model = json.loads(plan.files["mindspeed/model.json"])
    llm = model["text_decoder"]["pipeline_num_layers"]
    vit = model["image_encoder"]["vision_encoder"]["pipeline_num_layers"]
    assert len(llm) == len(vit) == 4 and sum(llm) == 32 and sum(vit) == 24
    assert vit[0] == 24  # the ViT on the first stage
    assert plan.derived.data_parallel_size == 2
    data = json.loads(plan.files["mindspeed/data.json"])["dataset_param"]
    assert data["tokenizer_config"]["from_pretrained"] == spec.model.path


@pytest.mark.parametrize(
    ("overrides", "setting", "fragment"),
    [
        (["parallelism.pp=3"], "parallelism", "(one of [1, 2, 4, 8]), e.g. parallelism.pp=2"),
        (["parallelism=zero2"], "parallelism", "use parallelism=megatron"),
        (["parallelism.tp=3"], "parallelism.tp", "use one of [1, 2, 4, 8]"),
        (
            ["parallelism.pp=4", "parallelism.llm_pp_layers=[6,9,9,9]",
             "parallelism.vit_pp_layers=[24,0,0,0]"],
            "parallelism.llm_pp_layers", "sums to 33, but the LLM has 32 layers; e.g. [",
        ),
        (
            ["parallelism.pp=4", "parallelism.llm_pp_layers=[6,9,9,8]",
             "parallelism.vit_pp_layers=[23,0,0,0]"],
            "parallelism.vit_pp_layers", "sums to 23, but the ViT has 24 layers; e.g. [",
        ),
        (
            ["parallelism.pp=4", "parallelism.llm_pp_layers=[6,9,17]",
             "parallelism.vit_pp_layers=[24,0,0]"],
            "parallelism.llm_pp_layers", "has 3 entries but parallelism.pp is 4",
        ),
        (
            ["parallelism.pp=4", "parallelism.vpp=3", "parallelism.llm_pp_layers=[6,9,9,8]",
             "parallelism.vit_pp_layers=[24,0,0,0]"],
            "parallelism.llm_pp_layers", "must be 3 lists of 4",
        ),
        (["parallelism.pp=4", "parallelism.llm_pp_layers=[6,9,9,8]"],
         "parallelism.vit_pp_layers", "give this one too"),
        (["parallelism.vpp=2"], "parallelism.vpp", "parallelism.pp >= 2"),
        (["hw.env.HCCL_CONNECT_TIMEOUT=60"], "hw.env.HCCL_CONNECT_TIMEOUT", "120..7200"),
        (["hw.env.HCCL_CONNECT_TIMEOUT=9000"], "hw.env.HCCL_CONNECT_TIMEOUT", "120..7200"),
    ],
)  # fmt: skip
def test_bad_settings_are_named_with_an_example(tmp_path, overrides, setting, fragment):
    base = ["model=internvl2_8b", *COMMON[:-1], "dry_run=true"]
    found = problems_of(tmp_path, *base, *overrides)
    assert setting in found, found
    assert fragment in found[setting]


def test_every_problem_at_once(tmp_path: Path):
    found = problems_of(
        tmp_path,
        "model=internvl2_8b",
        *COMMON,
        "parallelism.tp=3",
        "parallelism.pp=4",
        "parallelism.llm_pp_layers=[6,9,9,9]",
        "parallelism.vit_pp_layers=[24,0,0,0]",
        "hw.env.HCCL_CONNECT_TIMEOUT=100",
    )
    assert {"parallelism", "parallelism.tp", "parallelism.llm_pp_layers",
            "hw.env.HCCL_CONNECT_TIMEOUT"} <= set(found)  # fmt: skip


def test_megatron_keys_refused_for_deepspeed_engines(tmp_path: Path):
    found = problems_of(tmp_path, "model=internvl2_8b", "parallelism=megatron",
                        "parallelism.pp=2", "hw=a800", "dry_run=true")  # fmt: skip
    assert "model.engine=mindspeed" in found["parallelism"]


def test_converted_folder_with_another_split_is_refused(tmp_path: Path):
    ckpt = tmp_path / "converted"
    ckpt.mkdir()
    (ckpt / "vlm_launch_split.json").write_text(
        json.dumps(
            {
                "tp": 1,
                "pp": 4,
                "vpp": None,
                "vit_pp_layers": [24, 0, 0, 0],
                "llm_pp_layers": [8, 8, 9, 7],
            }
        )  # fmt: skip
    )
    found = problems_of(tmp_path, "model=internvl2_8b", *COMMON, "parallelism.pp=4",
                        f"model.mindspeed_mm_dir={ckpt}")  # fmt: skip
    assert "was converted with" in found["model.mindspeed_mm_dir"]
    plan, _ = plan_for(tmp_path, "model=internvl2_8b", *COMMON, "parallelism.pp=4",
                       "parallelism.llm_pp_layers=[8,8,9,7]",
                       "parallelism.vit_pp_layers=[24,0,0,0]",
                       f"model.mindspeed_mm_dir={ckpt}")  # fmt: skip
    assert f"--cfg.mm_dir {ckpt} " in plan.files["mindspeed/convert.sh"]


def test_seed_001_model_brings_its_data(tmp_path: Path):
    """`model=llava_internlm2_20b hw=a800 nodes=4 dry_run=true` with no data= plans."""
    plan, spec = plan_for(tmp_path, "model=llava_internlm2_20b", "hw=a800", "nodes=4",
                          "dry_run=true")  # fmt: skip
    assert spec.data.name == "llava_pretrain" and spec.data.format == "llava_json"
    assert "xtuner_config.py" in plan.files


@pytest.mark.parametrize(
    "pp,vpp,source,llm",
    [(4, None, "recipe (examples/internvl2/model_8B.json)", [6, 9, 9, 8]),
     (4, 3, "recipe (examples/internvl2/model_8B_vpp.json)", [[0, 0, 0, 1], [4, 4, 4, 4], [4, 4, 4, 3]]),
     (2, None, "computed: balanced", None)],
)  # fmt: skip
def test_default_split_is_mindspeeds_recipe_and_weights_stay_in_the_run(
    tmp_path: Path, pp: int, vpp: int | None, source: str, llm
):
    """Users convert with MindSpeed-MM's published split; the store holding the HF weights is
    often read-only, so the converted copy goes under the run, never beside the source model."""
    extra = [f"parallelism.vpp={vpp}"] if vpp else []
    plan, spec = plan_for(tmp_path, "model=internvl2_8b", *COMMON, f"parallelism.pp={pp}",
                          *extra)  # fmt: skip
    mega = plan.megatron
    assert source in mega["split_source"]
    assert llm is None or mega["llm_pp_layers"] == llm
    converted = Path(mega["converted_checkpoint"])
    assert converted.parent == Path(spec.run_dir) / "mindspeed"
    assert not str(converted).startswith(str(Path(spec.model.path).parent))
    assert f"--cfg.mm_dir {converted} " in plan.files["mindspeed/convert.sh"]
