"""The code the nodes run, frozen at submit: a queued job never runs a later edit or pull.

`take(repo)` reads what the nodes import (launcher/, internvl_chat/, xtuner_cfgs/) into a
`Snapshot`: the files, their content hash, the git commit and a hash of any uncommitted
change to them. RunDir.materialize writes the files into RUN_DIR/code/ with the rest of the
plan, the job script `cd`s there and puts it first on PYTHONPATH (launcher.plan.jobscript), and
plan.json's provenance records the hashes. The same idea as submitit's RsyncSnapshot and
NeMo-Run's packagers, kept to the three folders the nodes need (about 1 MB).
"""

from __future__ import annotations

import hashlib
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CODE_DIRS = ("launcher", "internvl_chat", "xtuner_cfgs")
SKIP_DIRS = {"__pycache__", ".pytest_cache", ".ruff_cache"}


@dataclass(frozen=True, slots=True)
class Snapshot:
    files: dict[str, bytes]
    """Path relative to the checkout -> content."""
    sha256: str
    git_commit: str | None
    git_diff_sha256: str | None
    """sha256 of `git diff HEAD` over CODE_DIRS plus untracked files there; None when clean."""

    def provenance(self) -> dict[str, str | None]:
        return {
            "code_sha256": self.sha256,
            "code_git_commit": self.git_commit,
            "code_git_diff_sha256": self.git_diff_sha256,
        }


def _files(repo: Path) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for top in CODE_DIRS:
        for path in sorted((repo / top).rglob("*")):
            rel = path.relative_to(repo)
            if any(part in SKIP_DIRS for part in rel.parts) or path.suffix == ".pyc":
                continue
            if path.is_file():
                out[rel.as_posix()] = path.read_bytes()
    return out


def _git(repo: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.decode(errors="replace") if out.returncode == 0 else None


def take(repo: Path) -> Snapshot:
    files = _files(repo)
    h = hashlib.sha256()
    for rel, data in files.items():
        h.update(f"{rel}\0{len(data)}\0".encode())
        h.update(data)
    commit = _git(repo, "rev-parse", "HEAD")
    diff = _git(repo, "diff", "HEAD", "--binary", "--", *CODE_DIRS)
    untracked = _git(repo, "ls-files", "--others", "--exclude-standard", "--", *CODE_DIRS)
    change = (diff or "") + "".join(
        f"\0{rel}\0" + hashlib.sha256(files.get(rel, b"")).hexdigest()
        for rel in (untracked or "").split()
    )
    return Snapshot(
        files=files,
        sha256=h.hexdigest(),
        git_commit=commit.strip() if commit else None,
        git_diff_sha256=hashlib.sha256(change.encode()).hexdigest() if change else None,
    )
