"""The stages by the code's shape.

Issue 9: the plan stage never calls back into the check stage (it takes every number from
`Checked`), so launcher/plan/make.py imports neither launcher.plan.check nor
launcher.plan.preflight at run time (a type-only import under TYPE_CHECKING is allowed).

Issue 18: launcher/ is grouped by where code runs, and imports go one way. What runs on the
nodes (launcher/node/), after the run (launcher/report/), in both places (launcher/engines/)
and the shared leaves never import the login side's planning (launcher/plan/) or submitting
(launcher/submit/); launcher/contract.py, the types that cross machines, imports only leaf
helpers. Function-level imports count too: they run on the node all the same."""

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
    imports = runtime_imports(REPO / "launcher" / "plan" / "make.py")
    assert "launcher.engines" in imports  # the reader sees make.py's imports at all
    assert not imports & {"launcher.plan.check", "launcher.plan.preflight", "launcher.plan.memory"}


LOGIN_ONLY = ("launcher.plan", "launcher.submit")
LEAVES = ("launcher.rundir", "launcher.problems", "launcher.snapshot")


def group(path: Path) -> str:
    rel = path.relative_to(REPO / "launcher").parts
    return rel[0] if len(rel) > 1 else "(shared) " + rel[0]


def launcher_imports(path: Path) -> set[str]:
    return {m for m in runtime_imports(path) if m == "launcher" or m.startswith("launcher.")}


def test_imports_go_from_the_login_side_to_the_nodes_never_back():
    modules = sorted((REPO / "launcher").rglob("*.py"))
    groups = {group(p) for p in modules}
    assert {"config", "plan", "submit", "node", "report", "engines"} <= groups, groups
    wrong = {}
    for path in modules:
        if group(path) in ("plan", "submit"):
            continue
        bad = {m for m in launcher_imports(path) if m.startswith(LOGIN_ONLY)}
        if bad:
            wrong[str(path.relative_to(REPO))] = sorted(bad)
    assert not wrong, f"node/report/engines/config/shared modules import the login side: {wrong}"


def test_the_contract_is_a_leaf():
    assert launcher_imports(REPO / "launcher" / "contract.py") <= set(LEAVES)
    for leaf in LEAVES:
        assert launcher_imports(REPO / (leaf.replace(".", "/") + ".py")) <= set(LEAVES), leaf
