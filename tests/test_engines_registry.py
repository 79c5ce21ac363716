"""Issue 18 item 2: the engines register in one dict and answer every engine rule themselves.

No module outside launcher/engines/ branches on an engine's name; the registry names every
engine package and each registered engine provides the whole `Engine` protocol. MindSpeed's
checkpoints (Megatron's `iter_NNNNNNN/` folders and its tracker file, not our
`checkpoint-N/COMPLETE.json`) are what `status` and a requeue's stop event report."""

from __future__ import annotations

import ast
import json
import typing
from pathlib import Path

import pytest

from launcher.engines import ENGINES, get_engine
from launcher.engines.base import Engine
from launcher.rundir import RunDir

REPO = Path(__file__).resolve().parent.parent
ENGINES_DIR = REPO / "launcher" / "engines"


def _names(node: ast.AST) -> list[str]:
    """Engine names written as string constants in a comparison operand."""
    items = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else [node]
    return [i.value for i in items if isinstance(i, ast.Constant) and i.value in ENGINES]


def engine_branches(path: Path, root: Path = REPO) -> list[str]:
    """`x == "xtuner"`, `x in ("mindspeed", ...)`, `{"internvl_chat": ...}`, `case "xtuner":`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Compare):
            for operand in (node.left, *node.comparators):
                names += _names(operand)
        elif isinstance(node, ast.Dict):
            names += [n for key in node.keys if key is not None for n in _names(key)]
        elif isinstance(node, ast.MatchValue):
            names += _names(node.value)
        found += [f"{path.relative_to(root)}:{node.lineno}: {n!r}" for n in names]
    return found


def test_no_module_outside_the_engines_branches_on_an_engine_name():
    modules = [p for p in (REPO / "launcher").rglob("*.py") if ENGINES_DIR not in p.parents]
    assert len(modules) > 50  # the walk sees the launcher at all
    found = [hit for path in modules for hit in engine_branches(path)]
    assert not found, "ask the engine (launcher/engines/base.py) instead:\n" + "\n".join(found)


def test_the_branch_finder_finds_branches(tmp_path: Path):
    probe = tmp_path / "probe.py"
    probe.write_text(
        'if e == "xtuner" or e in ("mindspeed", "x"):\n    pass\n'
        'HOW = {"internvl_chat": 1}\nSCRIPT = "internvl_chat"  # a path, not a branch\n'
    )
    hits = [h.split(": ", 1)[1] for h in engine_branches(probe, tmp_path)]
    assert sorted(hits) == ["'internvl_chat'", "'mindspeed'", "'xtuner'"]


def engine_modules() -> set[str]:
    """Modules under launcher/engines/ that define a class with node_launch and outcome (but
    base.py, which declares them)."""
    out = set()
    for path in set(ENGINES_DIR.rglob("*.py")) - {ENGINES_DIR / "base.py"}:
        for node in ast.parse(path.read_text()).body:
            methods = {f.name for f in getattr(node, "body", []) if isinstance(f, ast.FunctionDef)}
            if isinstance(node, ast.ClassDef) and {"node_launch", "outcome"} <= methods:
                rel = path.relative_to(REPO).with_suffix("")
                parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
                out.add(".".join(parts))
    return out


def test_the_registry_names_every_engine_package():
    registered = {target.split(":")[0] for target in ENGINES.values()}
    assert engine_modules() <= registered
    packages = {p.parent.name for p in ENGINES_DIR.glob("*/__init__.py")}
    assert packages <= {m.split(".")[2] for m in registered}  # launcher.engines.<package>...
    for name in ENGINES:
        assert get_engine(name).name == name


def test_the_schema_and_the_registry_agree():
    from launcher.config.spec import ModelSpec

    hints = typing.get_type_hints(ModelSpec)
    assert set(typing.get_args(hints["engine"])) == set(ENGINES)


PROTOCOL = sorted({n for n in vars(Engine) if not n.startswith("_")} | set(Engine.__annotations__))


@pytest.mark.parametrize("name", sorted(ENGINES))
def test_each_engine_provides_the_whole_protocol(name: str):
    engine = get_engine(name)
    missing = [m for m in PROTOCOL if not hasattr(engine, m)]
    assert not missing, f"{name} lacks {missing}"


# --- MindSpeed's checkpoints: Megatron's iter_NNNNNNN folders and tracker ---------------------

FIXTURE = REPO / "tests" / "expected" / "mindspeed" / "internvl2_2b_pp1" / "plan.json"


def mindspeed_run(tmp_path: Path, tracker: str | None, iters: tuple[int, ...]) -> RunDir:
    """A run dir of the saved MindSpeed plan, with the folders Megatron saves (the stand-in
    tests/fakes/pretrain_internvl.py writes the same) and `release`, the converted weights."""
    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    run.plan_json.write_text(FIXTURE.read_text().replace("<TMP>", str(tmp_path)))
    (run.output_dir / "release" / "mp_rank_00").mkdir(parents=True)
    for it in iters:
        rank = run.output_dir / f"iter_{it:07d}" / "mp_rank_00"
        rank.mkdir(parents=True)
        (rank / "model_optim_rng.pt").write_text("{}")
    if tracker is not None:
        (run.output_dir / "latest_checkpointed_iteration.txt").write_text(tracker + "\n")
    return run


def test_status_and_a_requeue_see_mindspeed_iter_folders(tmp_path: Path):
    from launcher.node.requeue import request_stop
    from launcher.submit.jobctl import progress, status_text

    run = mindspeed_run(tmp_path, "6", (3, 6))
    assert json.loads(run.plan_json.read_text())["engine"] == "mindspeed"
    assert progress(run)["checkpoint"] == 6
    assert " checkpoint=6 " in status_text([run])[0]
    event = request_stop(run, "time limit", 0, "mindspeed")  # a requeue's stop event
    assert (event["saved"], event["resume_step"]) == (False, 6)


@pytest.mark.parametrize(
    ("tracker", "iters", "step"),
    [
        ("release", (), None),  # only the converted weights: nothing trained yet
        (None, (3,), None),  # no tracker: Megatron would not load iter_0000003
        ("6", (3,), None),  # the tracker names a save that is not there
        ("3", (3,), 3),
    ],
)
def test_the_mindspeed_checkpoint_rule(tmp_path: Path, tracker, iters, step):
    run = mindspeed_run(tmp_path, tracker, iters)
    assert get_engine("mindspeed").last_checkpoint_step(run) == step
