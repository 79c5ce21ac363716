"""Node-side engines by name (`model.engine`)."""

from __future__ import annotations

from launcher.engines.base import Engine


def get_engine(name: str) -> Engine:
    if name in ("internvl_chat", "internvl_official"):
        from launcher.engines.internvl import InternVLEngine

        return InternVLEngine(official=name == "internvl_official")
    if name == "xtuner":
        from launcher.engines.xtuner import XTunerEngine

        return XTunerEngine()
    if name == "mindspeed":
        from launcher.engines.mindspeed import MindSpeedEngine

        return MindSpeedEngine()
    raise ValueError(f"unknown engine {name!r}")
