"""Every bad input is refused before anything is written: rc 2, the setting (and file) named.

One table; each row is a command line and the names its error must contain. The rows run
in-process through `launcher.submit.pipeline.main` (the function launch.py calls, rc and all); a
handful also run through launch.py itself. After each, nothing exists under the run dir, the
runs root or the cache dir.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from launcher.plan import site
from launcher.plan.jobscript import REPO
from launcher.submit.pipeline import main


def q(path: Path | str) -> str:
    """Quote a path for Hydra's grammar (spaces, unicode, brackets)."""
    return "'" + str(path).replace("\\", "\\\\").replace("'", "\\'") + "'"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """Bad and good files the rows point at."""
    d = tmp_path_factory.mktemp("inputs")
    (d / "img").mkdir()
    (d / "good.jsonl").write_text(json.dumps({"conversations": []}) + "\n")
    (d / "empty.jsonl").write_text("")
    (d / "meta_empty_ann.json").write_text(
        json.dumps({"e": {"root": str(d / "img"), "annotation": str(d / "empty.jsonl")}})
    )
    (d / "good_meta.json").write_text(
        json.dumps({"g": {"root": str(d / "img"), "annotation": str(d / "good.jsonl")}})
    )
    (d / "bad.json").write_text('{"a": {"root": "x",\n  "annotation": }\n')
    (d / "list.json").write_text("[1, 2]\n")
    (d / "not_utf8.json").write_bytes(b'{"a": "\xff\xfe"}')
    (d / "no_annotation.json").write_text(json.dumps({"a": {"root": str(d)}}))
    (d / "nothing.json").write_text("{}")
    (d / "metadir").mkdir()
    (d / "empty_model").mkdir()
    (d / "a_file").write_text("x")
    (d / "busy_run").mkdir()
    (d / "busy_run" / "plan.json").write_text("{}")
    (d / "données é").mkdir()
    return d


