"""lrscan analysis: load runs into a tidy frame, block means, exponent picks, figures, reports.

    from lrscan.analysis import load_runs, pick_exponent, plot_loss_vs_lre
    loaded = load_runs("wandb", group="lr_range")
    pick = pick_exponent(loaded.steps, loaded.runs)
    plot_loss_vs_lre(pick)

Names are imported on first use, so `import analysis` stays cheap (no matplotlib, no wandb).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "load_runs": "lrscan.analysis.sources",
    "Loaded": "lrscan.analysis.sources",
    "block_means": "lrscan.analysis.blocks",
    "decay_summary": "lrscan.analysis.blocks",
    "decay_grid": "lrscan.analysis.blocks",
    "DecaySummary": "lrscan.analysis.blocks",
    "pick_exponent": "lrscan.analysis.pick",
    "ExponentPick": "lrscan.analysis.pick",
    "valley_index": "lrscan.analysis.pick",
    "zoom_sweep": "lrscan.analysis.zoom",
    "write_sweep_yaml": "lrscan.analysis.zoom",
    "plot_range_curve": "lrscan.analysis.plots",
    "plot_loss_vs_lre": "lrscan.analysis.plots",
    "plot_loss_vs_lr": "lrscan.analysis.plots",
    "plot_block_means": "lrscan.analysis.plots",
    "plot_decay_heatmap": "lrscan.analysis.plots",
    "write_report": "lrscan.analysis.report",
    "with_config": "lrscan.analysis.runconfig",
    "Report": "lrscan.analysis.report",
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
