"""The edits the launcher applies to its copy of the official `internvl_chat/` tree.

The official script needs flash-attn, NCCL and a GPU as written; on a CPU (or any machine
without flash-attn) it stops before the first step. Each edit below is the smallest change that
lets it run there, found by running without it (issue 19). They are applied to a copy of the
user's checkout inside the run dir, never to the checkout, and the run dir keeps them as a
unified diff (`official_edits.patch`) plus one line per edit with its reason
(`official_edits.md`), which report.md shows.

Compatibility edits (E1-E4) change nothing where CUDA and flash-attn are present; the launcher
applies none of them for GPU hardware. B1 changes what is trained (the model's load precision)
and is applied only when asked for (engine_args.official_fp32_load=true); so is P1 (LoRA
adapters seeded per module, no LoRA dropout: engine_args.official_lora_parity=true), which
exists for the loss-parity check against our trainer.

Pure: texts in, texts out; anchors are matched by content, not line numbers, so a revision
whose text moved still gets its edits, and one whose text changed is reported, not guessed.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path

PATCH_INIT = "internvl/patch/__init__.py"
DIST_UTILS = "internvl/dist_utils.py"
FINETUNE = "internvl/train/internvl_chat_finetune.py"
FILES = (PATCH_INIT, DIST_UTILS, FINETUNE)
BEHAVIOUR = "behaviour change"

REASONS = {
    "E1": "`internvl/patch` imports modules that import flash_attn (or triton, the 3.5 "
    "tree's sink attention) at top level; they are used only for packed training or flash "
    "attention, so a missing flash_attn now leaves stubs that raise when called (error "
    "without it: No module named 'flash_attn')",
    "E2": "`_init_dist_pytorch` calls torch.cuda.set_device(rank % num_gpus) with 0 GPUs "
    "(ZeroDivisionError): skipped when there is no GPU",
    "E3": "init_dist(backend='nccl'): gloo when CUDA is unavailable "
    "(Distributed package doesn't have NCCL built in)",
    "E4": "non-InternLM2 LLMs (Qwen2, Qwen3, LLaMA) are forced to flash_attention_2: eager when "
    "flash_attn is not installed (FlashAttention2 has been toggled on, but ... not installed)",
    "P1": f"{BEHAVIOUR.upper()}, for a loss-parity check only: each LLM LoRA adapter's A drawn "
    "from a generator seeded by the seed and its module name, and no LoRA dropout (ours does "
    "the same with lora_parity_init), so both programs start from the same adapters",
    "B1": f"{BEHAVIOUR.upper()}: the model is always loaded in bf16; loaded in fp32 when "
    "bf16=False, so the official code trains in fp32 (it crashes with bf16=False otherwise: "
    "Input type (float) and bias type (c10::BFloat16) should be the same)",
}


@dataclass(frozen=True)
class EditSet:
    """Edited texts (by path under internvl_chat/), the diff, the reasons and what failed."""

    texts: dict[str, str] = field(default_factory=dict)
    applied: tuple[str, ...] = ()
    patch: str = ""
    problems: tuple[str, ...] = ()

    def listing(self, revision: str, tree: str = "internvl_chat") -> str:
        lines = [f"# Edits to the official {tree}/ tree ({revision}), in this run only", ""]
        if not self.applied:
            lines.append("none: the run uses the checkout's code unchanged")
        for name in self.applied:
            lines.append(f"- {name}: {REASONS[name]}")
        return "\n".join(lines) + "\n"


_NEEDS_GPU_KERNELS = re.compile(r"^(from|import) (flash_attn|triton)\b", re.M)
_RELATIVE = re.compile(r"^from \.(\w+)", re.M)


def _needs_kernels(path: Path, seen: set[Path]) -> bool:
    """Whether importing this module (or package) imports flash_attn or triton at module
    level, itself or through the relative imports of internvl/patch it makes."""
    files = sorted(path.glob("*.py")) if path.is_dir() else [path]
    for f in files:
        if f in seen:
            continue
        seen.add(f)
        text = f.read_text()
        if _NEEDS_GPU_KERNELS.search(text):
            return True
        for name in _RELATIVE.findall(text):
            for dep in (f.parent / f"{name}.py", f.parent / name):
                if dep.exists() and _needs_kernels(dep, seen):
                    return True
    return False


def _flash_attn_modules(patch_dir: Path) -> set[str]:
    """Modules of internvl/patch that need flash_attn (or triton) at import time."""
    return {p.stem for p in patch_dir.glob("*.py") if _needs_kernels(p, set())}


_FROM = re.compile(r"^from \.(\w+) import (\((?:.|\n)*?\)|(?:.*\\\n)*.*)$", re.M)


def edit_patch_init(text: str, flash_modules: set[str]) -> str:
    """E1: each `from .mod import a, b` of a flash_attn module becomes try/except stubs."""

    def repl(m: re.Match) -> str:
        if m.group(1) not in flash_modules:
            return m.group(0)
        names = [n.strip() for n in re.sub(r"[()\\\n]", " ", m.group(2)).split(",")]
        stubs = "".join(f"    {n} = _needs_flash_attn({n!r})\n" for n in names if n)
        return f"try:  # [launcher E1]\n    {m.group(0)}\nexcept ImportError:\n{stubs.rstrip()}"

    helper = (
        "def _needs_flash_attn(name):  # [launcher E1] flash_attn is not installed here\n"
        "    def stub(*args, **kwargs):\n"
        "        raise ImportError(f'{name} needs flash_attn, which is not installed')\n"
        "    return stub\n\n\n"
    )
    edited = _FROM.sub(repl, text)
    first = edited.find("try:  # [launcher E1]")
    return edited if first < 0 else edited[:first] + helper + edited[first:]


def _replace(text: str, old: str, new: str, count: int | None = None) -> str | None:
    found = text.count(old)
    if found == 0 or (count is not None and found != count):
        return None
    return text.replace(old, new)


P1_ANCHOR = "        model.config.use_llm_lora = model_args.use_llm_lora\n"
P1 = (
    "        # [launcher P1] behaviour change, for a loss-parity check: LoRA A seeded per module\n"
    "        for _name, _mod in model.language_model.named_modules():\n"
    "            if hasattr(_mod, 'lora_A') and 'default' in _mod.lora_A and 'layers.' in _name:\n"
    "                _key = _name[_name.index('layers.'):].encode()\n"
    "                _seed = training_args.seed + __import__('zlib').crc32(_key)\n"
    "                _gen = torch.Generator().manual_seed(_seed)\n"
    "                torch.nn.init.kaiming_uniform_(\n"
    "                    _mod.lora_A['default'].weight, a=math.sqrt(5), generator=_gen)\n"
    "                _mod.lora_dropout['default'] = torch.nn.Identity()\n"
)


def plan_edits(root: Path, *, compat: bool, fp32_load: bool, lora_parity: bool = False) -> EditSet:
    """The edits for the checkout's `internvl_chat/` folder `root` (read here, never written)."""
    originals = {}
    problems = []
    for rel in FILES:
        path = root / rel
        if not path.is_file():
            problems.append(f"{path} is missing: not an InternVL internvl_chat/ tree")
        else:
            originals[rel] = path.read_text()
    if problems:
        return EditSet(problems=tuple(problems))
    texts = dict(originals)
    applied = []

    def edit(name: str, rel: str, new: str | None, anchor: str) -> None:
        if new is None:
            problems.append(f"{name}: {root / rel} has no {anchor!r} (another revision?)")
        elif new != texts[rel]:
            texts[rel] = new
            applied.append(name)

    if compat:
        flash = _flash_attn_modules(root / "internvl" / "patch")
        if flash:
            edit("E1", PATCH_INIT, edit_patch_init(texts[PATCH_INIT], flash), "from .")
        edit(
            "E2",
            DIST_UTILS,
            _replace(
                texts[DIST_UTILS],
                "    torch.cuda.set_device(rank % num_gpus)\n",
                "    if num_gpus:  # [launcher E2] no GPU: nothing to select\n"
                "        torch.cuda.set_device(rank % num_gpus)\n",
            ),
            "torch.cuda.set_device(rank % num_gpus)",
        )
        edit(
            "E3",
            FINETUNE,
            _replace(
                texts[FINETUNE],
                "init_dist(launcher=launcher, backend='nccl')",
                "init_dist(launcher=launcher, backend='nccl' if torch.cuda.is_available() "
                "else 'gloo')  # [launcher E3]",
                count=1,
            ),
            "init_dist(launcher=launcher, backend='nccl')",
        )
        # internvl_chat/ tags its line "# for LLaMA"; internvl_chat_gpt_oss/ has two bare ones
        anchor = "_attn_implementation = 'flash_attention_2'"
        eager = " if __import__('importlib.util').util.find_spec('flash_attn') else 'eager'"
        edited = _replace(
            texts[FINETUNE],
            f"{anchor}  # for LLaMA\n",
            f"{anchor}{eager}  # for LLaMA [launcher E4]\n",
        ) or _replace(
            texts[FINETUNE], f"{anchor}\n", f"{anchor}{eager}  # [launcher E4]\n", count=2
        )
        edit("E4", FINETUNE, edited, anchor)
    if fp32_load:
        edit(
            "B1",
            FINETUNE,
            _replace(
                texts[FINETUNE],
                "torch_dtype=torch.bfloat16",
                "torch_dtype=torch.bfloat16 if training_args.bf16 else torch.float32",
            ),
            "torch_dtype=torch.bfloat16",
        )
    if lora_parity:
        edit("P1", FINETUNE, _replace(texts[FINETUNE], P1_ANCHOR, P1_ANCHOR + P1, 1), P1_ANCHOR)
    patch = "".join(
        "".join(
            difflib.unified_diff(
                originals[rel].splitlines(keepends=True),
                texts[rel].splitlines(keepends=True),
                f"a/{root.name}/{rel}",
                f"b/{root.name}/{rel}",
            )
        )
        for rel in FILES
    )
    changed = {rel: t for rel, t in texts.items() if t != originals[rel]}
    return EditSet(changed, tuple(applied), patch, tuple(problems))


def report_section(run_dirs: list[Path]) -> str:
    """report.md's section: every edit of each official-engine run, its reason and diff."""
    out = []
    for root in run_dirs:
        listing, patch = root / "official_edits.md", root / "official_edits.patch"
        if not listing.is_file():
            continue
        body = listing.read_text().split("\n", 2)[-1].strip()
        out.append(f"### {root.name}\n\n{body}\n")
        if patch.is_file() and patch.stat().st_size:
            out.append(f"```diff\n{patch.read_text().rstrip()}\n```\n")
    if not out:
        return ""
    return "\n## Edits to the official InternVL code\n\n" + "\n".join(out)