# (id, overrides with {d} = the inputs folder, names the error must contain)
ROWS: list[tuple[str, list[str], list[str]]] = [
    # typos and unknown keys / options
    ("typo_top", ["nodez=2"], ["nodez"]),
    ("typo_nested", ["model.pathh=/x"], ["model.pathh"]),
    ("typo_cluster", ["cluster.partitoin=x"], ["cluster.partitoin"]),
    ("unknown_hw", ["hw=a8000"], ["- hw:", "a800"]),
    ("unknown_model", ["model=internvl_2b"], ["- model:"]),
    ("unknown_data", ["data=ai2d"], ["- data:"]),
    # wrong types
    ("type_nodes", ["nodes=two"], ["nodes"]),
    ("type_lr", ["lr=fast"], ["lr"]),
    ("type_bool", ["check_data=maybe"], ["check_data"]),
    ("type_seq_len", ["seq_len=1.5"], ["seq_len"]),
    ("type_list", ["per_device_batch_size=[1]"], ["per_device_batch_size"]),
    ("type_ratio", ["data.max_bad_sample_ratio=lots"], ["data.max_bad_sample_ratio"]),
    # zero, negative, absurd
    ("nodes_zero", ["nodes=0"], ["- nodes:"]),
    ("nodes_negative", ["nodes=-1"], ["- nodes:"]),
    ("pdb_zero", ["per_device_batch_size=0"], ["per_device_batch_size"]),
    ("ga_negative", ["gradient_accumulation_steps=-2"], ["gradient_accumulation_steps"]),
    ("gbs_zero", ["global_batch_size=0"], ["global_batch_size"]),
    ("lr_zero", ["lr=0"], ["- lr:"]),
    ("lr_negative", ["lr=-1e-4"], ["- lr:"]),
    ("seq_len_tiny", ["seq_len=8"], ["- seq_len:"]),
    ("max_steps_zero", ["max_steps=0"], ["- max_steps:"]),
    ("epochs_zero", ["epochs=0"], ["- epochs:"]),
    ("epochs_negative", ["epochs=-1"], ["- epochs:"]),
    ("requeues_negative", ["cluster.max_requeues=-1"], ["cluster.max_requeues"]),
    ("timeout_tiny", ["cluster.collective_timeout_s=1"], ["cluster.collective_timeout_s"]),
    ("devices_zero", ["hw.devices_per_node=0"], ["hw.devices_per_node"]),
    # batch arithmetic
    (
        "batch_mismatch",
        ["per_device_batch_size=4", "gradient_accumulation_steps=2", "global_batch_size=7"],
        ["- global_batch_size:"],
    ),  # fmt: skip
    (
        "batch_indivisible",
        ["per_device_batch_size=2", "global_batch_size=3"],
        ["global_batch_size"],
    ),
    # locked benchmark rules and the step target
    (
        "locked_lr",
        ["benchmark=internvl_20b_tgs", "hw=a800", "nodes=4", "lr=1e-3"],
        ["- lr:", "seed 000"],
    ),
    (
        "locked_seq",
        ["benchmark=internvl_20b_tgs", "hw=a800", "nodes=4", "seq_len=4096"],
        ["- seq_len:"],
    ),
    (
        "locked_zero",
        ["benchmark=llava_20b_pretrain", "hw=a800", "nodes=4", "parallelism=zero3"],
        ["parallelism.zero_stage"],
    ),  # fmt: skip
    (
        "bench_steps",
        ["benchmark=internvl_20b_tgs", "hw=a800", "nodes=4", "max_steps=100"],
        ["- max_steps:", "max_steps=251"],
    ),  # fmt: skip
    (
        "bench_epochs",
        ["benchmark=internvl_20b_tgs", "hw=a800", "nodes=4", "max_steps=null"],
        ["- epochs:", "max_steps=251 or epochs="],
    ),  # fmt: skip
    (
        "bench_batch",
        ["benchmark=internvl_20b_tgs", "hw=a800", "nodes=4", "global_batch_size=4096"],
        ["- global_batch_size:"],
    ),  # fmt: skip
    (
        "bench_seed001_steps",
        ["benchmark=llava_20b_pretrain", "hw=a800", "nodes=4", "max_steps=50"],
        ["- max_steps:", "max_steps=500"],
    ),  # fmt: skip
    # the command line's grammar: sweeps without -m, unbalanced quoting, no '='
    ("sweep_without_m", ["nodes=1,2"], ["- nodes:", "-m"]),
    ("unbalanced", ["cluster.setup=[a, b"], ["cluster.setup"]),
    ("bare_word", ["dry_run"], ["command line"]),
    ("newline_run_dir", ["run_dir='/tmp/a\nb'"], ["- run_dir:", "newline"]),
    (
        "shell_meta_quote",
        [
            "model.path=/x;rm -rf",
            "model=internvl2_1b",
            "data=synthetic",
            "hw=a100",
            "dry_run=false",
        ],
        ["model.path", "/x;rm -rf"],
    ),  # fmt: skip
    # unicode and spaces in paths (real submit: missing paths are problems)
    (
        "unicode_meta",
        ["data.meta_file={d}/données é/méta.json", "dry_run=false"],
        ["data.meta_file", "méta.json"],
    ),
    (
        "unicode_model",
        [
            "model=internvl2_1b",
            "data=synthetic",
            "model.path=/nonexistent/模型",
            "hw=a100",
            "dry_run=false",
        ],
        ["model.path", "模型"],
    ),  # fmt: skip
    # data is what the user named
    (
        "json_path_on_synthetic",
        ["data.json_path=/x.json"],
        ["data.json_path", "data=llava_pretrain"],
    ),
    (
        "image_folder_on_synthetic",
        ["data.image_folder=/x"],
        ["data.image_folder", "data=llava_pretrain"],
    ),
    (
        "inline_datasets_on_synthetic",
        ["+data.datasets.x.root=/a", "+data.datasets.x.annotation=/b.jsonl"],
        ["data.datasets.x.root", "data=meta_file"],
    ),
    ("real_model_generated", ["model=internvl2_1b", "hw=a100"], ["- data:", "data=synthetic"]),
    (
        "llava_path_on_meta",
        ["model=internvl_20b", "hw=a800", "data.json_path=/x"],
        ["data.json_path"],
    ),
    (
        "meta_on_llava_data",
        ["data=llava_pretrain", "data.meta_file={d}/good_meta.json"],
        ["data.meta_file"],
    ),
    ("wrong_format", ["data=llava_pretrain"], ["- data:", "llava_json"]),
    # meta files that cannot be read: no traceback, the file and line:column
    ("meta_malformed", ["data.meta_file={d}/bad.json"], ["data.meta_file", "bad.json:2:"]),
    ("meta_list", ["data.meta_file={d}/list.json"], ["data.meta_file", "list.json:1:1"]),
    ("meta_directory", ["data.meta_file={d}/metadir"], ["data.meta_file", "metadir", "directory"]),
    ("meta_not_utf8", ["data.meta_file={d}/not_utf8.json"], ["data.meta_file", "not_utf8.json"]),
    (
        "meta_no_annotation",
        ["data.meta_file={d}/no_annotation.json"],
        ["data.meta_file", "annotation"],
    ),
    ("meta_no_datasets", ["data.meta_file={d}/nothing.json"], ["data.meta_file", "nothing.json"]),
    (
        "eval_meta_malformed",
        ["data=meta_file", "data.meta_file={d}/good_meta.json", "data.eval_meta_file={d}/bad.json"],
        ["data.eval_meta_file", "bad.json"],
    ),  # fmt: skip
    (
        "annotation_empty",
        ["data.meta_file={d}/meta_empty_ann.json"],
        ["data.meta_file", "empty.jsonl"],
    ),
    # checkpoints and hw that the nodes would refuse
    (
        "model_dir_empty",
        ["model=internvl2_1b", "data=synthetic", "hw=a100", "model.path={d}/empty_model"],
        ["- model.path:", "empty_model"],
    ),  # fmt: skip
    (
        "llm_dir_empty",
        ["model=internvl_20b", "hw=a800", "nodes=4", "model.llm_path={d}/empty_model"],
        ["- model.llm_path:"],
    ),  # fmt: skip
    (
        "model_is_file",
        ["model=internvl2_1b", "data=synthetic", "hw=a100", "model.path={d}/a_file"],
        ["- model.path:", "a_file"],
    ),  # fmt: skip
    ("big_model_on_cpu", ["model=internvl_20b"], ["- hw:", "internvl_20b"]),
    (
        "bf16_on_cpu",
        ["model=internvl2_1b", "data=synthetic", "hw.precision=bf16"],
        ["- hw.precision:", "fp32 on CPUs"],
    ),  # fmt: skip
    ("offload_on_cpu", ["parallelism=zero3_offload"], ["- parallelism:"]),
    ("renamed_setting", ["validate_data=false"], ["- validate_data:", "renamed: 'check_data'"]),
    ("gres_mismatch", ["hw=a800", "hw.gres=gpu:4"], ["hw.gres"]),
    (
        "megatron_for_deepspeed",
        ["parallelism=megatron", "parallelism.pp=2"],
        ["- parallelism:", "mindspeed"],
    ),
    ("image_size", ["model.force_image_size=50"], ["model.force_image_size"]),
    ("template", ["model.template=nosuch"], ["model.template"]),
    # engines: unknown engine_args, missing parts and environments
    ("engine_arg_typo", ["+engine_args.reportto=wandb"], ["engine_args.reportto", "report_to"]),
    (
        "official_engine_arg",
        [
            "model=internvl2_1b",
            "hw=a100",
            "data=meta_file",
            "data.meta_file={d}/good_meta.json",
            "model.engine=internvl_official",
            "model.internvl_root=/src",
            "+engine_args.use_fast_tokenizer_x=1",
        ],
        ["engine_args.use_fast_tokenizer_x"],
    ),  # fmt: skip
    ("xtuner_engine_arg", ["model=tiny_llava", "+engine_args.bogus=1"], ["engine_args.bogus"]),
    (
        "xtuner_env_missing",
        ["model=tiny_llava", "+engine_args.xtuner_env=/nonexistent/venv", "dry_run=false"],
        ["engine_args.xtuner_env", "/nonexistent/venv"],
    ),  # fmt: skip
    (
        "local_python_missing",
        ["dry_run=false", "max_steps=1", "cluster.python=/nonexistent/python"],
        ["- cluster.python:", "/nonexistent/python"],
    ),
    (
        "mindspeed_engine_arg",
        [
            "model=internvl2_8b",
            "model.engine=mindspeed",
            "data=synthetic",
            "hw=ascend910b",
            "parallelism=megatron",
            "+engine_args.x=1",
        ],
        ["engine_args.x"],
    ),  # fmt: skip
    ("xtuner_no_base", ["model.engine=xtuner"], ["model.xtuner_base"]),
    ("official_no_root", ["model.engine=internvl_official"], ["model.internvl_root"]),
    # run dirs
    ("run_dir_busy", ["run_dir={d}/busy_run"], ["- run_dir:", "busy_run"]),
    ("run_dir_file", ["run_dir={d}/a_file"], ["- run_dir:", "a_file"]),
]
DEFAULTS = {"hw": "hw=cpu", "cluster": "cluster=local", "dry_run": "dry_run=true"}


