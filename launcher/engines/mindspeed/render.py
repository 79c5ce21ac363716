"""What MindSpeed-MM v2.2.0 is given for an InternVL2 finetune besides its files (pure): the
job's pipeline split (resolved once from the JobSpec, named in the converted folder and its
stamp) and `pretrain_args`, the arguments of `pretrain_internvl.py` (the seed's finetune
script, with optimizer and RNG saving left on so a requeued job resumes).

The files have their own renderers: `data_json` (`--mm-data`), `model_json` (`--mm-model`)
and `convert_sh` (`convert.sh hf_to_mm | mm_to_hf`). Field names and values follow
shared/specs/mindspeed_mm.md (facts read from v2.2.0).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from launcher.config.spec import JobSpec
from launcher.contract import Derived
from launcher.engines.mindspeed import recipes
from launcher.engines.mindspeed import split as splits
from launcher.rundir import RunDir

SPLIT_STAMP = "vlm_launch_split.json"
"""Written by convert.sh into the converted folder: the split those weights were cut with."""


# --- the split --------------------------------------------------------------------------


def layer_costs(spec: JobSpec) -> tuple[float, float]:
    """(cost of one ViT layer, cost of the LM head), in LLM layers, per sample.

    FLOPs per layer ~ its matmul parameters x the tokens through it x 3 when trained (forward
    + both backward matmuls), 2 for a frozen LLM that passes gradients down to a trained
    projector/ViT, 1 for forward only. ViT tokens: the most tiles an image can become.
    """
    m, d = spec.model, spec.model.dims
    vit, llm = d.vit, d.llm
    kv_hidden = llm.hidden * llm.kv_heads // llm.heads if llm.heads else 0
    llm_layer = 2 * llm.hidden**2 + 2 * llm.hidden * kv_hidden + 3 * llm.hidden * llm.intermediate
    vit_layer = 4 * vit.hidden**2 + 2 * vit.hidden * vit.intermediate
    upstream_trained = not (m.freeze_backbone and m.freeze_mlp)
    llm_factor = 3 if not m.freeze_llm else 2 if upstream_trained else 1
    vit_factor = 1 if m.freeze_backbone else 3
    vit_tokens = ((m.force_image_size // m.patch_size) ** 2 + 1) * m.max_tiles
    llm_cost = llm_layer * spec.seq_len * llm_factor
    if not llm_cost:
        return 0.5, 1.0
    vit_cost = vit_layer * vit_tokens * vit_factor / llm_cost
    head_cost = llm.hidden * llm.vocab * spec.seq_len * llm_factor / llm_cost
    return round(vit_cost, 4), round(head_cost, 4)


def resolve_split(spec: JobSpec) -> tuple[splits.Split | None, list[splits.Problem]]:
    """The split this job uses (the user's, else MindSpeed-MM's recipe for this model and
    PP/VPP, else the balanced one), with every problem; recipes.source(spec) says which."""
    par, d = spec.parallelism, spec.model.dims
    vit_cost, head_cost = layer_costs(spec)
    given = par.vit_pp_layers is not None or par.llm_pp_layers is not None
    published = None if given else recipes.recipe(spec)
    return splits.resolve(
        published.vit if published else par.vit_pp_layers,
        published.llm if published else par.llm_pp_layers,
        vit_layers=d.vit.layers,
        llm_layers=d.llm.layers,
        pp=par.pp,
        vpp=par.vpp,
        tp=par.tp,
        kv_heads=d.llm.kv_heads,
        vit_layer_cost=vit_cost,
        head_cost=head_cost,
    )


def split_tag(spec: JobSpec, split: splits.Split) -> str:
    """`tp1-pp4-llm6.9.9.8-vit24.0.0.0`: a converted folder's name says how it was cut."""
    par = spec.parallelism
    vit, llm = split.flat()
    vpp = f"-vpp{par.vpp}" if par.vpp else ""
    return f"tp{par.tp}-pp{par.pp}{vpp}-llm{'.'.join(map(str, llm))}-vit{'.'.join(map(str, vit))}"


