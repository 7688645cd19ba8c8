"""The range's default ends by optimizer family, and the check that a curve holds its minimum and its turn."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from lrscan.analysis.pick import pick_exponent
from lrscan.pipeline.study.ranges import (
    ADAM_RANGE,
    SGD_RANGE,
    check_range,
    default_range,
    fill_range,
    next_range_arguments,
    optimizer_family,
)

PARAMS = [torch.nn.Parameter(torch.zeros(2))]


@pytest.mark.parametrize(("optimizer", "family"), [
    (torch.optim.SGD(PARAMS, lr=0.1), "sgd"), (torch.optim.SGD(PARAMS, lr=0.1, momentum=0.9), "sgd"),
    (torch.optim.Adam(PARAMS), "adam"), (torch.optim.AdamW(PARAMS), "adam"), (torch.optim.NAdam(PARAMS), "adam"),
    (torch.optim.RAdam(PARAMS), "adam"), (torch.optim.Adamax(PARAMS), "adam"), (torch.optim.RMSprop(PARAMS), "adam"),
    (torch.optim.Adagrad(PARAMS), "adam"), (torch.optim.Adadelta(PARAMS), "sgd"),
])
def test_the_family_of_torchs_optimizers(optimizer, family):
    assert optimizer_family(optimizer) == family
    ends = default_range(optimizer)
    assert (ends.lre_min, ends.lre_max) == (ADAM_RANGE if family == "adam" else SGD_RANGE)
    assert type(optimizer).__name__ in ends.why


def test_third_party_optimizers_are_known_by_name():
    class AdamW8bit(torch.optim.Optimizer):  # bitsandbytes' name; not a torch.optim.Adam
        pass

    class Lion(torch.optim.Optimizer):
        pass

    class MyAdamW(torch.optim.AdamW):  # a subclass keeps its base's family
        pass

    for cls in (AdamW8bit, Lion):
        assert optimizer_family(cls.__new__(cls)) == "adam"
    assert optimizer_family(MyAdamW(PARAMS)) == "adam"


def test_an_end_the_user_gives_is_kept_and_the_other_is_the_familys():
    adam = torch.optim.AdamW(PARAMS)
    assert (fill_range(-4.0, None, adam).lre_min, fill_range(-4.0, None, adam).lre_max) == (-4.0, ADAM_RANGE[1])
    assert (fill_range(None, 0.5, adam).lre_min, fill_range(None, 0.5, adam).lre_max) == (ADAM_RANGE[0], 0.5)
    assert fill_range(-2.0, -1.0, adam).why == "given"


def _pick(curve, lre_min=-3.0, lre_max=0.0, seeds=(1, 2, 3), steps=400, noise=0.05):
    """pick_exponent on synthetic range runs: loss = curve(lre) + noise per step, one run per seed."""
    lre = np.linspace(lre_min, lre_max, steps)
    frames = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        frames.append(pd.DataFrame({"run_id": f"r{seed}", "seed": seed, "step": np.arange(steps), "lre": lre,
                                    "loss": curve(lre) + noise * rng.standard_normal(steps), "schedule": "range"}))
    return pick_exponent(pd.concat(frames, ignore_index=True), n_boot=50)


def test_a_curve_with_its_valley_and_its_climb_holds():
    check = check_range(_pick(lambda x: 1 + (x + 1.5) ** 2), None, lre_min=-3.0, lre_max=0.0)
    assert check.holds and check.next_range is None and check.message == ""
    assert next_range_arguments(check, 400) is None


def test_a_minimum_on_the_first_lrs_names_a_lower_range():
    check = check_range(_pick(lambda x: 1 + np.exp(2 * (x + 3))), None, lre_min=-3.0, lre_max=0.0)
    assert not check.holds_minimum and check.turns_up
    assert check.next_range == (-5.0, 0.0)
    assert "lowest on its first lrs" in check.message and "lre_min=-5, lre_max=0" in check.message
    assert "\n" not in check.message
    # the next range keeps the steps per decade: 400 steps over 3 decades -> 667 over 5
    assert next_range_arguments(check, 400) == {"lre_min": -5.0, "lre_max": 0.0, "steps": 667}


def test_a_loss_that_never_turns_up_names_a_higher_range():
    # noisy and still falling at the last lr (the noise is larger than the last decade's fall)
    check = check_range(_pick(lambda x: 3 - 0.5 * (x + 6), lre_min=-6.0, lre_max=-4.0, noise=0.3), None,
                        lre_min=-6.0, lre_max=-4.0)
    assert check.holds_minimum and not check.turns_up
    assert check.next_range == (-6.0, -2.0) and "never turns up" in check.message


def test_a_run_stopped_for_a_climb_turned_up():
    flat = _pick(lambda x: 3 - 0.5 * (x + 3))
    runs = pd.DataFrame({"run_id": ["r1", "r2", "r3"], "stop_reason": ["climb", None, None]})
    assert check_range(flat, runs, lre_min=-3.0, lre_max=0.0).turns_up
    assert not check_range(flat, runs.assign(stop_reason=None), lre_min=-3.0, lre_max=0.0).turns_up


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_studys_extend_runs_the_range_it_names_and_reads_that_pick(tmp_path, words_file, monkeypatch, capsys):
    """A range far below the MLP's good lrs (1e-7..1e-6: the loss barely moves) is run again two decades higher,
    as a sweep of its own whose pick the study then reads."""
    from lrscan.pipeline.study.study import derive_sweep, extend_study_range
    from lrscan.pipeline.sweep import load_sweep
    from tests.pipeline.study.test_study import tiny_study

    monkeypatch.setenv("LRSCAN_DATA", str(words_file))
    study = tiny_study(tmp_path / "study", lre_min=-7.0, lre_max=-6.0, extend=True)
    study.out.mkdir()
    overrides = {**study.spec.range_overrides, **study.range_parameters()}
    sweep = load_sweep(derive_sweep(study.range_yaml, study.out / "stages" / "lr_range.yaml", overrides, "test"))
    study.sweep(sweep)
    report = study.analyse(sweep, "range")
    stages = []
    extended, extended_report = extend_study_range(study, sweep, report, stages.append)
    assert extended.key != sweep.key and stages and "--extend" in stages[0]
    first = load_sweep(study.out / "stages" / "lr_range_extended_1.yaml")
    assert {(p["lre_min"], p["lre_max"]) for p in first.points} == {(-7.0, -4.0)}
    assert {p["steps"] for p in first.points} == {900}  # 300 steps a decade, as the first range
    assert "does not hold the curve" in capsys.readouterr().out
    assert extended_report.pick.per_run["lre_max"].astype(float).max() > -6.0
    assert (study.out / "report" / "range_extended_1" / "summary.json").is_file()


@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("model", ["makemore MLP + SGD", "examples/wavenet.py + AdamW"])
def test_the_default_range_holds_the_minimum_and_the_turn_on_both_small_models(real_names, model):
    """The measurement behind the defaults: each family's default range, on its small model, holds both the loss
    minimum and the turn where the loss climbs (the figures: docs/quickstart.md, "Default ranges")."""
    from examples.wavenet import make as wavenet
    from lrscan.pipeline import range_test
    from lrscan.pipeline.train.mlp_task import make as mlp

    make = mlp if model.startswith("makemore") else wavenet
    result = range_test(make, seeds=[1, 2], steps=600, task_args={"data": str(real_names)}, wandb_mode="disabled")
    family = "SGD-like" if make is mlp else "Adam-like"
    assert family in result.range.why and result.range_check.holds, result.range_check.message
    assert result.suggest_range() is None and "does not hold" not in str(result)
