"""Node-side engines by name (`model.engine`)."""

from __future__ import annotations

from launcher.engines.base import Engine


def get_engine(name: str) -> Engine:
    if name == "internvl_chat":
        from launcher.engines.internvl import InternVLEngine

        return InternVLEngine(official=False)
    if name == "internvl_official":
        from launcher.engines.official.engine import OfficialEngine

        return OfficialEngine()
    if name == "xtuner":
        from launcher.engines.xtuner import XTunerEngine

        return XTunerEngine()
    if name == "mindspeed":
        from launcher.engines.mindspeed import MindSpeedEngine

        return MindSpeedEngine()
    raise ValueError(f"unknown engine {name!r}")
