"""XTuner 0.2.0 recipes (seed 001 LLaVA pretrain, seed 003 InternVL2 finetune).

The plan writes `RUN_DIR/xtuner_config.py`: a lazy-import mmengine config that inherits a base
from `xtuner_cfgs/` (copied into `RUN_DIR/xtuner_base/` so the run keeps the exact base it ran)
and then sets every value the run depends on *on its nested path*. mmengine copies a base's
derived values (`train_dataloader.batch_size = batch_size`, the tokenizer dict in each use)
when the base is read, so overriding only the top-level input would silently keep the base's.

Each node runs `xtuner train` from the XTuner environment with `NPROC_PER_NODE NNODES NODE_RANK
ADDR PORT` (XTuner reads these, not MASTER_*; without PORT every node picks its own random
port and the job hangs). `xtuner train` exits 0 even when training failed, so success is
decided from the logs, the vis_data records and the checkpoints (`judge`).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from launcher.derive import Derived
from launcher.engines import ds_config
from launcher.engines.base import MASTER_ADDR, MASTER_PORT, NodeLaunch, Outcome, PrepareStep
from launcher.rundir import RunDir
from launcher.spec import JobSpec, Problem

REPO = Path(__file__).resolve().parents[2]
CFG_DIR = REPO / "xtuner_cfgs"
BASE_DIR = "xtuner_base"
"""Run-dir folder holding the copied base configs."""
DEFAULT_ENV = REPO / ".venv-xtuner"
ENGINE_ARGS = {"xtuner_env": "the XTuner environment on the nodes (default <repo>/.venv-xtuner)"}

# Which nested paths carry each setting, per recipe. Our bases put DatasetInfoHook at
# custom_hooks[0] and ThroughputHook at custom_hooks[1].
_COMMON = {
    "batch_size": ["train_dataloader.batch_size"],
    "num_workers": ["train_dataloader.num_workers"],
    "accumulative_counts": ["optim_wrapper.accumulative_counts"],
    "lr": ["optim_wrapper.optimizer.lr"],
    "max_length": ["train_dataloader.dataset.max_length"],
    "save_interval": ["default_hooks.checkpoint.interval"],
    "save_total_limit": ["default_hooks.checkpoint.max_keep_ckpts"],
    "log_interval": ["default_hooks.logger.interval"],
    "dist_backend": ["env_cfg.dist_cfg.backend"],
    "seed": ["randomness.seed"],
}
RECIPES: dict[str, dict[str, list[str]]] = {
    "llava": {
        **_COMMON,
        "llm_path": [
            "model.llm.pretrained_model_name_or_path",
            "train_dataloader.dataset.tokenizer.pretrained_model_name_or_path",
            "custom_hooks[0].tokenizer.pretrained_model_name_or_path",
        ],
        "visual_encoder_path": [
            "model.visual_encoder.pretrained_model_name_or_path",
            "train_dataloader.dataset.image_processor.pretrained_model_name_or_path",
        ],
        "data_path": ["train_dataloader.dataset.data_path"],
        "image_folder": ["train_dataloader.dataset.image_folder"],
    },
    "internvl": {
        **_COMMON,
        "model_path": [
            "model.model_path",
            "train_dataloader.dataset.model_path",
            "custom_hooks[0].tokenizer.pretrained_model_name_or_path",
        ],
        "data_path": ["train_dataloader.dataset.data_paths"],
        "image_folder": ["train_dataloader.dataset.image_folders"],
        # LengthGroupedSampler groups batch x accumulation samples
        "sampler_group_size": ["train_dataloader.sampler.per_device_batch_size"],
    },
}
BASES = {
    "llava_internlm2_chat_20b_clip_vit_large_p14_336_e1_gpu8_pretrain": "llava",
    "tiny_llava_pretrain": "llava",
    "internvl_v2_internlm2_2b_finetune": "internvl",
    "internvl_v2_internlm2_2b_qlora_finetune": "internvl",
    "tiny_internvl_v2_finetune": "internvl",
}
SCHEDULE_KEYS = ("max_iters", "max_epochs", "warmup_ratio")
THROUGHPUT_KEYS = ("hidden_size", "num_layers", "vocab_size", "mlp_ratio")


def base_stem(base: str) -> str:
    return Path(base).name.removesuffix(".py")


def render_xtuner_config(base: str, overrides: Mapping[str, Any]) -> str:
    """The rendered config text: inherit `xtuner_base/<base>`, then set each effective value.

    `overrides` keys: those of RECIPES[recipe], plus `max_iters` or `max_epochs`,
    `warmup_ratio`, and `throughput` (dict of hidden_size, num_layers, vocab_size, mlp_ratio).
    Raises ValueError listing every unknown key or missing part at once.
    """
    stem = base_stem(base)
    problems = []
    recipe = BASES.get(stem)
    if recipe is None:
        problems.append(f"unknown XTuner base {base!r}; known: {', '.join(sorted(BASES))}")
        recipe = "llava"
    paths = RECIPES[recipe]
    known = set(paths) | set(SCHEDULE_KEYS) | {"throughput"}
    problems += [f"unknown override {k!r}" for k in sorted(set(overrides) - known)]
    if ("max_iters" in overrides) == ("max_epochs" in overrides):
        problems.append("give exactly one of max_iters, max_epochs")
    tp = overrides.get("throughput", {})
    problems += [f"throughput.{k} is missing" for k in THROUGHPUT_KEYS if k not in tp]
    if problems:
        raise ValueError(
            f"cannot render the XTuner config ({stem}):\n  - " + "\n  - ".join(problems)
        )

    lines = [
        f"# Rendered by launcher.engines.xtuner from {BASE_DIR}/{stem}.py; re-render, do not edit.",
        "# Values are set on their nested paths: the base's copies of its top-level variables",
        "# would otherwise keep the base's values.",
        "from mmengine.config import read_base",
        "",
        "with read_base():",
        f"    from .{BASE_DIR}.{stem} import *  # noqa: F403",
        "",
    ]
    for key, targets in paths.items():
        if key in overrides:
            value = overrides[key]
            if key in ("data_path", "image_folder") and recipe == "internvl":
                value = [value]
            lines += [f"{t} = {value!r}" for t in targets]
    lines += _schedule_lines(overrides)
    lines += [f"custom_hooks[1].{k} = {tp[k]!r}" for k in THROUGHPUT_KEYS]
    return "\n".join(lines) + "\n"


def warmup_iters(max_iters: int, ratio: float) -> int:
    """Warm-up length in iterations. At least 2 where the run allows: mmengine's LinearLR never
    reaches its last factor, so a 1-iteration warm-up leaves the cosine phase at start_factor x lr
    (and a 0-iteration one, as 0.03 of a tiny epoch rounds to, is refused outright)."""
    if max_iters <= 2:
        return 1
    return min(max(2, round(ratio * max_iters)), max_iters - 1)


def _schedule_lines(o: Mapping[str, Any]) -> list[str]:
    ratio = o.get("warmup_ratio", 0.03)
    if "max_iters" in o:
        total = int(o["max_iters"])
        warm = warmup_iters(total, ratio)
        bounds = [(0, warm), (warm, total)]
        lines = [f"train_cfg = dict(type=train_cfg.type, max_iters={total})"]
        by_epoch = False
    else:
        epochs = o["max_epochs"]
        bounds = [(0, ratio * epochs), (ratio * epochs, epochs)]
        lines = [f"train_cfg = dict(type=train_cfg.type, max_epochs={epochs!r})"]
        by_epoch = True
    for i, (begin, end) in enumerate(bounds):
        lines += [
            f"param_scheduler[{i}].by_epoch = {by_epoch}",
            f"param_scheduler[{i}].convert_to_iter_based = {by_epoch}",
            f"param_scheduler[{i}].begin = {begin!r}",
            f"param_scheduler[{i}].end = {end!r}",
        ]
    return lines


def rendered_recipe(config_text: str) -> str | None:
    """The recipe ("llava" / "internvl") of a config rendered by render_xtuner_config."""
    found = re.search(rf"^\s+from \.{BASE_DIR}\.(\w+) import \*", config_text, flags=re.M)
    return BASES.get(found.group(1)) if found else None


def base_chain(stem: str, read=lambda p: p.read_text()) -> dict[str, str]:
    """The base file and every base it inherits (read_base imports), as file name -> text."""
    out: dict[str, str] = {}
    todo = [stem]
    while todo:
        name = todo.pop()
        if f"{name}.py" in out:
            continue
        text = read(CFG_DIR / f"{name}.py")
        out[f"{name}.py"] = text
        todo += re.findall(r"^\s+from \.(\w+) import \*", text, flags=re.M)
    return out


# --- metrics and verdict (pure) ---------------------------------------------------------


def find_vis_data(output_dir: Path) -> Path | None:
    """The newest `<ts>/vis_data/<ts>.json` under XTuner's work dir."""
    found = sorted(output_dir.glob("*/vis_data/*.json"))
    found = [p for p in found if p.name not in ("scalars.json",) and p.stem == p.parent.parent.name]
    return found[-1] if found else None


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


