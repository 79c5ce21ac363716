"""Defaults are kept in two places, conf/ (what Hydra composes) and launcher/spec.py (the types);
this test keeps them equal, so a default changed in one place and not the other fails here.

conf/base/{model,data,cluster}.yaml list every setting of ModelSpec, DataSpec and ClusterSpec,
and conf/config.yaml the top-level ones of JobSpec. A setting without a dataclass default is
null in the base YAML (each option sets it); an interpolation (`${...}`) is the YAML's own
choice and is not compared.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from launcher.spec import ClusterSpec, DataSpec, JobSpec, ModelSpec

CONF = Path(__file__).resolve().parent.parent / "conf"
GROUPS = {"model", "data", "parallelism", "hw", "cluster", "benchmark"}


def plain(value: Any) -> Any:
    """A dataclass default as YAML would spell it (tuples as lists, dataclasses as mappings)."""
    if dataclasses.is_dataclass(value):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return plain(f.default)
    if f.default_factory is not dataclasses.MISSING:
        return plain(f.default_factory())
    return dataclasses.MISSING


def mismatches(yaml: Mapping[str, Any], cls: type, prefix: str, skip: set[str]) -> list[str]:
    found = []
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in skip}
    keys = set(yaml) - skip
    found += [
        f"{prefix}{k}: in the YAML, not in {cls.__name__}" for k in sorted(keys - set(fields))
    ]
    found += [
        f"{prefix}{k}: in {cls.__name__}, not in the YAML" for k in sorted(set(fields) - keys)
    ]
    for name in sorted(keys & set(fields)):
        got, want = yaml[name], default_of(fields[name])
        if isinstance(got, str) and "${" in got:
            continue
        if want is dataclasses.MISSING:
            if got is not None and prefix:  # the base YAML leaves required settings to options
                found.append(f"{prefix}{name}: required in {cls.__name__}, {got!r} in the YAML")
            continue
        same_kind = isinstance(got, bool) == isinstance(want, bool)
        if got != want or not same_kind:
            found.append(f"{prefix}{name}: {got!r} in the YAML, {want!r} in {cls.__name__}")
    return found


@pytest.mark.parametrize(
    ("yaml_file", "cls"),
    [
        ("base/model.yaml", ModelSpec),
        ("base/data.yaml", DataSpec),
        ("base/cluster.yaml", ClusterSpec),
    ],
)
def test_base_yaml_and_dataclass_defaults_are_equal(yaml_file: str, cls: type):
    yaml = OmegaConf.to_container(OmegaConf.load(CONF / yaml_file), resolve=False)
    group = yaml_file.removeprefix("base/").removesuffix(".yaml")
    assert mismatches(yaml, cls, f"{group}.", set()) == []


def test_top_level_config_and_jobspec_defaults_are_equal():
    yaml = OmegaConf.to_container(OmegaConf.load(CONF / "config.yaml"), resolve=False)
    assert mismatches(yaml, JobSpec, "", GROUPS | {"defaults", "hydra"}) == []


def test_a_changed_default_is_caught():
    """The comparison itself can fail: a YAML value that differs, or a key one side lacks."""
    yaml = OmegaConf.to_container(OmegaConf.load(CONF / "base/cluster.yaml"), resolve=False)
    yaml["max_requeues"] = 4
    yaml["setup"] = None
    del yaml["python"]
    assert mismatches(yaml, ClusterSpec, "cluster.", set()) == [
        "cluster.python: in ClusterSpec, not in the YAML",
        "cluster.max_requeues: 4 in the YAML, 3 in ClusterSpec",
        "cluster.setup: None in the YAML, [] in ClusterSpec",
    ]
