"""The exponent pick: binning across ranges and seeds, suggesters, bootstrap CI."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from lrscan.analysis.pick import MIN_SEEDS_FOR_CI, ci_description, pick_exponent, valley_index
from lrscan.pipeline.errors import LrscanError
from tests.support.frames import make_loaded, range_history, range_loaded


def fastai_valley(lrs, losses):
    """fastai's `valley` (fastai/callback/schedule.py), verbatim but for the return value: the oracle."""
    n = len(losses)
    max_start, max_end = 0, 0
    lds = [1] * n
    for i in range(1, n):
        for j in range(0, i):
            if (losses[i] < losses[j]) and (lds[i] < lds[j] + 1):
                lds[i] = lds[j] + 1
            if lds[max_end] < lds[i]:
                max_end = i
                max_start = max_end - lds[max_end]
    sections = (max_end - max_start) / 3
    idx = max_start + int(sections) + int(sections / 2)
    return float(lrs[idx])


@pytest.mark.parametrize("seed", range(6))
def test_valley_index_is_fastais_valley(seed):
    rng = np.random.default_rng(seed)
    losses = np.cumsum(rng.normal(0, 1, 40)) + np.linspace(5, 0, 40) ** 2
    lrs = np.logspace(-3, 0, 40)
    assert lrs[valley_index(losses)] == fastai_valley(lrs, list(losses))


def test_valley_lands_about_the_middle_of_a_clean_valley():
    # flat, then a strict descent from index 9 (the last 5.0) to 29, then up. "2/3 through" would be
    # 22; fastai's formula gives max_start = 29 - 21 = 8, idx = 8 + 7 + 3 = 18: about the middle (19)
    losses = np.r_[np.full(10, 5.0), np.linspace(5, 1, 21)[1:], np.linspace(1, 5, 10)]
    assert valley_index(losses) == 18 == list(losses).index(fastai_valley(losses, list(losses)))


def test_suggester_names_say_what_they_are_and_the_old_name_still_reads():
    """lrscan's min-loss lr is `min_loss` (fastai's `minimum` is that / 10: `fastai_minimum`); `minimum` reads as
    min_loss for old readers, in `suggestions` and in summary.json's `suggesters`."""
    loaded = range_loaded(seeds=(1, 2), best_lre=-1.2)
    pick = pick_exponent(loaded.steps, loaded.runs, bin_width=0.1, n_boot=0)
    s = pick.suggestions
    assert list(s) == ["min_loss", "fastai_minimum", "steepest", "valley"]
    assert s["min_loss"] == s["minimum"] == s.get("minimum") == pick.best_lre and "minimum" in s
    assert s["fastai_minimum"] == pytest.approx(pick.best_lre - 1.0)  # lr / 10
    assert s["steepest"] == pick.steepest_lre and s["valley"] == pick.valley_lre
    with pytest.raises(KeyError):
        s["best"]
    written = pick.to_dict()["suggesters"]
    assert written == {**s, "minimum": pick.best_lre}
    assert s.map(lambda lre: 10.0**lre)["minimum"] == pytest.approx(pick.best_lr)


def test_pick_finds_the_known_minimum_with_a_ci_around_it():
    loaded = range_loaded(seeds=(1, 2, 3, 4, 5), best_lre=-1.2)
    pick = pick_exponent(loaded.steps, loaded.runs, bin_width=0.1, n_boot=500)

    assert pick.best_lre == pytest.approx(-1.25)  # the bin [-1.3, -1.2) or [-1.2, -1.1): centres -1.25/-1.15
    assert pick.best_lr == pytest.approx(10 ** pick.best_lre)
    low, high = pick.best_lre_ci
    assert low <= pick.best_lre <= high and low <= -1.2 <= high + 0.05
    assert high - low <= 0.3
    # a parabola falls fastest at its low end: steepest sits left of the valley, which sits left of the minimum
    assert pick.steepest_lre < pick.valley_lre < pick.best_lre
    assert (pick.n_runs, pick.n_seeds) == (5, 5)
    assert list(pick.curve.columns) == ["lre", "lr", "loss", "sd", "sem", "n", "n_runs"]
    assert pick.curve["n"].max() == 5
    # bins on multiples of the width: centres at k * 0.1 + 0.05
    assert np.allclose((pick.curve["lre"] - 0.05) / 0.1, np.round((pick.curve["lre"] - 0.05) / 0.1))


def test_curve_is_the_mean_over_seeds_of_each_seeds_bin_mean():
    loaded = range_loaded(seeds=(1, 2, 3), noise=0.1)
    pick = pick_exponent(loaded.steps, bin_width=0.25, skip_start_frac=0, skip_end_frac=0, n_boot=0)
    steps = loaded.steps.assign(bin=np.floor(loaded.steps["lre"] / 0.25 + 1e-9))
    per_run = steps.groupby(["run_id", "bin"], observed=True)["loss"].mean().astype("float64")
    expected = per_run.groupby("bin").agg(["mean", "std", "count"])
    np.testing.assert_allclose(pick.curve["loss"], expected["mean"], rtol=1e-9)
    np.testing.assert_allclose(pick.curve["sd"], expected["std"], rtol=1e-9)
    np.testing.assert_allclose(pick.curve["sem"], expected["std"] / np.sqrt(expected["count"]), rtol=1e-9)