# --- the engine ---------------------------------------------------------------------------


class XTunerEngine:
    name = "xtuner"

    # planning ------------------------------------------------------------------------
    def env_dir(self, spec: JobSpec) -> Path:
        return Path(spec.engine_args.get("xtuner_env") or DEFAULT_ENV)

    def check(self, spec: JobSpec, derived: Derived) -> list[Problem]:
        out = [
            Problem(
                f"engine_args.{k}", f"unknown for engine xtuner; known: {', '.join(ENGINE_ARGS)}"
            )
            for k in spec.engine_args
            if k not in ENGINE_ARGS
        ]
        m, d = spec.model, spec.data
        stem = base_stem(m.xtuner_base or "")
        if stem not in BASES:
            out.append(
                Problem("model.xtuner_base", f"{m.xtuner_base!r} is not one of {sorted(BASES)}")
            )
        elif BASES[stem] == "llava":
            if d.format != "llava_json":
                out.append(Problem("data", f"LLaVA recipes read llava_json data, not {d.format}"))
            if spec.seq_len <= self.image_tokens(spec):
                out.append(
                    Problem("seq_len", f"must exceed the {self.image_tokens(spec)} image tokens")
                )
            if not (m.llm_path and m.vision_path) and not m.make_tiny:
                out.append(Problem("model", "LLaVA needs model.llm_path and model.vision_path"))
        elif not m.path:
            out.append(Problem("model.path", "InternVL recipes need the checkpoint folder"))
        if not (d.json_path or d.generate):
            out.append(Problem("data.json_path", "XTuner recipes need the JSON annotation file"))
        if spec.parallelism.zero_stage == 0:
            out.append(Problem("parallelism", "xtuner train --deepspeed needs ZeRO stage 1-3"))
        if spec.max_steps is None and not float(spec.epochs).is_integer():
            out.append(Problem("epochs", "XTuner trains whole epochs; set max_steps instead"))
        return out

    def image_tokens(self, spec: JobSpec) -> int:
        m = spec.model
        return (m.force_image_size // m.patch_size) ** 2

    def overrides(self, spec: JobSpec, derived: Derived) -> dict[str, Any]:
        m, d = spec.model, spec.data
        acc = derived.gradient_accumulation_steps
        o: dict[str, Any] = {
            "batch_size": derived.per_device_batch_size,
            "num_workers": d.num_workers,
            "accumulative_counts": acc,
            "lr": spec.lr,
            "save_interval": spec.save_steps * acc,  # mmengine counts micro-batches
            "save_total_limit": spec.save_total_limit,
            "log_interval": acc,  # one record per optimizer step
            "dist_backend": spec.hw.dist_backend,
            "seed": spec.seed,
            "data_path": d.json_path,
            "image_folder": d.image_folder,
            "warmup_ratio": m.warmup_ratio,
        }
        if spec.max_steps is not None:
            o["max_iters"] = spec.max_steps * acc
        else:
            o["max_epochs"] = int(spec.epochs)
        if BASES[base_stem(m.xtuner_base)] == "llava":
            # LLaVA's max_length is the text budget: the image features take the rest.
            o |= {
                "llm_path": m.llm_path,
                "visual_encoder_path": m.vision_path,
                "max_length": spec.seq_len - self.image_tokens(spec),
            }
        else:
            o |= {
                "model_path": m.path,
                "max_length": spec.seq_len,
                "sampler_group_size": derived.per_device_batch_size * acc,
            }
        llm = m.dims.llm
        o["throughput"] = {
            "hidden_size": llm.hidden,
            "num_layers": llm.layers,
            "vocab_size": llm.vocab,
            "mlp_ratio": llm.intermediate / llm.hidden if llm.hidden else 0.0,
        }
        return {k: v for k, v in o.items() if v is not None}

    def files(self, spec: JobSpec, derived: Derived, run: RunDir) -> dict[str, str]:
        stem = base_stem(spec.model.xtuner_base)
        files = {
            run.xtuner_config.name: render_xtuner_config(stem, self.overrides(spec, derived)),
            run.deepspeed_json.name: json.dumps(
                ds_config.render(spec, derived, optimizer_block=False), indent=2
            )
            + "\n",
        }
        for name, text in base_chain(stem).items():
            files[f"{BASE_DIR}/{name}"] = text
        return files

    def prepare(self, spec: JobSpec, run: RunDir, python: str) -> list[PrepareStep]:
        maker = str(CFG_DIR / "make_tiny_llava.py")
        xpy = str(self.env_dir(spec) / "bin" / "python")
        steps = []
        if spec.model.make_tiny:
            out = Path(spec.model.llm_path).parent
            steps.append(
                PrepareStep(argv=(xpy, maker, str(out), "--parts=model"), creates=str(out / "llm"))
            )
        if spec.data.generate == "synthetic_llava":
            out = Path(spec.data.dir)
            argv = (xpy, maker, str(out), "--parts=data", f"--samples={spec.data.num_samples}")
            steps.append(PrepareStep(argv=argv, creates=str(out / "data")))
        return steps

    def node_launch(
        self, spec: JobSpec, derived: Derived, run: RunDir, node_rank: int, python: str
    ) -> NodeLaunch:
        venv_bin = self.env_dir(spec) / "bin"
        argv = (
            str(venv_bin / "xtuner"),
            "train",
            str(run.xtuner_config),
            "--deepspeed",
            str(run.deepspeed_json),
            "--work-dir",
            str(run.output_dir),
        )
        env = {
            **spec.hw.env,
            # `xtuner train` re-launches `python` / `torchrun` from PATH (node prefixes PATH).
            "PATH": str(venv_bin),
            "NPROC_PER_NODE": str(derived.gpus_per_node),
            "NNODES": str(derived.nodes),
            "NODE_RANK": str(node_rank),
            "ADDR": MASTER_ADDR,
            "PORT": MASTER_PORT,
            "PYTHONUNBUFFERED": "1",
        }
        if derived.world_size == 1:
            # One process: XTuner runs train.py without torchrun, and DeepSpeed then looks for
            # MPI (mpi4py) unless the torch.distributed variables are present.
            env |= {
                "RANK": "0",
                "LOCAL_RANK": "0",
                "WORLD_SIZE": "1",
                "MASTER_ADDR": MASTER_ADDR,
                "MASTER_PORT": MASTER_PORT,
            }
        return NodeLaunch(node_rank=node_rank, argv=argv, env=env)

    def convert_argv(
        self, xtuner_bin: Path, run: RunDir, checkpoint: Path, out: Path, kind: str = "llava"
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

    # on the node ---------------------------------------------------------------------
    def _evidence(self, run: RunDir):
        from launcher.collect import xtuner as vis

        log = run.node_log(0)
        log_text = log.read_text(errors="replace") if log.exists() else ""
        path = find_vis_data(run.output_dir)
        rows = vis.parse(path).records if path else None
        pointer = run.output_dir / "last_checkpoint"
        last = Path(pointer.read_text().strip()) if pointer.exists() else None
        return log_text, rows, last

    def outcome(self, run: RunDir, returncode: int) -> Outcome:
        plan = run.plan()
        log_text, rows, last = self._evidence(run)
        planned = None
        if plan.get("max_steps") is not None:
            planned = plan["max_steps"] * plan["gradient_accumulation_steps"]
        return judge(
            log_text, rows, planned_iters=planned, last_checkpoint=last, returncode=returncode
        )

    def finalize(self, run: RunDir) -> None:
        """metrics.jsonl from vis_data, then the checkpoint converted to RUN_DIR/output/hf."""
        plan = run.plan()
        _, rows, last = self._evidence(run)
        metrics = vis_to_metrics(
            rows or [],
            world_size=plan["world_size"],
            per_device_batch=plan["per_device_batch_size"],
            accumulation=plan["gradient_accumulation_steps"],
        )
        run.metrics_jsonl.write_text("".join(json.dumps(r) + "\n" for r in metrics))
        if last is None:
            return
        out = run.output_dir / "hf"
        xtuner_bin = Path(plan["node_launch"][0]["argv"][0])
        recipe = rendered_recipe(run.xtuner_config.read_text())
        # seed 003 (InternVL): the official layout = base checkpoint + trained tensors
        kind = "internvl-run" if recipe == "internvl" else "llava"
        argv = self.convert_argv(xtuner_bin, run, last, out, kind)
        done_marker = out / "model.safetensors"
        if kind == "llava" and plan.get("llm_family") == "internlm2":
            # InternLM2 has no transformers-native class, hence no native LLaVA folder: keep
            # XTuner's own export (projector + config), which XTuner's chat/eval tools load.
            argv = [str(xtuner_bin), "convert", "pth_to_hf", str(run.xtuner_config), str(last),
                    str(out), "--save-format", "xtuner"]  # fmt: skip
            done_marker = out / "projector"
        env = dict(os.environ)
        env["PATH"] = f"{xtuner_bin.parent}{os.pathsep}{env.get('PATH', '')}"
        done = subprocess.run(argv, env=env, capture_output=True, text=True)
        text = done.stdout + done.stderr
        (run.logs_dir / "convert.log").write_text(text)
        verdict = judge(
            text,
            [{"step": 0}],
            planned_iters=None,
            last_checkpoint=done_marker,
            returncode=done.returncode,
        )
        if not verdict.ok:
            raise RuntimeError(f"checkpoint conversion failed: {verdict.reason} (logs/convert.log)")
