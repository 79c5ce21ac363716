"""train_args.json as the official finetune script parses it, without running the script.

    .venv-internvl/bin/python tests/tools/official_args.py < jobs.json > parsed.json

Each job is {"script": the internvl_chat_finetune.py the nodes run, "args": its JSON,
"world_size": the processes torchrun starts}. The
script's own ModelArguments and DataTrainingArguments are taken from its source at run time
(its AST: the two @dataclass classes and its `from typing` / `from dataclasses` imports, never
the rest of the module, which imports flash-attn, CUDA kernels and the model code), and
parsed with transformers' TrainingArguments exactly as its main() does:
`HfArgumentParser((ModelArguments, DataTrainingArguments, TrainingArguments))
.parse_json_file(json_file=...)`, which raises on a name none of the three dataclasses has.
Runs in the official env (transformers 4.37) so that TrainingArguments is the one the nodes
use, __post_init__ included (the DeepSpeed JSON is loaded by HF's HfTrainerDeepSpeedConfig).

Prints one result per job: {"model", "data", "training": the parsed values, "deepspeed": the
config HF loaded, "deepspeed_mismatches": what HF's DeepSpeed integration finds inconsistent
between that config and the TrainingArguments at `world_size` (the Trainer raises on them at
its first step; parsed here in one process, where TrainingArguments.world_size is 1), "fields":
{"model", "data"}: the revision's argument names} or {"error"}.
"""

from __future__ import annotations

import ast
import dataclasses
import enum
import json
import os
import sys
import types
from pathlib import Path

CLASSES = ("ModelArguments", "DataTrainingArguments")


def official_dataclasses(script: str, name: str) -> tuple[type, type]:
    """The script's ModelArguments and DataTrainingArguments, built from its own source."""
    tree = ast.parse(Path(script).read_text(), script)
    keep = [
        node
        for node in tree.body
        if (isinstance(node, ast.ImportFrom) and node.module in ("typing", "dataclasses"))
        or (isinstance(node, ast.ClassDef) and node.name in CLASSES)
    ]
    found = {n.name for n in keep if isinstance(n, ast.ClassDef)}
    if found != set(CLASSES):
        raise ValueError(f"{script} defines no {sorted(set(CLASSES) - found)} at top level")
    module = types.ModuleType(name)  # registered: dataclasses and typing resolve it by name
    module.__file__ = script
    sys.modules[name] = module
    exec(compile(ast.Module(body=keep, type_ignores=[]), script, "exec"), module.__dict__)
    return tuple(module.__dict__[c] for c in CLASSES)


def plain(value):
    """JSON-able: enums by value, everything else as is or as its str."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


class AtWorld:
    """TrainingArguments as rank 0 of `world_size` processes sees them."""

    def __init__(self, args, world_size: int):
        self._args, self.world_size = args, world_size

    def __getattr__(self, name: str):
        return getattr(self._args, name)


def deepspeed_mismatches(training, world_size: int) -> list[str]:
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    check = HfTrainerDeepSpeedConfig(training.deepspeed)
    check.trainer_config_process(AtWorld(training, world_size))
    return list(check.mismatches)


def parse(job: dict, index: int) -> dict:
    from transformers import HfArgumentParser, TrainingArguments

    model_cls, data_cls = official_dataclasses(job["script"], f"official_finetune_args_{index}")
    parser = HfArgumentParser((model_cls, data_cls, TrainingArguments))
    model, data, training = parser.parse_json_file(json_file=os.path.abspath(job["args"]))
    hf_ds = getattr(training, "hf_deepspeed_config", None)
    return {
        "model": plain(dataclasses.asdict(model)),
        "data": plain(dataclasses.asdict(data)),
        "training": plain(
            {f.name: getattr(training, f.name) for f in dataclasses.fields(training)}
        ),
        "deepspeed": plain(hf_ds.config) if hf_ds is not None else None,
        "deepspeed_mismatches": deepspeed_mismatches(training, job["world_size"])
        if training.deepspeed
        else [],
        "fields": {
            "model": [f.name for f in dataclasses.fields(model_cls)],
            "data": [f.name for f in dataclasses.fields(data_cls)],
        },
    }


def main() -> int:
    out = []
    for i, job in enumerate(json.load(sys.stdin)):
        try:
            out.append(parse(job, i))
        except Exception as e:  # reported per job: the test asserts on it
            out.append({"error": f"{type(e).__name__}: {e}"})
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