def command(row: list[str], d: Path, tmp: Path) -> list[str]:
    args = [a.replace("{d}", str(d)) for a in row]
    args = [
        f"{k}={q(v)}" if ("{" not in v and (" " in v or not v.isascii())) else a
        for a in args
        for k, _, v in [a.partition("=")]
    ]
    keys = {a.partition("=")[0].lstrip("+") for a in args}
    out = [v for k, v in DEFAULTS.items() if k not in keys]
    if "run_dir" not in keys:
        out.append(f"run_dir={tmp / 'run'}")
    if "cluster.python" not in keys:  # the nodes' python is this one (a real submit checks it)
        out.append(f"cluster.python={sys.executable}")
    return [*args, *out, f"runs_root={tmp / 'runs'}", f"cache_dir={tmp / 'cache'}"]


def written(tmp: Path) -> list[str]:
    return sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*"))


@pytest.fixture(autouse=True)
def no_sinfo(monkeypatch):
    monkeypatch.setattr(site, "partition_info", lambda *a, **k: None)


def test_the_table_has_at_least_sixty_rows():
    assert len(ROWS) >= 60 and len({r[0] for r in ROWS}) == len(ROWS)


@pytest.mark.parametrize(("name", "row", "named"), ROWS, ids=[r[0] for r in ROWS])
def test_bad_input_is_refused_naming_it(name, row, named, inputs, tmp_path, capsys):
    before = written(inputs)
    rc = main(command(row, inputs, tmp_path))
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err
    for text in named:
        assert text in err, f"{name}: {text!r} not named in:\n{err}"
    assert written(tmp_path) == [], "something was written"
    assert written(inputs) == before


THROUGH_LAUNCH_PY = ["epochs_zero", "meta_malformed", "real_model_generated", "engine_arg_typo"]


@pytest.mark.slow  # four launch.py subprocesses
@pytest.mark.parametrize("name", THROUGH_LAUNCH_PY)
def test_launch_py_exits_2(name, inputs, tmp_path):
    _, row, named = next(r for r in ROWS if r[0] == name)
    r = subprocess.run([sys.executable, "launch.py", *command(row, inputs, tmp_path)], cwd=REPO,
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 2, r.stdout + r.stderr
    assert all(text in r.stderr for text in named), r.stderr
    assert "nothing was written or submitted" in r.stderr
    assert written(tmp_path) == []
