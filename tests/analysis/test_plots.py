"""Figures: drawn from realistic synthetic runs, checked through the artists they put on the axes."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from lrscan.analysis import plots  # noqa: E402
from lrscan.analysis.blocks import decay_grid, decay_summary  # noqa: E402
from lrscan.analysis.pick import pick_exponent  # noqa: E402
from tests.support.frames import decay_loaded, make_loaded, range_history  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def pick():
    runs = [({"seed": s, "schedule": "range"}, range_history(s, stop_lre=-0.4 if s == 3 else None))
            for s in (1, 2, 3, 4)]
    loaded = make_loaded(runs, summaries={2: {"stop_reason": "climb", "stop_step": 866}})
    return pick_exponent(loaded.steps, loaded.runs, bin_width=0.05, n_boot=200)


@pytest.fixture(scope="module")
def decay():
    loaded = decay_loaded(seeds=(1, 2), decay_steps=(2000, 4000), decay_lrs=(0.01, 0.001))
    return decay_summary(loaded.steps, loaded.runs, block_steps=500)


def legend_texts(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_loss_vs_lre_marks_every_suggester_the_ci_and_the_stops(pick, tmp_path):
    ax = plots.plot_loss_vs_lre(pick)
    texts = legend_texts(ax)
    for name, value in pick.suggestions.items():
        assert any(t.startswith(f"{name}: lre {value:.2f}") for t in texts)
    assert any("bootstrap CI" in t for t in texts) and any("±1 sd" in t for t in texts)
    assert "stopped: loss climbed" in texts and "end of its range" in texts
    assert ax.get_xlabel().startswith("lr exponent") and "nats" in ax.get_ylabel()
    assert f"{pick.best_lre:.2f}" in ax.get_title()
    # the mean line is the curve, point for point
    mean_line = next(line for line in ax.get_lines() if line.get_label().startswith("mean over"))
    np.testing.assert_allclose(mean_line.get_xdata(), pick.curve["lre"])
    np.testing.assert_allclose(mean_line.get_ydata(), pick.curve["loss"])
    # the CI is one shaded span exactly over [low, high]
    span = next(p for p in ax.patches if "CI" in p.get_label())
    assert (span.get_x(), span.get_x() + span.get_width()) == pytest.approx(pick.best_lre_ci)
    ax.figure.savefig(tmp_path / "lre.png")
    assert (tmp_path / "lre.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_loss_vs_lr_uses_a_log_axis(pick):
    ax = plots.plot_loss_vs_lr(pick)
    assert ax.get_xscale() == "log"
    assert ax.get_xlabel() == plots.LR_LABEL
    mean_line = next(line for line in ax.get_lines() if line.get_label().startswith("mean over"))
    np.testing.assert_allclose(mean_line.get_xdata(), 10.0 ** pick.curve["lre"])
    assert any(t.startswith(f"min_loss: lre {pick.best_lre:.2f}, lr {pick.best_lr:.3g}") for t in legend_texts(ax))


def test_plots_draw_on_the_ax_they_are_given(pick, decay):
    before = set(plt.get_fignums())  # figures another test in this process left open are not this test's
    fig, axes = plt.subplots(1, 3)
    assert plots.plot_loss_vs_lre(pick, ax=axes[0]) is axes[0]
    assert plots.plot_block_means(decay.curves, ax=axes[1]) is axes[1]
    grid = decay_grid(decay.table, "decay_steps", "decay_lrs", "final_dev_loss")
    assert plots.plot_decay_heatmap(grid, ax=axes[2]) is axes[2]
    assert len(fig.axes) == 4  # three panels and the heatmap's colour bar: no stray figure or axes
    assert set(plt.get_fignums()) - before == {fig.number}


def test_block_means_one_line_per_config_hued_by_decay_boundary(decay):
    ax = plots.plot_block_means(decay.curves, hue="decay_steps", style="decay_lrs", block_steps=500)
    lines = [line for line in ax.get_lines() if len(line.get_xdata()) > 1]
    assert len(lines) == decay.table.shape[0]  # four configs
    texts = legend_texts(ax)
    # values as people write them (2000, not [2000]), in value order
    assert texts.index("2000") < texts.index("4000") and {"0.001", "0.01"} <= set(texts)
    assert not [t for t in texts if "[" in t]
    # one colour per decay boundary, shared by its two decayed lrs
    colours = {tuple(line.get_color()) if not isinstance(line.get_color(), str) else line.get_color() for line in lines}
    assert len(colours) == 2
    assert ax.get_xlabel() == "training step (end of block)" and "log10" in ax.get_ylabel()
    assert "500 steps" in ax.get_title()


def test_block_means_falls_back_to_the_config_label(decay):
    ax = plots.plot_block_means(decay.curves.drop(columns="decay_steps"), hue="decay_steps")
    assert ax.get_legend().get_title().get_text() == "config"
    assert "decay_steps=2000 decay_lrs=0.001" in legend_texts(ax)


def test_heatmap_annotates_every_cell(decay):
    grid = decay_grid(decay.table, "decay_steps", "decay_lrs", "final_dev_loss")
    ax = plots.plot_decay_heatmap(grid)
    annotations = sorted(float(t.get_text()) for t in ax.texts)
    assert annotations == pytest.approx(sorted(np.round(grid.to_numpy().ravel(), 4)), abs=1e-4)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["2000", "4000"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.001", "0.01"]
    assert ax.get_ylabel().startswith("decay_steps") and ax.get_xlabel().startswith("decay_lrs")


def diverging_pick():
    """A range test whose tail blows up to ~28 nats, as a 1000-step HF run's did: a parabola to 2 nats, then exp."""
    runs = []
    for s in (1, 2, 3):
        hist = range_history(s, lre_min=-3.0, lre_max=0.5)
        blow_up = (np.exp(8.0 * (hist["lre"] + 0.1)) - 1.0) * (hist["lre"] > -0.1)
        hist = hist.assign(loss=hist["loss"] + blow_up)
        runs.append(({"seed": s, "schedule": "range"}, hist))
    loaded = make_loaded(runs)
    return pick_exponent(loaded.steps, loaded.runs, bin_width=0.05, n_boot=100)