def mm_dir(spec: JobSpec, split: splits.Split) -> str:
    """Where hf_to_mm writes and training loads from: one path, so they cannot differ.
    model.mindspeed_mm_dir, else in the run's own storage: never beside the source model,
    whose store is often read-only and shared."""
    if spec.model.mindspeed_mm_dir:
        return spec.model.mindspeed_mm_dir
    return str(RunDir(spec.run_dir).mindspeed_mm_dir(split_tag(spec, split)))


def split_record(spec: JobSpec, split: splits.Split) -> dict[str, Any]:
    par = spec.parallelism
    vit, llm = split.nested
    if not par.vpp:
        vit, llm = vit[0], llm[0]
    return {"tp": par.tp, "pp": par.pp, "vpp": par.vpp, "vit_pp_layers": vit, "llm_pp_layers": llm}


# --- pretrain_internvl.py arguments ---------------------------------------------------------


def count_iters(spec: JobSpec, derived: Derived, samples: int | None) -> int | None:
    """Megatron's count: max_steps, else epochs x samples // global batch (at least 1); None
    when the samples are not known on the login node."""
    if spec.max_steps is not None:
        return spec.max_steps
    if samples is None or spec.epochs <= 0:
        return None
    return max(1, int(samples * spec.epochs) // derived.global_batch_size)


def train_iters(spec: JobSpec, derived: Derived) -> int | None:
    """The plan's optimizer steps, as the check stage counted them (launcher.plan.steps:
    max_steps, else epochs x samples / global batch when the samples can be counted)."""
    return derived.optimizer_steps


def pretrain_args(spec: JobSpec, derived: Derived, run: RunDir, split: splits.Split) -> list[str]:
    m, par = spec.model, spec.parallelism
    ms = m.mindspeed
    root = Path(m.mindspeed_root)
    files = run.mindspeed_dir
    args = [
        "--mm-data", str(files / "data.json"),
        "--mm-model", str(files / "model.json"),
        "--mm-tool", str(root / "mindspeed_mm" / "tools" / "tools.json"),
        "--tensor-model-parallel-size", str(par.tp),
        "--pipeline-model-parallel-size", str(par.pp),
    ]  # fmt: skip
    if par.vpp:
        args += ["--virtual-pipeline-model-parallel-size", str(par.vpp)]
    args += [
        "--context-parallel-size", str(par.cp),
        "--micro-batch-size", str(derived.per_device_batch_size),
        "--global-batch-size", str(derived.global_batch_size),
        "--seq-length", str(spec.seq_len),
        "--tokenizer-type", "NullTokenizer",
        "--vocab-size", str(ms.cli_vocab_size or ms.vocab_size),
        "--position-embedding-type", "rope",
        "--rotary-base", str(ms.rotary_base),
        "--swiglu",
        "--no-masked-softmax-fusion",
        "--lr", f"{spec.lr:g}",
        "--min-lr", "0.0",
        "--lr-warmup-fraction", f"{m.warmup_ratio:g}",
        "--train-iters", str(train_iters(spec, derived)),
        "--lr-decay-style", "cosine",
        "--weight-decay", f"{m.weight_decay:g}",
        "--clip-grad", "1.0",
        "--adam-beta1", "0.9",
        "--adam-beta2", "0.999",
        "--seed", str(spec.seed),
        "--no-gradient-accumulation-fusion",
        "--use-distributed-optimizer",
    ]  # fmt: skip
    args += {"bf16": ["--bf16"], "fp16": ["--fp16"], "fp32": []}[spec.hw.precision]
    args += [
        # one folder: the converted weights are linked in as `release` before the first start,
        # and every save goes here, so a requeued job resumes (optimizer + RNG included)
        "--load", str(run.output_dir),
        "--save", str(run.output_dir),
        "--save-interval", str(spec.save_steps),
        "--use-flash-attn",
        "--use-fused-rotary-pos-emb",
        "--variable-seq-lengths",
        "--normalization", "RMSNorm",
        "--use-fused-rmsnorm",
        "--num-workers", str(spec.data.num_workers),
        "--log-interval", "1",
        "--log-tps",
        "--eval-interval", str(spec.save_steps),
        "--eval-iters", "0",
        "--ckpt-format", "torch",
        "--distributed-backend", "nccl",
    ]  # fmt: skip
    return args
