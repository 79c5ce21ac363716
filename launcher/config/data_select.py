"""Data is what the user named, or the run is refused (compose calls both functions).

`select(overrides)`: `data.meta_file=PATH` without a `data=` option selects `data=meta_file`
(the README's spelling works alone). `problems(overrides, cfg)`: a `data.*` path override the
composed data kind would ignore (generated data, or the other format) names the `data=` to
add, and a real model (anything without `model.make_tiny`) is not trained on generated samples
unless `data=` names that generated data explicitly.
"""

from __future__ import annotations

from typing import Any

from launcher.problems import Problem

# the data option that reads each path setting
MATCHING = {
    "meta_file": "meta_file",
    "eval_meta_file": "meta_file",
    "datasets": "meta_file",
    "json_path": "llava_pretrain",
    "image_folder": "llava_pretrain",
}
FORMAT = {"meta_file": "internvl_meta", "llava_pretrain": "llava_json"}


def _keys(overrides: list[str]) -> dict[str, str]:
    out = {}
    for o in overrides:
        key, sep, value = o.partition("=")
        if sep and not o.startswith("~"):
            out[key.lstrip("+")] = value
    return out


def select(overrides: list[str]) -> list[str]:
    keys = _keys(overrides)
    if "data" not in keys and "data.meta_file" in keys:
        return [*overrides, "data=meta_file"]
    return overrides


def problems(overrides: list[str], cfg: Any) -> list[Problem]:
    keys = _keys(overrides)
    data, model = cfg.get("data") or {}, cfg.get("model") or {}
    name, generate = data.get("name"), data.get("generate")
    out = []
    for key in keys:
        leaf = key.split(".")[1] if key.startswith("data.") and key.count(".") >= 1 else None
        if leaf not in MATCHING:
            continue
        want = MATCHING[leaf]
        if generate:
            how = f"add data={want}"
            if leaf == "datasets":  # inline entries need a data option that keeps them
                how = "write them into a meta JSON and give data=meta_file data.meta_file=PATH"
            out.append(
                Problem(
                    key,
                    f"ignored by data={name}, which generates its samples on node 0: {how} "
                    "to train on your data",
                )
            )
        elif data.get("format") != FORMAT[want] and not (leaf == "datasets" and not generate):
            out.append(
                Problem(key, f"data={name} reads {data.get('format')} data: add data={want}")
            )
    if generate and not model.get("make_tiny") and keys.get("data") != name and not out:
        out.append(
            Problem(
                "data",
                f"model {model.get('name')} is a real checkpoint and no data was named: it would "
                f"train on {data.get('num_samples')} generated samples (data={name}). Name yours "
                "(data=meta_file data.meta_file=/path/meta.json, data=ai2d_train_12k, "
                f"data=llava_pretrain, ...) or add data={name} to train on generated data",
            )
        )
    return out
