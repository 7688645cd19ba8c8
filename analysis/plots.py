"""Seaborn figures of the range test and the step-decay grid.

Every function takes its `data` (a frame, or the `ExponentPick` that holds the frames) and an
optional `ax`, draws, and returns the ax. Nothing here computes a statistic: the numbers come from
`analysis.pick` and `analysis.blocks`, so a figure and summary.json can never disagree.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from lrscan.analysis.blocks import sort_key
from lrscan.analysis.labels import value_label as readable
from lrscan.pipeline import keys

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from lrscan.analysis.pick import ExponentPick

LRE_LABEL = "lr exponent  lre = log10(lr)"
LR_LABEL = "learning rate (log scale)"
SUGGESTER_STYLE = {  # colour, marker, line style per suggester; min_loss is the pick ("minimum": its old name)
    "min_loss": ("tab:red", "o", "-"),
    "minimum": ("tab:red", "o", "-"),
    "fastai_minimum": ("tab:orange", "^", "-."),
    "steepest": ("tab:green", "v", "--"),
    "valley": ("tab:purple", "s", ":"),
}
STOP_LABELS = {keys.STOP_CLIMB: "stopped: loss climbed", keys.STOP_NON_FINITE: "stopped: non-finite loss"}


def _new_ax(ax: Axes | None, figsize: tuple[float, float] = (10, 5)) -> Axes:
    if ax is None:
        _, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax


def plot_range_curve(
    data: pd.DataFrame,
    *,
    x: str = keys.LRE,
    y: str = keys.LOSS,
    run_curves: pd.DataFrame | None = None,
    suggestions: Mapping[str, float] | None = None,
    ci: Sequence[float] | None = None,
    ci_level: float = 0.95,
    stops: pd.DataFrame | None = None,
    log_x: bool = False,
    ax: Axes | None = None,
) -> Axes:
    """Mean range-test loss against `x`, with the seeds' band, suggesters, CI and run stops.

    Parameters
    ----------
    data : DataFrame
        The binned curve: `x`, `y` (mean over seeds), ``sd`` and ``n``.
    run_curves : DataFrame, optional
        Each run's binned curve (``run_id``, `x`, `y`), drawn faint behind the mean.
    suggestions : mapping, optional
        Suggester name -> position on the `x` axis; each gets a marked line in the legend.
    ci : (low, high), optional
        The pick's confidence interval on the `x` axis, shaded.
    stops : DataFrame, optional
        One row per run: ``last_<x>``, ``last_loss`` and ``stop_reason`` (empty when the run went
        to the end of its range): where each run stopped.
    log_x : bool
        Log-scaled x axis (for `x` = ``lr``).
    """
    ax = _new_ax(ax)
    if run_curves is not None and not run_curves.empty:
        sns.lineplot(data=run_curves, x=x, y=y, units="run_id", estimator=None, color="0.55",
                     linewidth=0.7, alpha=0.45, ax=ax, legend=False)
        ax.plot([], [], color="0.55", linewidth=0.7, alpha=0.6, label="each run (binned)")
    seeds = int(data["n"].max()) if "n" in data.columns and len(data) else 0
    sns.lineplot(data=data, x=x, y=y, color="tab:blue", linewidth=2.2, ax=ax,
                 label=f"mean over {seeds} seed{'s' if seeds != 1 else ''}")
    if "sd" in data.columns and data["sd"].notna().any():
        ax.fill_between(data[x], data[y] - data["sd"], data[y] + data["sd"], color="tab:blue", alpha=0.22,
                        linewidth=0, label="±1 sd across seeds")
    if ci is not None and all(v is not None and math.isfinite(v) for v in ci):
        ax.axvspan(ci[0], ci[1], color="tab:red", alpha=0.1, linewidth=0,
                   label=f"{ci_level:.0%} bootstrap CI of the minimum")
    for name, value in (suggestions or {}).items():
        if value is None or not math.isfinite(value):
            continue
        colour, marker, line = SUGGESTER_STYLE.get(name, ("black", "D", "-."))
        at = np.interp(value, data[x], data[y])  # where the mean curve passes, for the marker
        lre_value = math.log10(value) if log_x else value
        ax.axvline(value, color=colour, linestyle=line, linewidth=1.2)
        ax.plot([value], [at], marker=marker, markersize=9, color=colour, linestyle="none",
                label=f"{name}: lre {lre_value:.2f}, lr {10 ** lre_value:.3g}")
    if stops is not None and not stops.empty:
        last_x = f"last_{x}"
        reason = stops.get(keys.STOP_REASON, pd.Series(index=stops.index, dtype="object"))
        shown = stops.assign(stop=reason.map(STOP_LABELS).fillna("end of its range").astype(str))
        sns.scatterplot(data=shown, x=last_x, y="last_loss", style="stop", color="black", s=60,
                        markers={"end of its range": ">", STOP_LABELS[keys.STOP_CLIMB]: "X",
                                 STOP_LABELS[keys.STOP_NON_FINITE]: "P"}, ax=ax, zorder=5)
    _clip_diverged_tail(ax, data, x=x, y=y, run_curves=run_curves, stops=stops)
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(LR_LABEL if log_x else LRE_LABEL)
    ax.set_ylabel(f"{y} (nats), mean per lre bin" if y == keys.LOSS else f"{y}, mean per lre bin")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return ax


def informative_ylim(curve: Sequence[float], lowest: float | None = None,
                     start: float | None = None) -> tuple[float, float] | None:
    """The y range worth reading on a range test's figure, or None when the whole curve is.

    As fastai and torch-lr-finder draw it: from just below the minimum to a few times it, or to a
    little above where the curve started if that is higher; a loss that climbed past it diverged and
    is cut. `curve` is the mean loss in x order; `lowest` the lowest value drawn anywhere (a seed's
    curve may dip below the mean), `start` the highest drawn before the minimum (default: the curve's).
    """
    values = np.asarray(curve, dtype=float)
    values = values[np.isfinite(values)]
    if len(values) < 2:
        return None
    low = float(values.min())
    first = float(values[: int(values.argmin()) + 1].max()) if start is None else max(start, low)
    if low > 0:  # a loss in nats: few times the minimum
        top = max(DIVERGED_ABOVE_MIN * low, first + 0.1 * (first - low))
    else:  # a log loss can be negative: the start's height again above it
        top = first + max(first - low, 1e-3)
    if not np.any(values > top):
        return None
    bottom = min(low, lowest if lowest is not None and math.isfinite(lowest) else low)
    return bottom - 0.05 * (top - bottom), top


DIVERGED_ABOVE_MIN = 2.0  # a mean loss above this many times its minimum (and above its start) has diverged


def _clip_diverged_tail(ax: Axes, data: pd.DataFrame, *, x: str, y: str, run_curves: pd.DataFrame | None,
                        stops: pd.DataFrame | None) -> None:
    """Cut the y axis to `informative_ylim` when the tail diverged, and mark where the mean left the chart."""
    ordered = data.sort_values(x).dropna(subset=[y])
    if len(ordered) < 2:
        return
    # everything drawn counts: the seeds' own curves may start higher and dip lower than their mean
    drawn = ordered if run_curves is None or run_curves.empty else pd.concat([ordered, run_curves])
    x_at_min = ordered[x].iloc[int(np.argmin(ordered[y].to_numpy()))]
    limits = informative_ylim(ordered[y].to_numpy(), lowest=float(np.nanmin(drawn[y])),
                              start=float(np.nanmax(drawn.loc[drawn[x] <= x_at_min, y])))
    if limits is None:
        return
    bottom, top = limits
    ax.set_ylim(bottom, top)
    above = ordered[ordered[y] > top]
    peak = float(np.nanmax(ordered[y]))
    ax.axvspan(float(above[x].iloc[0]), float(ordered[x].iloc[-1]), color="0.85", alpha=0.5, linewidth=0,
               hatch="//", zorder=0, label=f"diverged: mean {y} above {top:.3g}, up to {peak:.3g} (axis cut)")
    ax.plot(above[x], np.full(len(above), top), linestyle="none", marker="^", markersize=5, color="tab:blue",
            clip_on=False, zorder=6)
    if stops is not None and not stops.empty and f"last_{x}" in stops.columns:
        off = stops[stops["last_loss"] > top]
        ax.plot(off[f"last_{x}"], np.full(len(off), top), linestyle="none", marker="^", markersize=8,
                color="black", clip_on=False, zorder=6)


def plot_loss_vs_lre(data: ExponentPick, *, ax: Axes | None = None) -> Axes:
    """The seed's figure, from a pick: loss against the lr exponent, every suggester marked."""
    ax = plot_range_curve(
        data.curve, x=keys.LRE, y=data.column, run_curves=data.run_curves, suggestions=data.suggestions,
        ci=data.best_lre_ci, ci_level=data.ci_level, stops=data.per_run, ax=ax,
    )
    ax.set_title(f"LR range test: {data.n_runs} runs, {data.n_seeds} seeds; "
                 f"pick lre {data.best_lre:.2f} (lr {data.best_lr:.3g})")
    return ax


def plot_loss_vs_lr(data: ExponentPick, *, ax: Axes | None = None) -> Axes:
    """Loss against the learning rate on a log axis (how fastai and Lightning draw it)."""
    ax = plot_range_curve(
        data.curve, x=keys.LR, y=data.column, run_curves=data.run_curves,
        suggestions={k: 10.0 ** v for k, v in data.suggestions.items()},
        ci=tuple(10.0 ** v if v is not None and math.isfinite(v) else math.nan for v in data.best_lre_ci),
        ci_level=data.ci_level, stops=data.per_run, log_x=True, ax=ax,
    )
    ax.set_title(f"LR range test against lr: pick {data.best_lr:.3g}")
    return ax


def plot_block_means(
    data: pd.DataFrame,
    *,
    x: str = "step_end",
    y: str = keys.LOG10_LOSS,
    hue: str = "decay_steps",
    style: str | None = None,
    units: str = "config",
    block_steps: int | None = None,
    ax: Axes | None = None,
) -> Axes:
    """Block-mean loss against the training step, one line per config, hued by decay boundary.

    Parameters
    ----------
    data : DataFrame
        `DecaySummary.curves`: per config and block, the mean `y`, its ``sd`` over the config's
        runs, `x` (the block's end step) and the config columns.
    hue, style : str
        Config columns mapped to colour and line style (default: the decay boundary; a column the
        data lacks falls back to ``config``).
    units : str
        The column naming one line (a config).
    """
    ax = _new_ax(ax)
    if hue not in data.columns:
        hue = units
    # ordered by value ([50000] before [100000]), shown as people write them (50000, not [50000])
    raw_levels = sorted(dict.fromkeys(data[hue].astype(str)), key=sort_key)
    levels = list(dict.fromkeys(_label(v, hue, units) for v in raw_levels))
    palette = dict(zip(levels, sns.color_palette("viridis", n_colors=max(len(levels), 1))))
    shown = data.assign(**{hue: data[hue].astype(str).map(lambda v: _label(v, hue, units))})
    style_order = None
    if style is not None and style in shown.columns:
        style_order = list(dict.fromkeys(map(readable, sorted(dict.fromkeys(shown[style].astype(str)), key=sort_key))))
        shown[style] = shown[style].astype(str).map(readable)
    if "sd" in shown.columns and shown["sd"].notna().any():
        for _, one in shown.groupby(units, observed=True, sort=False):
            ax.fill_between(one[x], one[y] - one["sd"], one[y] + one["sd"], color=palette[one[hue].iloc[0]],
                            alpha=0.15, linewidth=0)
    sns.lineplot(data=shown, x=x, y=y, hue=hue, hue_order=levels, palette=palette,
                 style=style if style in shown.columns else None, style_order=style_order, units=units, estimator=None,
                 linewidth=1.6, ax=ax)
    ax.set_xlabel("training step (end of block)")
    ax.set_ylabel(f"{y} (log10 nats), block mean" if y == keys.LOG10_LOSS else f"{y}, block mean")
    per = f" of {block_steps} steps" if block_steps else ""
    ax.set_title(f"Block-mean {y} (blocks{per}); band: ±1 sd over seeds")
    if style is None:
        ax.legend(fontsize="small", title=hue)
    else:
        ax.legend(fontsize="small")  # seaborn heads each section with its column
    return ax


def _label(value: str, column: str, units: str) -> str:
    """A legend entry as people write it: ``3000`` for ``[3000]``, also inside a whole config label."""
    return re.sub(r"=\[([^\],]*)\]", r"=\1", value) if column == units else readable(value)


def plot_decay_heatmap(
    data: pd.DataFrame,
    *,
    value_label: str = "final dev loss (nats)",
    fmt: str = ".4f",
    ax: Axes | None = None,
) -> Axes:
    """Heatmap of a final loss over the decay grid (`blocks.decay_grid`: rows x columns -> value)."""
    ax = _new_ax(ax, figsize=(1.6 * max(3, data.shape[1]) + 2.5, 0.8 * max(3, data.shape[0]) + 1.5))
    data = data.rename(index=readable, columns=readable)  # 3000, not [3000]
    sns.heatmap(data, annot=True, fmt=fmt, cmap="viridis_r", linewidths=0.5, ax=ax,
                cbar_kws={"label": value_label})
    row_name, column_name = str(data.index.name), str(data.columns.name)
    ax.set_ylabel(f"{row_name} (steps at which the lr drops)" if row_name == "decay_steps" else row_name)
    ax.set_xlabel(f"{column_name} (lr after the drop)" if column_name == "decay_lrs" else column_name)
    ax.set_title(f"Decay grid: {value_label} (lower is better)")
    return ax


def plot_prove(data: pd.DataFrame, *, steps: int | None = None, judged_by: str = "held-out loss",
               chosen: str | None = None, ax: Axes | None = None) -> Axes:
    """Candidates judged against each other: each one's judged loss after the budget against its lr (log x).

    `data`: `analysis.judge`'s table (name, suggested_by, lr, seeds, losses, mean), best first. Each
    seed is a small dot, the mean over seeds a large marker joined across lrs, each candidate labelled
    by its suggesters; the `chosen` one's marker (default: the first row's) is a red star.
    """
    ax = _new_ax(ax)
    points = pd.DataFrame([{"lr": r["lr"], "seed": s, "loss": v} for _, r in data.iterrows()
                           for s, v in zip(r["seeds"], r["losses"])], columns=["lr", "seed", "loss"])
    finite = points.loc[np.isfinite(points["loss"].to_numpy(dtype="float64"))]
    if not finite.empty:
        sns.scatterplot(data=finite.assign(seed=finite["seed"].astype(str)), x="lr", y="loss", hue="seed",
                        palette="Greys", s=28, alpha=0.8, ax=ax, legend=len(finite["seed"].unique()) <= 10)
    mean = data.loc[np.isfinite(data["mean"].to_numpy(dtype="float64"))].sort_values("lr")
    ax.plot(mean["lr"], mean["mean"], color="tab:blue", linewidth=1.2, marker="o", markersize=8,
            label="mean over seeds")
    won = data.loc[data["name"] == chosen] if chosen is not None else data.head(1)
    if len(won) and math.isfinite(float(won["mean"].iloc[0])):
        best = won.iloc[0]
        ax.plot([best["lr"]], [best["mean"]], marker="*", markersize=18, color="tab:red", linestyle="none",
                label=f"chosen: {best['name']}, lr {best['lr']:.3g}")
    for _, row in mean.iterrows():
        ax.annotate(f"{row['suggested_by']}\nlr {row['lr']:.3g}", (row["lr"], row["mean"]), xytext=(6, 8),
                    textcoords="offset points", fontsize="x-small")
    diverged = data.loc[~np.isfinite(data["mean"].to_numpy(dtype="float64"))]
    for _, row in diverged.iterrows():
        ax.axvline(row["lr"], color="0.4", linestyle=":", linewidth=1)
        ax.annotate(f"{row['suggested_by']}: diverged", (row["lr"], 0.95), xycoords=("data", "axes fraction"),
                    rotation=90, fontsize="x-small", va="top")
    ax.set_xscale("log")
    ax.set_xlabel(LR_LABEL)
    ax.set_ylabel(f"{judged_by} after {steps} steps" if steps else judged_by)
    ax.set_title("Candidates trained against each other (star: the one chosen)")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return ax


def plot_range_candidates(data: ExponentPick, candidates: pd.DataFrame, *, winner: str | None = None,
                          ax: Axes | None = None) -> Axes:
    """The range-test curve against lr with the prove candidates marked and the winner highlighted."""
    ax = plot_range_curve(data.curve, x=keys.LR, y=data.column, run_curves=data.run_curves, log_x=True, ax=ax)
    for _, row in candidates.iterrows():
        won = row["name"] == winner
        at = np.interp(row["lre"], data.curve[keys.LRE], data.curve[data.column])
        ax.axvline(row["lr"], color="tab:red" if won else "0.35", linestyle="-" if won else ":",
                   linewidth=2.2 if won else 1.0)
        ax.plot([row["lr"]], [at], marker="*" if won else "o", markersize=16 if won else 7,
                color="tab:red" if won else "0.25", linestyle="none",
                label=f"{'PROVEN ' if won else ''}{row['suggested_by']}: lr {row['lr']:.3g}")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ax.set_title("Range test with the prove candidates" + (f"; proven: {winner}" if winner else ""))
    return ax
