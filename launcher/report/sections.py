"""The sections report.md ends with, per run dir: the nodes' checks (launcher.node.nodecheck) and
the edits a run made to the official InternVL code (launcher.engines.official.edits)."""

from __future__ import annotations

from pathlib import Path

from launcher.engines.official.edits import report_section as official_edits
from launcher.node.nodecheck import report_section as nodes


def report_section(paths: list[Path]) -> str:
    return nodes(paths) + official_edits(paths)
