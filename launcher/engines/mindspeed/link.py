"""python -m launcher.engines.mindspeed.link MM_DIR SAVE_DIR STAMP_JSON

Before the first start (node 0, a prepare step): make SAVE_DIR loadable by Megatron as the
converted weights, so `--load` and `--save` are one folder and a requeued job resumes from its
own saves. SAVE_DIR gets `release -> MM_DIR/release` and `latest_checkpointed_iteration.txt`
= `release` (Megatron loads no optimizer or RNG state from a release checkpoint). Refuses
converted weights whose split stamp (written by convert.sh) differs from this job's split:
MindSpeed-MM itself would only notice on the NPUs.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

STAMP = "vlm_launch_split.json"
TRACKER = "latest_checkpointed_iteration.txt"


def link(mm_dir: Path, save_dir: Path, want: dict) -> str | None:
    """None on success, else why not."""
    if not (mm_dir / TRACKER).is_file() or not (mm_dir / "release").is_dir():
        return f"{mm_dir} holds no converted checkpoint ({TRACKER} + release/); run convert.sh"
    stamp = mm_dir / STAMP
    if stamp.is_file():
        got = json.loads(stamp.read_text())
        if got != want:
            return (
                f"{mm_dir} was converted with split {got}, this job uses {want}: "
                "model.json's pipeline_num_layers must match the conversion; convert again "
                "(bash RUN_DIR/mindspeed/convert.sh hf_to_mm) or set model.mindspeed_mm_dir"
            )
    else:
        print(f"[mindspeed] {mm_dir} has no {STAMP}: cannot confirm its split", flush=True)
    save_dir.mkdir(parents=True, exist_ok=True)
    release = save_dir / "release"
    if not release.exists():
        os.symlink((mm_dir / "release").absolute(), release)
    tmp = save_dir / f".{TRACKER}.tmp"
    tmp.write_text("release\n")
    os.replace(tmp, save_dir / TRACKER)
    return None


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    why = link(Path(argv[0]), Path(argv[1]), json.loads(argv[2]))
    if why:
        print(f"[mindspeed] {why}", file=sys.stderr)
        return 1
    print(f"[mindspeed] {argv[1]} loads {argv[0]}/release", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