@pytest.mark.parametrize("plot", [plots.plot_loss_vs_lre, plots.plot_loss_vs_lr])
def test_a_diverged_tail_is_cut_from_the_y_axis_and_marked(plot, tmp_path):
    pick = diverging_pick()
    curve = pick.curve["loss"]
    assert curve.max() > 20 and curve.min() < 2.2  # the figure today would span ~2 to ~28 nats
    ax = plot(pick)
    bottom, top = ax.get_ylim()
    # from just below the minimum to a few times it: the informative part fills the axes
    assert curve.min() - 0.2 < bottom < curve.min()
    # the top: a little above where the seeds started (5.24 nats at lre -3), far below the tail
    low, first = curve.min(), 2.0 + (-3.0 + 1.2) ** 2
    assert top == pytest.approx(first + 0.1 * (first - low), abs=0.2)
    assert top < 6 < 20 < curve.max()
    assert (curve.min() - bottom) / (top - bottom) < 0.1
    # the cut is said: a shaded span from where the mean left the chart, in the legend with the peak
    [note] = [t for t in legend_texts(ax) if t.startswith("diverged:")]
    assert f"up to {curve.max():.3g}" in note
    span = next(p for p in ax.patches if p.get_label().startswith("diverged:"))
    first_off = pick.curve.loc[curve > top].iloc[0]
    x_key = "lre" if plot is plots.plot_loss_vs_lre else "lr"
    assert span.get_x() == pytest.approx(first_off[x_key])
    ax.figure.savefig(tmp_path / f"{plot.__name__}.png")


def test_a_curve_that_stays_in_range_is_not_cut(pick):
    ax = plots.plot_loss_vs_lre(pick)
    bottom, top = ax.get_ylim()
    assert bottom < pick.curve["loss"].min() and top > pick.curve["loss"].max()
    assert not any(t.startswith("diverged:") for t in legend_texts(ax))


def test_informative_ylim_of_a_log_loss_below_zero():
    # log10 loss: values can be negative, "a few times the minimum" means nothing there
    curve = np.array([0.5, 0.2, -0.3, -0.2, 0.6, 2.5, 9.0])
    bottom, top = plots.informative_ylim(curve)
    assert bottom < -0.3 < 0.5 < top < 2.5
    assert plots.informative_ylim(np.array([3.3, 2.5, 2.1, 2.4])) is None
