"""Issue 9 by the code's shape: the plan stage never calls back into the check stage (it takes
every number from `Checked`), so launcher/plan.py imports neither launcher.check nor
launcher.preflight at run time (a type-only import under TYPE_CHECKING is allowed)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def runtime_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    type_only = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for n in ast.walk(node)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def test_plan_never_calls_back_into_check():
    imports = runtime_imports(REPO / "launcher" / "plan.py")
    assert "launcher.derive" in imports  # the reader sees plan.py's imports at all
    assert not imports & {"launcher.check", "launcher.preflight", "launcher.memory"}
