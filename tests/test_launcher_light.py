"""The login side (launcher/, launch.py) never needs torch, transformers, deepspeed, numpy or PIL."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEAVY = {"torch", "transformers", "deepspeed", "numpy", "PIL", "torch_npu", "peft"}


def imported_modules(path: Path) -> set[str]:
    """Top-level names of every import in the file, at any depth (lazy ones included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_no_launcher_module_imports_training_packages():
    files = [REPO / "launch.py", *sorted((REPO / "launcher").rglob("*.py"))]
    assert len(files) > 20
    offenders = {
        str(f.relative_to(REPO)): sorted(imported_modules(f) & HEAVY)
        for f in files
        if imported_modules(f) & HEAVY
    }
    assert offenders == {}


def test_planning_a_job_loads_none_of_them(tmp_path: Path):
    """compose -> check -> plan -> write (a dry run) in a fresh interpreter: sys.modules stays light."""
    code = f"""
import sys
sys.argv = ["launch.py", "model=internvl_20b", "hw=a800", "nodes=4", "dry_run=true",
            "run_dir={tmp_path}/run"]
import launch
rc = launch.main()
import launcher.submit.jobctl, launcher.node.task, launcher.submit.sweep, launcher.submit.dispatch  # noqa: F401
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {sorted(HEAVY)!r})
print("HEAVY", heavy)
sys.exit(rc)
"""
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "HEAVY []" in r.stdout, r.stdout
