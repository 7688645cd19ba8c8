"""analysis.judge: one criterion, the last logged value, paired seeds, Holm against the pick, one set of words.

Each repro of issue 27's statistics is a test here (the winner's curse is tests/analysis/test_decide.py's
simulation); python -m analysis on anyone's grid is tests/analysis/test_grids.py.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from pandas.testing import assert_frame_equal
from scipy import stats

from lrscan.analysis.candidates import prove_candidates
from lrscan.analysis.decide import RULE
from lrscan.analysis.judge import TABLE_COLUMNS, TRAIN_TAIL, final_losses, judge, judge_run
from lrscan.pipeline.errors import LrscanError

CANDIDATES = prove_candidates({"best_lre": -1.0, "steepest_lre": math.log10(0.03), "valley_lre": -2.0})


def finals(losses: dict[float, list[float]], seeds=(1, 2, 3)) -> pd.DataFrame:
    """A final-losses frame: lr -> one loss per seed (NaN: that seed did not run)."""
    rows = [{"run_id": f"r{lr}-{s}", "lr": lr, "seed": float(s), "loss": v, "criterion": "dev_loss"}
            for lr, vs in losses.items() for s, v in zip(seeds, vs) if not (isinstance(v, float) and math.isnan(v))]
    return pd.DataFrame(rows)


def steps_of(tails: dict[str, list[float]], lrs: dict[str, float]) -> pd.DataFrame:
    return pd.concat([pd.DataFrame({"run_id": r, "step": range(len(v)), "lr": lrs[r], "loss": v})
                      for r, v in tails.items()], ignore_index=True)


def test_the_paired_comparison_with_the_pick_is_the_t_interval_of_the_per_seed_differences_holm_adjusted():
    # seeds vary a lot (seed 3 is hard at every lr) but the differences are steady: pairing sees through it
    losses = {0.1: [2.00, 2.10, 2.60], 0.03: [2.05, 2.17, 2.64], 0.01: [2.30, 2.35, 2.95]}
    verdict = judge(finals(losses), CANDIDATES)
    t = verdict.table.set_index("name")
    assert list(verdict.table.columns) == TABLE_COLUMNS and verdict.table["name"].tolist()[0] == "min_loss"
    d1, d2 = np.array([0.05, 0.07, 0.04]), np.array([0.30, 0.25, 0.35])
    p = [stats.ttest_rel(d, np.zeros(3)).pvalue for d in (d1, d2)]
    holm = sorted([min(1, 2 * min(p)), max(min(1, 2 * min(p)), max(p))])  # Holm over the 2 comparisons with the pick
    assert sorted(t.loc[["steepest", "fastai_minimum"], "p_holm"]) == pytest.approx(holm)
    assert t.loc["steepest", "p"] == pytest.approx(p[0]) and t.loc["steepest", "diff"] == pytest.approx(d1.mean())
    # the CI is at the level Holm tested at, so it excludes 0 exactly when the comparison is told apart
    level = 1 - 0.05 * t.loc["steepest", "p"] / t.loc["steepest", "p_holm"]
    half = stats.t.ppf(1 - (1 - level) / 2, 2) * d1.std(ddof=1) / math.sqrt(3)
    assert (t.loc["steepest", "ci_low"], t.loc["steepest", "ci_high"]) == pytest.approx((d1.mean() - half,
                                                                                         d1.mean() + half))
    assert t.loc["steepest", "status"] == "told apart" and t.loc["steepest", "direction"] == "worse"
    assert t.loc["min_loss", "status"] == "pick" and verdict.chosen == "min_loss" and not verdict.beats_pick
    assert verdict.chosen_by == "told apart from every other"
    assert "every other candidate is told apart from it as worse" in verdict.opening()
    # unpaired, the same numbers could not tell them apart: without seeds there is no pairing, one run each
    with pytest.raises(LrscanError, match="one run per candidate and seed"):
        judge(finals(losses).assign(seed=np.nan), CANDIDATES)


def test_repro_duplicate_seeds_refuse_in_one_line_naming_them():
    # lr 0.1 at seed 42 three times (a retried run, a 2-D grid under seed_everything(42)): a dict kept the last
    rows = finals({0.1: [3.0], 0.01: [2.0]}, seeds=(42,))
    rows = pd.concat([rows, finals({0.1: [1.0], 0.01: [2.05]}, seeds=(42,)), finals({0.1: [1.05], 0.01: [2.1]},
                                                                                 seeds=(42,))])
    with pytest.raises(LrscanError) as err:
        judge(rows, CANDIDATES)
    assert "\n" not in str(err.value)
    assert "min_loss seed 42 x3" in str(err.value) and "fastai_minimum seed 42 x3" in str(err.value)


def test_repro_nan_held_out_and_nan_tail_is_diverged_not_judged_by_an_older_finite_tail():
    # run a: its val_loss and last training losses are NaN; an older tail (1.256) was finite. b, c: val 2.1-2.2
    tails = {"a": [5.0] * 17 + [1.256, math.nan, math.nan], "b": [2.5] * 20, "c": [2.4] * 20}
    steps = steps_of(tails, {"a": 0.1, "b": 0.01, "c": 0.03})
    runs = pd.DataFrame({"run_id": list("abc"), "seed": [1, 1, 1], "val_loss": [math.nan, 2.2, 2.1]})
    got = final_losses(steps, runs)
    expected = pd.DataFrame({"run_id": list("abc"), "lr": [0.1, 0.01, 0.03], "seed": [1.0, 1.0, 1.0],
                             "loss": [math.inf, 2.2, 2.1], "diverged": [True, False, False],
                             "criterion": ["val_loss"] * 3})
    assert_frame_equal(got, expected)
    verdict = judge(got, CANDIDATES)
    assert verdict.table["name"].tolist()[-1] == "min_loss" and verdict.table["status"].iloc[-1] == "diverged"
    assert verdict.chosen == "steepest" and not verdict.on_pick  # the pick diverged: the leader is the reference
    # a NaN anywhere in the tail is a divergence, even with a finite last value
    assert judge_run([2.0] * 18 + [math.nan, 2.0])["diverged"] and not judge_run([2.0] * 20)["diverged"]
    assert judge_run([2.0] * 20, held_out=math.inf)["diverged"] and judge_run([], None)["diverged"]


def test_one_criterion_per_table_the_held_out_key_every_run_has_else_the_tail_for_every_run():
    steps = steps_of({"a": [5.0] * 18 + [1.0, 2.0], "b": list(np.arange(20.0))}, {"a": 0.1, "b": 0.01})
    runs = pd.DataFrame({"run_id": ["a", "b"], "seed": [1, 1], "val_loss": [np.nan, 1.25]})
    got = final_losses(steps, runs)  # a has no val_loss: both are judged by their training tail
    assert got["criterion"].tolist() == [TRAIN_TAIL] * 2 and got["loss"].tolist() == [1.5, 18.5]
    with pytest.raises(LrscanError, match=r"--held-out-key val_loss: 1 run\(s\) did not log it \(a\)"):
        final_losses(steps, runs, held_out_key="val_loss")
    both = runs.assign(val_loss=[1.3, 1.25])
    assert final_losses(steps, both, held_out_key="val_loss")["loss"].tolist() == [1.3, 1.25]
    verdict = judge(final_losses(steps, runs), steps=20)
    assert verdict.headline().startswith("Judged by the mean training loss over each run's last 10% of steps")
    with pytest.raises(LrscanError, match="one criterion per table"):
        judge(finals({0.1: [2.0], 0.01: [2.1]}, seeds=(1,)).assign(criterion=["dev_loss", TRAIN_TAIL]))


def test_repro_a_candidate_missing_its_hard_seed_does_not_win_by_its_own_seed_set():
    # lr 0.1 ran seeds 1, 2; lr 0.01 ran 1, 2, 3 (3 is hard). Own-set means: 0.1 2.05 < 0.01 2.47
    rows = finals({0.1: [2.0, 2.1, math.nan], 0.01: [1.9, 2.0, 3.5]})
    verdict = judge(rows)
    assert verdict.table["name"].tolist() == ["lr=0.01", "lr=0.1"] and verdict.shared_seeds == [1, 2]
    assert verdict.table["mean"].tolist() == pytest.approx([1.95, 2.05]) and verdict.chosen == "lr=0.01"
    with pytest.raises(LrscanError, match="no seed that every candidate ran"):
        judge(finals({0.1: [2.0, math.nan], 0.01: [math.nan, 2.0]}, seeds=(1, 2)))


def test_ranking_contradicted_by_the_pairing_is_its_own_status():
    # over the seed every candidate ran (1), 0.03 is ahead of the pick; over the seeds the pair shares it is behind
    rows = finals({0.1: [2.0, 2.0, 2.0, 2.0], 0.03: [1.9, 2.5, 2.5, 2.5], 0.01: [2.5, math.nan, math.nan, math.nan]},
                  seeds=(1, 2, 3, 4))
    t = judge(rows, CANDIDATES).table.set_index("name")
    assert t.loc["steepest", "status"] == "ranking contradicted by the pairing"
    assert t.loc["steepest", "mean"] < t.loc["min_loss", "mean"] and t.loc["steepest", "diff"] > 0


def test_repro_one_set_of_words_the_opening_markdown_str_and_dict_never_disagree():
    # the pick diverged on a seed: the old sentence read "ahead of the min-loss pick by inf (CI n/a)" while the
    # decision said distinguishable with CI [+nan, +nan]
    verdict = judge(finals({0.1: [math.inf, 2.0, 2.1], 0.03: [2.0, 2.1, 2.2], 0.01: [2.05, 2.1, 2.3]}), CANDIDATES)
    opening = verdict.opening()
    assert "inf" not in opening and "nan" not in opening and "beats" not in opening and not verdict.beats_pick
    assert verdict.to_dict()["opening"] == opening and f"**{opening}**" in verdict.markdown()
    assert opening in str(verdict) and verdict.headline() == verdict.markdown()[0] == str(verdict).splitlines()[0]
    # and on random tables: told apart <=> the CI excludes 0 <=> p_holm <= alpha, for every comparison
    rng = np.random.default_rng(5)
    for _ in range(50):
        x = rng.normal(0, 1, (1, 3)) + rng.normal(0, 0.3, (4, 3)) + rng.normal(0, 0.5, (4, 1))
        table = judge(finals(dict(zip([0.3, 0.1, 0.03, 0.01], x.tolist()))), pick="lr=0.1").table
        tested = table.loc[table["p_holm"].notna()]
        told = tested["status"] == "told apart"
        assert (told == (tested["p_holm"] <= 0.05)).all()
        assert (told == ((tested["ci_low"] > 0) | (tested["ci_high"] < 0))).all()


def test_the_pick_stays_unless_beaten_and_a_tie_says_the_smallest_gap_it_could_have_seen():
    losses = {0.1: [2.00, 2.10, 2.60], 0.03: [1.98, 2.13, 2.55], 0.01: [2.3, 2.35, 2.95]}
    verdict = judge(finals(losses), CANDIDATES, rule="lowest_mean")
    t = verdict.table.set_index("name")
    assert t.loc["steepest", "status"] == "tied" and not verdict.beats_pick
    assert verdict.chosen == "steepest" and verdict.chosen_by == "rule lowest_mean among the tied"
    assert "does not beat the min-loss pick" in verdict.opening()
    assert f"smallest gap these seeds could tell apart: {t.loc['steepest', 'detectable']:.4f}" in verdict.opening()
    assert t.loc["steepest", "detectable"] == pytest.approx(t.loc["steepest", "ci_high"] - t.loc["steepest", "diff"])
    low = judge(finals(losses), CANDIDATES, rule="lower_lr")
    assert low.chosen == "steepest" and low.to_dict()["rule"] == "lower_lr"  # fastai_minimum is told apart: out
    assert judge(finals(losses), CANDIDATES, rule="pick").chosen == "min_loss"
    # beaten: the sentence says so, with the Holm-adjusted numbers
    better = judge(finals({0.1: [2.1, 2.2, 2.7], 0.03: [2.05, 2.12, 2.64], 0.01: [1.5, 1.62, 2.1]}), CANDIDATES)
    assert better.beats_pick and better.chosen == "fastai_minimum" and better.chosen_by == "beats the pick"
    assert better.opening().startswith("lr 0.01 (fastai_minimum, valley) beats the min-loss pick (lr 0.1) by 0.5933")
    summary = better.to_dict()
    assert summary["chosen_by"] == "beats the pick" and summary["rule"] == RULE and summary["beats_pick"]


def test_one_seed_is_too_few_and_every_candidate_diverged_is_one_line():
    verdict = judge(finals({0.1: [2.1], 0.03: [2.05], 0.01: [2.2]}, seeds=(7,)), CANDIDATES)
    assert set(verdict.table["status"]) == {"pick", "too few seeds"} and verdict.chosen == "steepest"
    assert "nothing can be told apart" in verdict.opening() and not verdict.beats_pick
    with pytest.raises(LrscanError, match="every candidate diverged"):
        judge(finals({0.1: [math.inf], 0.01: [5.0]}, seeds=(1,)).assign(diverged=True))
    with pytest.raises(LrscanError, match="runs at lr 0.5 are no candidate's"):
        judge(finals({0.5: [2.0], 0.1: [2.0]}, seeds=(1,)), CANDIDATES)


def test_repro_a_nan_logged_as_the_last_held_out_loss_of_a_real_run_is_diverged_not_its_older_finite_one(tmp_path):
    # real offline runs: both log val_loss 2.1 at step 10; run "nan" logs NaN as its last one (step 19), "ok" 2.2.
    # Their training losses are finite throughout: only the last held-out value says run "nan" diverged
    import wandb

    from lrscan.analysis.sources import load_runs
    from lrscan.pipeline.runlog import read_run_file

    for run_id, last in (("nan", math.nan), ("ok", 2.2)):
        run = wandb.init(mode="offline", dir=tmp_path, id=run_id, project="p", reinit="create_new",
                         config={"lr": 0.1 if run_id == "nan" else 0.01, "seed": 1})
        for step in range(20):
            run.log({"loss": 3.0 - step * 0.01, "lr": run.config["lr"],
                     **({"val_loss": 2.1} if step == 10 else {"val_loss": last} if step == 19 else {})}, step=step)
        run.finish()
    [path] = tmp_path.glob("wandb/offline-run-*-nan/run-nan.wandb")
    assert math.isnan(read_run_file(path).summary["val_loss"])  # the last logged value, not the older 2.1
    loaded = load_runs(tmp_path / "wandb")
    got = final_losses(loaded.steps, loaded.runs).set_index("run_id")
    assert got.loc["nan", "diverged"] and math.isinf(got.loc["nan", "loss"])
    assert not got.loc["ok", "diverged"] and got.loc["ok", "loss"] == 2.2 and set(got["criterion"]) == {"val_loss"}
