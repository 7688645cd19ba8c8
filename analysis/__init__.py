"""lrscan analysis: load runs into a tidy frame, block means, exponent picks, figures, reports.

    from analysis import load_runs, pick_exponent, plot_loss_vs_lre
    loaded = load_runs("wandb", group="lr_range")
    pick = pick_exponent(loaded.steps, loaded.runs)
    plot_loss_vs_lre(pick)

Names are imported on first use, so `import analysis` stays cheap (no matplotlib, no wandb).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "load_runs": "analysis.sources",
    "Loaded": "analysis.sources",
    "block_means": "analysis.blocks",
    "decay_summary": "analysis.blocks",
    "decay_grid": "analysis.blocks",
    "DecaySummary": "analysis.blocks",
    "pick_exponent": "analysis.pick",
    "ExponentPick": "analysis.pick",
    "valley_index": "analysis.pick",
    "zoom_sweep": "analysis.zoom",
    "write_sweep_yaml": "analysis.zoom",
    "plot_range_curve": "analysis.plots",
    "plot_loss_vs_lre": "analysis.plots",
    "plot_loss_vs_lr": "analysis.plots",
    "plot_block_means": "analysis.plots",
    "plot_decay_heatmap": "analysis.plots",
    "write_report": "analysis.report",
    "with_config": "analysis.runconfig",
    "Report": "analysis.report",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'analysis' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next lookup skips this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
