"""The engines by name (`model.engine`): one registry line each.

Adding an engine is one package (or module) under launcher/engines/ implementing
`launcher.engines.base.Engine`, plus one line here. Each is imported when first asked for, so
that importing the registry stays light on the login node and in `report`.
"""

from __future__ import annotations

from importlib import import_module

from launcher.engines.base import Engine

ENGINES: dict[str, str] = {
    "internvl_chat": "launcher.engines.internvl:InternVLEngine",
    "internvl_official": "launcher.engines.official.engine:OfficialEngine",
    "xtuner": "launcher.engines.xtuner.engine:XTunerEngine",
    "mindspeed": "launcher.engines.mindspeed:MindSpeedEngine",
}
"""model.engine -> "module:class" of its Engine (constructed without arguments)."""


def get_engine(name: str) -> Engine:
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}; known: {', '.join(ENGINES)}")
    module, cls = ENGINES[name].split(":")
    return getattr(import_module(module), cls)()
