"""The prove flags and helpers the study's search shares: --prove-* checked, run names, the horizon, --zoom's stage.

    steps, seeds, lrs = check_prove_flags(None, "3", "0.003,0.01")   # each checked in one line
    run_name("min_loss", 0.155)        # prove-min_loss-lr0.155: the candidate and its lr, said once
    decay_grid_steps(base, overrides)  # the horizon: the decay grid's run length
    run_zoom_stage(study, stage)       # --zoom: the zoom sweep around the pick, picked again

The budget the search may spend is what the prove stage it replaced cost: each candidate x seed at a
third of the decay grid's steps (`default_prove_steps`), plus the decay grid itself.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from lrscan.pipeline.errors import LrscanError
from lrscan.pipeline.fsutil import atomic_write_text

DEFAULT_SEEDS = (1, 2, 3)
BUDGET_FRACTION = 3       # the default prove budget: 1/3 of the decay grid's steps (rounded up)


def default_prove_steps(decay_steps: int) -> int:
    """A third of the decay grid's length, rounded up: at least that much of the run being chosen for."""
    return max(1, math.ceil(int(decay_steps) / BUDGET_FRACTION))


def check_prove_flags(steps: int | None, seeds: Any, lrs: Any) -> tuple[int | None, tuple[int, ...], tuple[float, ...]]:
    """--prove-steps, --prove-seeds (a count or a list), --prove-lrs (comma-separated), each checked in one line."""
    if steps is not None and (isinstance(steps, bool) or int(steps) != steps or steps < 1):
        raise LrscanError(f"--prove-steps={steps}: need a whole number >= 1")
    try:
        if isinstance(seeds, str):
            text = seeds.replace(" ", "")
            parts = [p for p in text.strip("[]").split(",") if p]
            # one bare number is a count (3: seeds 1, 2, 3); a list, even of one ("[7]" or "7,"), is the seeds
            seeds = int(parts[0]) if len(parts) == 1 and not (text.startswith("[") or "," in text) else parts
        seeds = list(range(1, int(seeds) + 1)) if isinstance(seeds, int) else [int(x) for x in seeds]
    except (TypeError, ValueError):
        raise LrscanError(f"--prove-seeds={seeds}: a number of seeds (3) or the seeds themselves (1,2,3 or [7])"
                          ) from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise LrscanError(f"--prove-seeds={seeds}: need at least one seed, none repeated")
    if isinstance(lrs, str):
        try:
            lrs = [float(t) for t in lrs.split(",") if t.strip()]
        except ValueError:
            raise LrscanError(f"--prove-lrs={lrs}: expected learning rates such as 0.003,0.01") from None
    lrs = tuple(float(lr) for lr in lrs or ())
    bad = [lr for lr in lrs if not (math.isfinite(lr) and lr > 0)]
    if bad:
        raise LrscanError(f"--prove-lrs: {bad[0]} is not a learning rate (a positive number such as 0.003)")
    return (None if steps is None else int(steps)), tuple(seeds), lrs


def run_name(name: str, lr: float) -> str:
    """A prove run's W&B name: the candidate and its lr, said once (its seed is in its config):
    prove-min_loss-lr0.155, prove-lr0.001 (a grid's lr), prove-user-lr0.003 (the user's)."""
    for prefix in ("lr=", "lr"):
        if name.startswith(prefix):
            return f"prove-lr{lr:.4g}"
    if name.startswith("user_"):
        return f"prove-user-lr{lr:.4g}"
    return f"prove-{name}-lr{lr:.4g}"


# -- the stage, as the study runs it ------------------------------------------------------------------


def decay_grid_steps(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> int:
    """The decay grid's run length (its `steps` value, the size's override first; the longest if several)."""
    spec = {**base.get("parameters", {}), **overrides}.get("steps") or {}
    values = spec.get("values") or [spec.get("value")]
    steps = [int(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if not steps:
        raise LrscanError("the decay grid names no steps: give --prove-steps")
    return max(steps)


def run_zoom_stage(study: Any, stage: Any) -> Any:
    """--zoom: run the zoom sweep the range report wrote (report/range/zoom.yaml, a narrower range test
    around the pick, copied to stages/lr_zoom.yaml) and pick again on it; returns its report."""
    from lrscan.pipeline.sweep import load_sweep

    written = study.out / "report" / "range" / "zoom.yaml"
    if not written.is_file():
        raise LrscanError(f"--zoom: the range report wrote no zoom sweep ({written})")
    dest = study.out / "stages" / "lr_zoom.yaml"
    if not dest.exists() or dest.read_text() != written.read_text():
        atomic_write_text(dest, written.read_text())
    sweep = load_sweep(dest)
    stage(f"zoom: a narrower range test around the pick, {len(sweep.points)} runs ({sweep.key})")
    study.sweep(sweep)
    report = study.analyse(sweep, "zoom")
    if report.summary.get("best_lre") is None:
        raise LrscanError(f"--zoom: the zoomed range test gave no pick; see {study.out / 'report' / 'zoom'}")
    print(f"zoomed pick: lre {report.summary['best_lre']:.3f} (95% CI {report.summary.get('best_lre_ci')})", flush=True)
    return report


def save_range_candidates(pick: Any, candidates: pd.DataFrame, winner: str, dest: Path, dpi: int = 110) -> None:
    """The range-test curve with the candidates marked and the winner highlighted, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lrscan.analysis.plots import plot_range_candidates

    ax = plot_range_candidates(pick, candidates, winner=winner)
    tmp = dest.with_suffix(".tmp.png")
    ax.figure.savefig(tmp, dpi=dpi)
    plt.close(ax.figure)
    tmp.replace(dest)


def lre_text(value: Any) -> str:
    """An exponent or a [low, high] interval for people; 'n/a' where there is none (one seed: no CI)."""
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(lre_text(v) for v in value) + "]" if value else "n/a"
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{float(value):.3f}"
