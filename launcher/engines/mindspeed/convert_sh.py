"""RUN_DIR/mindspeed/convert.sh: `mm-convert InternVLConverter hf_to_mm` with the job's split
(nested lists) into the folder training loads, stamped with that split, and `mm_to_hf` for
export (flat lists; mm-convert cannot export VPP checkpoints). Pure: returns the text."""

from __future__ import annotations

import json
import shlex

from launcher.config.spec import JobSpec
from launcher.engines.mindspeed import split as splits
from launcher.engines.mindspeed.render import SPLIT_STAMP, mm_dir, split_record
from launcher.rundir import RunDir


def convert_sh(spec: JobSpec, split: splits.Split, run: RunDir) -> str:
    """`bash convert.sh [hf_to_mm|mm_to_hf]`: import the HF weights with this job's split into
    the folder training loads (and stamp it with the split), or export a trained checkpoint."""
    par = spec.parallelism
    q = shlex.quote
    target = mm_dir(spec, split)
    vit_n, llm_n = split.nested
    vit_f, llm_f = split.flat()
    stamp = json.dumps(split_record(spec, split), separators=(",", ":"))
    hf_to_mm = [
        "mm-convert", "InternVLConverter", "hf_to_mm",
        "--cfg.mm_dir", target,
        "--cfg.hf_config.hf_dir", str(spec.model.path),
        "--cfg.parallel_config.llm_pp_layers", splits.format_list(llm_n),
        "--cfg.parallel_config.vit_pp_layers", splits.format_list(vit_n),
        "--cfg.parallel_config.tp_size", str(par.tp),
        "--cfg.trust_remote_code", "True",
    ]  # fmt: skip
    mm_to_hf = [
        "mm-convert", "InternVLConverter", "mm_to_hf",
        "--cfg.save_hf_dir", f"{run.output_dir}/hf",
        "--cfg.mm_dir", '"$CKPT"',
        "--cfg.hf_config.hf_dir", str(spec.model.path),
        "--cfg.parallel_config.llm_pp_layers", splits.format_list(llm_f),
        "--cfg.parallel_config.vit_pp_layers", splits.format_list(vit_f),
        "--cfg.parallel_config.tp_size", str(par.tp),
    ]  # fmt: skip

    def line(argv: list[str]) -> str:
        """`mm-convert InternVLConverter hf_to_mm \\` then one `--flag value` per line."""
        words = [a if a == '"$CKPT"' else q(a) for a in argv]
        first = words.index(next(w for w in words if w.startswith("--")))
        rows = [" ".join(words[:first])]
        rows += [" ".join(words[i : i + 2]) for i in range(first, len(words), 2)]
        return " \\\n      ".join(rows)

    export = (
        f"    {line(mm_to_hf)}"
        if not par.vpp
        else '    echo "mm-convert (MindSpeed-MM v2.2.0) cannot export VPP checkpoints '
        '(mm_to_hf takes flat lists only); re-split without vpp first" >&2\n    exit 2'
    )
    return f"""#!/bin/bash
# Rendered by launcher.engines.mindspeed for {run.root}; re-render, do not edit.
# The split here is the one in mindspeed/model.json (pipeline_num_layers):
#   vit_pp_layers {splits.format_list(vit_n)}  llm_pp_layers {splits.format_list(llm_n)}
# bash convert.sh hf_to_mm        HF weights -> {target} (what --load reads)
# bash convert.sh mm_to_hf [DIR]  a trained checkpoint (default: the latest in output/) -> output/hf
set -euo pipefail
case "${{1:-hf_to_mm}}" in
  hf_to_mm)
    {line(hf_to_mm)}
    printf '%s\\n' {q(stamp)} > {q(target + "/" + SPLIT_STAMP)}
    ;;
  mm_to_hf)
    CKPT="${{2:-{run.output_dir}}}"
{export}
    ;;
  *)
    echo "usage: bash $0 [hf_to_mm|mm_to_hf [CHECKPOINT_DIR]]" >&2
    exit 2
    ;;
esac
"""
