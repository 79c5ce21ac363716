"""The docs name code that exists (issue 18 item 6): every repository path and every
`launcher.*` / `internvl_chat.*` module that README.md and docs/*.md name is there, and
DESIGN.md's three recipes (add an engine, a hw profile, a metric) name files that exist and
hold what the recipe says they hold."""

from __future__ import annotations

import importlib
import importlib.util
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
DESIGN = (REPO / "docs" / "DESIGN.md").read_text()
TOPS = "launcher|internvl_chat|tests|conf|bench|slurm|xtuner_cfgs|official_env|docs"
PATH = re.compile(rf"(?<![\w./$-])((?:{TOPS})/[\w./-]*\w)")
MODULE = re.compile(r"(?<![\w./-])((?:launcher|internvl_chat)(?:\.[a-z_]\w*)+)")
# paths inside the official InternVL checkout (INTERNVL_ROOT/internvl_chat/...), not ours
OFFICIAL_TREE = ("internvl_chat/internvl",)


def named_paths(text: str) -> set[str]:
    """Repository paths a text names (`NAME` in a recipe is the placeholder for yours)."""
    return {p for p in PATH.findall(text) if not p.startswith(OFFICIAL_TREE) and "NAME" not in p}


def resolves(dotted: str) -> bool:
    """A module, or an attribute of one (`launcher.submit.sweep.fast_sweep`)."""
    parts = dotted.split(".")
    for i in range(len(parts), 1, -1):
        try:
            found = importlib.util.find_spec(".".join(parts[:i])) is not None
        except ModuleNotFoundError:  # a parent is a module, not a package
            continue
        if found:
            obj = importlib.import_module(".".join(parts[:i]))
            for name in parts[i:]:
                if not hasattr(obj, name):
                    return False
                obj = getattr(obj, name)
            return True
    return False


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_path_and_module_a_doc_names_exists(doc: Path):
    text = doc.read_text()
    missing = sorted(p for p in named_paths(text) if not (REPO / p).exists())
    unknown = sorted({m for m in MODULE.findall(text) if not resolves(m)})
    assert not missing and not unknown, f"{doc.name}: paths {missing}, modules {unknown}"


def recipe(title: str) -> str:
    start = DESIGN.index(f"### How to add {title}")
    ends = [i for i in (DESIGN.find("\n### ", start + 1), DESIGN.find("\n## ", start)) if i > 0]
    return DESIGN[start : min(ends, default=None)]


@pytest.mark.parametrize("title", ["an engine", "a hw profile", "a metric"])
def test_each_recipe_names_files_that_exist_and_what_they_hold(title: str):
    text = recipe(title)
    files = named_paths(text)
    assert len(files) >= 2, f"the recipe for {title} names too few files: {files}"
    assert all((REPO / f).exists() for f in files), files
    # every name the recipe quotes (`ENGINES`, `Column`, `peak_tflops`, ...) is in one of them
    held = "\n".join((REPO / f).read_text() for f in files if (REPO / f).is_file())
    names = set(re.findall(r"`([A-Za-z_]\w*)`", text))
    assert names, f"the recipe for {title} quotes no names"
    assert not {n for n in names if n not in held}, f"{title}: not in {sorted(files)}"
