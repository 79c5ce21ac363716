"""XTuner 0.2.0 as an engine: `render` (the config), `engine` (plan side), `finalize` (node 0)."""

from launcher.engines.xtuner.engine import XTunerEngine
from launcher.engines.xtuner.finalize import find_vis_data, judge, vis_to_metrics
from launcher.engines.xtuner.render import (
    BASES,
    RECIPES,
    base_chain,
    render_xtuner_config,
    rendered_recipe,
    warmup_iters,
)

__all__ = [
    "BASES",
    "RECIPES",
    "XTunerEngine",
    "base_chain",
    "find_vis_data",
    "judge",
    "render_xtuner_config",
    "rendered_recipe",
    "vis_to_metrics",
    "warmup_iters",
]