def test_runs_of_different_ranges_and_seeds_combine():
    runs = [({"seed": s, "schedule": "range", "lre_min": -3.0, "lre_max": 0.0}, range_history(s)) for s in (1, 2, 3)]
    runs += [({"seed": s, "schedule": "range", "lre_min": -1.6, "lre_max": -0.8}, range_history(s + 10, -1.6, -0.8))
             for s in (1, 2, 3)]
    loaded = make_loaded(runs)
    pick = pick_exponent(loaded.steps, bin_width=0.1, n_boot=200)
    assert (pick.n_runs, pick.n_seeds) == (6, 3)  # a seed's two runs are one bootstrap unit
    inside = pick.curve.set_index("lre")["n_runs"]
    assert inside.loc[-1.25] == 6 and inside.loc[-2.55] == 3
    assert pick.best_lre == pytest.approx(-1.25) or pick.best_lre == pytest.approx(-1.15)


def test_diverged_and_non_finite_steps_do_not_count():
    hist = range_history(1)
    poisoned = hist.copy()
    poisoned.loc[poisoned["lre"] > -0.6, "loss"] = 0.0  # "lowest loss" after divergence: must be ignored
    poisoned.loc[poisoned["lre"].between(-0.61, -0.6), "loss"] = np.inf
    runs = [({"seed": 1, "schedule": "range"}, poisoned), ({"seed": 2, "schedule": "range"}, range_history(2))]
    loaded = make_loaded(runs)
    pick = pick_exponent(loaded.steps, n_boot=0)
    assert -1.5 < pick.best_lre < -0.9
    assert pick.per_run.set_index("run_id").loc["run000", "last_lre"] < -0.6

    # the summary's diverged_at_step cuts a run as well, even where its losses look finite
    loaded = make_loaded([({"seed": 1, "schedule": "range"}, poisoned.replace(np.inf, 0.0))],
                         summaries={0: {"diverged_at_step": int(poisoned.loc[poisoned["lre"] > -0.61, "step"].min())}})
    pick = pick_exponent(loaded.steps, loaded.runs, n_boot=0)
    assert -1.5 < pick.best_lre < -0.9


def test_a_nan_loss_is_a_step_not_measured_not_a_divergence():
    # a loss logged as NaN (a row with NaN, as wandb's reader gives it) picks as if the step were not logged
    hists = {s: range_history(s) for s in (1, 2, 3)}
    holed = {s: h.copy() for s, h in hists.items()}
    holed[2].loc[holed[2]["lre"].between(-1.51, -1.49), "loss"] = np.nan
    dropped = {s: h.loc[h["loss"].notna()].reset_index(drop=True) for s, h in holed.items()}
    picks = [pick_exponent(make_loaded([({"seed": s, "schedule": "range"}, h) for s, h in hs.items()]).steps,
                           bin_width=0.1, n_boot=50) for hs in (holed, dropped)]
    with_nan, without = picks
    assert (with_nan.best_lre, with_nan.best_lre_ci, with_nan.valley_lre) == (
        without.best_lre, without.best_lre_ci, without.valley_lre)
    pd.testing.assert_frame_equal(with_nan.curve, without.curve)
    assert with_nan.per_run.set_index("run_id").loc["run001", "last_lre"] > -0.1  # the run went on after it


def test_runs_still_running_are_left_out_unless_asked_for():
    runs = [({"seed": s, "schedule": "range"}, range_history(s)) for s in (1, 2, 3)]
    loaded = make_loaded(runs, summaries={1: {"state": "running"}})  # a cloud run's state, or no exit record yet
    pick = pick_exponent(loaded.steps, loaded.runs, n_boot=0)
    assert pick.left_out_running == ["run001"] and pick.n_runs == 2
    assert "run001" not in set(pick.per_run["run_id"]) and any("still running (run001)" in n for n in pick.notes)
    alone = pick_exponent(make_loaded([runs[0], runs[2]]).steps, n_boot=0)
    assert (pick.best_lre, pick.valley_lre) == (alone.best_lre, alone.valley_lre)
    asked = pick_exponent(loaded.steps, loaded.runs, n_boot=0, include_running=True)
    assert asked.left_out_running == [] and asked.n_runs == 3
    with pytest.raises(LrscanError, match=r"every range-test run is still running \(run000\)"):
        one = make_loaded(runs[:1], summaries={0: {"state": "running"}})
        pick_exponent(one.steps, one.runs, n_boot=0)


