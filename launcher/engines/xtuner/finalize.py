"""After `xtuner train` exits, on node 0: judge the outcome and finalize the run.

`xtuner train` exits 0 even when training failed, so success is decided from the logs, the
vis_data records and the checkpoints (`judge`). On success its vis_data becomes
metrics.jsonl and the checkpoint is converted into RUN_DIR/output/hf.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

from launcher.contract import Outcome, Plan
from launcher.engines.xtuner.render import CFG_DIR, rendered_recipe
from launcher.rundir import RunDir


def vis_data_files(output_dir: Path) -> list[Path]:
    """Every `<ts>/vis_data/<ts>.json` under XTuner's work dir, oldest first (one per start)."""
    found = sorted(output_dir.glob("*/vis_data/*.json"))
    return [p for p in found if p.name not in ("scalars.json",) and p.stem == p.parent.parent.name]


def find_vis_data(output_dir: Path) -> Path | None:
    """The newest `<ts>/vis_data/<ts>.json` under XTuner's work dir."""
    found = vis_data_files(output_dir)
    return found[-1] if found else None


def merged_records(parts: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The records of every start, oldest first, as one run: a start that resumed from a
    checkpoint replaces the records from its first iteration on (each step once)."""
    out: list[dict[str, Any]] = []
    for rows in parts:
        if rows:
            out = [r for r in out if r["step"] < rows[0]["step"]] + rows
    return out


def vis_to_metrics(
    rows: list[dict[str, Any]], *, world_size: int, per_device_batch: int, accumulation: int
) -> list[dict[str, Any]]:
    """vis_data records -> metrics.jsonl records (docs/DESIGN.md).

    XTuner's iter is a micro-batch; the renderer logs every `accumulation` iters, so
    step = iter / accumulation. tokens_per_sec / samples_per_sec are for the whole job
    (ThroughputHook's value is per device and counts each image as one token).
    """
    out = []
    for r in rows:
        it = r["step"]
        step_time = r.get("step_time")
        rec: dict[str, Any] = {
            "step": it // accumulation if it % accumulation == 0 else it / accumulation,
            "loss": r.get("loss"),
            "lr": r.get("lr"),
        }
        if step_time:
            rec["samples_per_sec"] = per_device_batch * world_size / step_time
        if "tokens_per_sec_per_device" in r:
            rec["tokens_per_sec"] = r["tokens_per_sec_per_device"] * world_size
        for key in ("tflops", "step_time", "data_time", "peak_mem_gb"):
            if key in r:
                rec[key] = r[key]
        if "tflops" in r:
            rec["tflops_per_device"] = rec.pop("tflops")
        out.append(rec)
    return out


_ERROR_LINE = re.compile(r"^(?:\S+\.)?\w*(?:Error|Exception)\b(?::|$)")


def judge(
    log_text: str,
    vis_rows: list[dict[str, Any]] | None,
    *,
    planned_iters: int | None,
    last_checkpoint: Path | None,
    returncode: int,
) -> Outcome:
    """Decide success from the real status AND the evidence; `xtuner train` exits 0 on failure."""
    if returncode != 0:
        return Outcome(False, f"xtuner train exited with status {returncode}")
    errors = [ln.strip() for ln in log_text.splitlines() if _ERROR_LINE.match(ln.strip())]
    if "Traceback (most recent call last)" in log_text or errors:
        last = errors[-1] if errors else "a Python traceback"
        return Outcome(False, f"xtuner train exited 0 but the log shows {last}")
    if not vis_rows:
        return Outcome(False, "xtuner train exited 0 but wrote no vis_data training records")
    last_iter = max(r["step"] for r in vis_rows)
    if planned_iters is not None and last_iter < planned_iters:
        return Outcome(False, f"training stopped at iteration {last_iter} of {planned_iters}")
    if last_checkpoint is None or not last_checkpoint.exists():
        return Outcome(False, "no final checkpoint (output/last_checkpoint) was written")
    return Outcome(True, f"training finished: {last_iter} iterations")


def convert_argv(
    xtuner_bin: Path, run: RunDir, checkpoint: Path, out: Path, kind: str = "llava"
) -> list[str]:
    """The LLaVA export in the XTuner environment: a transformers-native
    LlavaForConditionalGeneration folder (`xtuner_cfgs/to_hf.py llava`, which says why
    XTuner's own `pth_to_hf --save-format huggingface` is not used)."""
    return [
        str(xtuner_bin.parent / "python"),
        str(CFG_DIR / "to_hf.py"),
        kind,
        str(run.xtuner_config),
        str(checkpoint),
        str(out),
    ]


def evidence(run: RunDir):
    """(node 0 log text, vis_data records or None, the last checkpoint or None)."""
    from launcher.report.collect import xtuner as vis

    log = run.node_log(0)
    log_text = log.read_text(errors="replace") if log.exists() else ""
    # a requeued or resumed start writes its own vis_data folder, from the resumed iter on
    paths = vis_data_files(run.output_dir)
    rows = merged_records([vis.parse(p).records for p in paths]) if paths else None
    pointer = run.xtuner_last_checkpoint
    last = Path(pointer.read_text().strip()) if pointer.exists() else None
    return log_text, rows, last


def outcome(plan: Plan, run: RunDir, returncode: int) -> Outcome:
    """Did training really succeed? From the exit status and the evidence."""
    log_text, rows, last = evidence(run)
    planned = None
    if plan.max_steps is not None:
        planned = plan.max_steps * plan.derived.gradient_accumulation_steps
    return judge(log_text, rows, planned_iters=planned, last_checkpoint=last, returncode=returncode)


def finalize(plan: Plan, run: RunDir) -> None:
    """metrics.jsonl from vis_data, then the checkpoint converted to RUN_DIR/output/hf."""
    d = plan.derived
    _, rows, last = evidence(run)
    metrics = vis_to_metrics(
        rows or [],
        world_size=d.world_size,
        per_device_batch=d.per_device_batch_size,
        accumulation=d.gradient_accumulation_steps,
    )
    run.metrics_jsonl.write_text("".join(json.dumps(r) + "\n" for r in metrics))
    if last is None:
        return
    out = run.hf_dir
    xtuner_bin = Path(plan.engine_env) / "bin" / "xtuner"
    recipe = rendered_recipe(run.xtuner_config.read_text())
    # seed 003 (InternVL): the official layout = base checkpoint + trained tensors
    kind = "internvl-run" if recipe == "internvl" else "llava"
    argv = convert_argv(xtuner_bin, run, last, out, kind)
    done_marker = out / "model.safetensors"
    if kind == "llava" and plan.llm_family == "internlm2":
        # InternLM2 has no transformers-native class, hence no native LLaVA folder: keep
        # XTuner's own export (projector + config), which XTuner's chat/eval tools load.
        argv = [str(xtuner_bin), "convert", "pth_to_hf", str(run.xtuner_config), str(last),
                str(out), "--save-format", "xtuner"]  # fmt: skip
        done_marker = out / "projector"
    env = dict(os.environ)
    env["PATH"] = f"{xtuner_bin.parent}{os.pathsep}{env.get('PATH', '')}"
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    text = done.stdout + done.stderr
    run.convert_log.write_text(text)
    verdict = judge(
        text,
        [{"step": 0}],
        planned_iters=None,
        last_checkpoint=done_marker,
        returncode=done.returncode,
    )
    if not verdict.ok:
        raise RuntimeError(
            f"checkpoint conversion failed: {verdict.reason} ({run.relative(run.convert_log)})"
        )
