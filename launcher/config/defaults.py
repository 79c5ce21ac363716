"""One source for defaults: the dataclasses of launcher/config/spec.py.

Hydra composes from conf/, and each conf/{model,data,cluster}/*.yaml starts from
`/base/<group>@_here_`, conf/config.yaml from `/base/job@_here_`. Those base configs are not
files: `register()` builds them here from the dataclass defaults (a setting without one is
null, for an option file to set) and stores them in Hydra's ConfigStore, so a default is
written once, in spec.py, with its meaning beside it. The only values the YAML adds are its
own interpolations (`YAML_OWN`), which a dataclass cannot spell.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from launcher.config.convert import settings
from launcher.config.spec import ClusterSpec, DataSpec, JobSpec, ModelSpec
from launcher.config.tracking import TrackingSpec

BASES: dict[str, type] = {
    "model": ModelSpec,
    "data": DataSpec,
    "cluster": ClusterSpec,
    "tracking": TrackingSpec,
}
# JobSpec's own settings; its config groups come from conf/config.yaml's defaults list.
GROUPS = ("model", "data", "parallelism", "hw", "cluster", "benchmark", "tracking")
# Defaults that depend on the environment, resolved when the config is (OmegaConf resolvers).
YAML_OWN: dict[str, dict[str, Any]] = {
    "model": {"mindspeed_root": "${oc.env:MINDSPEED_MM_ROOT,/opt/MindSpeed-MM}"},
}


def plain(value: Any) -> Any:
    """A default as YAML spells it: dataclasses as mappings, tuples as lists."""
    if dataclasses.is_dataclass(value):
        return {f.name: plain(getattr(value, f.name)) for f in settings(value)}
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def field_default(f: dataclasses.Field) -> Any:
    """The field's default as YAML spells it; None for a required setting."""
    if f.default is not dataclasses.MISSING:
        return plain(f.default)
    if f.default_factory is not dataclasses.MISSING:
        return plain(f.default_factory())
    return None


def base_config(name: str) -> dict[str, Any]:
    """Every setting of one group (or `job`: the top level) with its default."""
    if name == "job":
        fields = [f for f in settings(JobSpec) if f.name not in GROUPS]
    else:
        fields = settings(BASES[name])
    return {f.name: field_default(f) for f in fields} | YAML_OWN.get(name, {})


def register() -> None:
    """Store base/{model,data,cluster,job} in Hydra's ConfigStore (idempotent)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    for name in (*BASES, "job"):
        cs.store(group="base", name=name, node=base_config(name))