def test_a_run_that_stopped_early_is_not_measured_past_its_stop():
    runs = [({"seed": s, "schedule": "range"}, range_history(s, stop_lre=-0.5 if s == 2 else None)) for s in (1, 2, 3)]
    loaded = make_loaded(runs, summaries={1: {"stop_reason": "climb", "stop_step": 833}})
    pick = pick_exponent(loaded.steps, loaded.runs, bin_width=0.1, n_boot=0)
    tail = pick.curve.loc[pick.curve["lre"] > -0.4]
    assert (tail["n"] == 2).all()  # two seeds measured there, not three with a zero
    stopped = pick.per_run.set_index("run_id").loc["run001"]
    assert stopped["stop_reason"] == "climb" and stopped["stop_step"] == 833
    assert stopped["last_lre"] <= -0.5 and stopped["last_step"] < 999


def test_bootstrap_is_seeded_and_optional():
    loaded = range_loaded(seeds=(1, 2, 3, 4))
    a = pick_exponent(loaded.steps, n_boot=300, seed=7)
    b = pick_exponent(loaded.steps, n_boot=300, seed=7)
    assert a.best_lre_ci == b.best_lre_ci and a.steepest_lre_ci == b.steepest_lre_ci
    none = pick_exponent(loaded.steps, n_boot=0)
    assert all(math.isnan(v) for v in none.best_lre_ci)
    assert none.best_lre == a.best_lre


def test_one_seed_has_no_ci_and_says_why():
    pick = pick_exponent(range_loaded(seeds=(1,)).steps)
    assert all(math.isnan(v) for v in pick.best_lre_ci)
    assert any("one seed" in note for note in pick.notes)
    assert pick.to_dict()["best_lre_ci"] == [None, None]


@pytest.mark.parametrize("n_seeds, distinct, enough", [(2, 3, False), (3, 10, False), (5, 126, True), (8, 6435, True)])
def test_the_ci_says_how_it_was_made_and_warns_below_five_seeds(n_seeds, distinct, enough):
    """n seeds give C(2n-1, n) distinct bootstrap resamples: with 3, the "95% CI" is the min-max of three picks."""
    pick = pick_exponent(range_loaded(seeds=tuple(range(1, n_seeds + 1))).steps, n_boot=400)
    assert pick.ci_method == {"method": "percentile bootstrap over seeds", "level": 0.95, "unit": "seed",
                              "n_units": n_seeds, "n_boot": 400, "distinct_resamples": distinct, "enough_units": enough}
    assert pick.to_dict()["ci_method"] == pick.ci_method
    warned = [n for n in pick.notes if "distinct resamples" in n]
    assert bool(warned) == (n_seeds < MIN_SEEDS_FOR_CI)
    if warned:
        assert f"only {n_seeds} seeds" in warned[0] and f"at most {distinct} distinct" in warned[0]
    text = ci_description(pick.ci_method)
    assert f"({n_seeds} seeds, 400 resamples, {distinct} distinct)" in text and ("too few seeds" in text) != enough


def test_no_ci_says_why():
    assert pick_exponent(range_loaded(seeds=(1, 2, 3)).steps, n_boot=0).ci_method["reason"] == "no bootstrap (n_boot=0)"
    one = pick_exponent(range_loaded(seeds=(1,)).steps)
    assert one.ci_method["method"] == "none" and ci_description(one.ci_method) == "no CI (only one seed)"


def test_per_run_picks():
    loaded = range_loaded(seeds=(1, 2), best_lre=-1.0)
    # lre_min and lre_max, the same for both runs, are in `runs` only (steps holds what differs)
    assert "lre_min" not in loaded.steps
    per_run = pick_exponent(loaded.steps, loaded.runs, n_boot=0, bin_width=0.1).per_run
    assert per_run["run_id"].tolist() == ["run000", "run001"]
    assert per_run["best_lre"].between(-1.2, -0.8).all()
    wanted = {"seed", "lre_min", "lre_max", "n_steps", "last_lre", "last_loss", "steepest_lre", "valley_lre"}
    assert wanted <= set(per_run.columns)


def test_too_few_points_for_the_skip_window():
    loaded = make_loaded([({"seed": 1, "schedule": "range", "steps": 10}, range_history(1, steps=10))])
    with pytest.raises(LrscanError, match="skip"):
        pick_exponent(loaded.steps, n_bins=2)


@pytest.mark.parametrize("kwargs, match", [
    ({"bin_width": 0.1, "n_bins": 10}, "not both"),
    ({"bin_width": -1.0}, "bin_width"),
    ({"n_bins": 0}, "n_bins"),
    ({"skip_start_frac": 1.0}, "skip_start_frac"),
    ({"n_boot": -1}, "n_boot"),
])
def test_bad_settings(kwargs, match):
    with pytest.raises(LrscanError, match=match):
        pick_exponent(range_loaded(seeds=(1,)).steps, **kwargs)


def test_no_range_runs():
    loaded = make_loaded([({"seed": 1, "schedule": "constant"}, range_history(1))])
    with pytest.raises(LrscanError, match="no range-test runs"):
        pick_exponent(loaded.steps)


# -- zoom ----------------------------------------------------------------------------------------
