"""analysis.schedules: an lr trace read as a range test, a step decay, a constant lr, or something else."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

from lrscan.analysis.plain import frame_records
from lrscan.analysis.schedules import CONSTANT, OTHER, RANGE, STEP, ScheduleGuess, classify_lr_trace
from lrscan.analysis.sources import load_runs

FASTAI = Path(__file__).resolve().parents[1] / "fixtures" / "user_runs" / "fastai"

STEPS = np.arange(1000)


def test_a_geometric_rise_is_a_range_test() -> None:
    lr = 10.0 ** np.linspace(-5, 0, 1000)
    guess = classify_lr_trace(STEPS, lr)
    assert guess == ScheduleGuess(RANGE, "lr rises geometrically from 1e-05 to 1 over steps 0-999",
                                  {"lre_min": pytest.approx(-5.0), "lre_max": pytest.approx(0.0)})


def test_a_range_test_logged_every_10_steps_and_a_linear_one_are_range_tests() -> None:
    sparse = classify_lr_trace(STEPS[::10], 10.0 ** np.linspace(-4, 0, 1000)[::10])
    assert sparse.kind == RANGE and "geometrically" in sparse.reason
    linear = classify_lr_trace(STEPS, np.linspace(1e-4, 1.0, 1000))  # torch-lr-finder's step_mode="linear"
    assert linear.kind == RANGE and "(not geometrically)" in linear.reason


def test_piecewise_constant_is_a_step_decay_with_its_boundaries_and_lrs() -> None:
    lr = np.where(STEPS < 600, 0.1, np.where(STEPS < 800, 0.01, 0.001))
    assert classify_lr_trace(STEPS, lr) == ScheduleGuess(
        STEP, "lr piecewise constant: 0.1, then 0.01 from step 600, 0.001 from step 800",
        {"lr": 0.1, "decay_steps": [600, 800], "decay_lrs": [0.01, 0.001]})
    # logged every 10 steps from step 5: the change is seen at the first logged step at the new lr
    sparse = classify_lr_trace(STEPS[5::10], lr[5::10])
    assert sparse.kind == STEP and sparse.config["decay_steps"] == [605, 805]


def test_a_constant_lr_and_steps_in_any_order() -> None:
    assert classify_lr_trace(STEPS, np.full(1000, 0.05)) == ScheduleGuess(CONSTANT, "lr constant at 0.05", {"lr": 0.05})
    shuffled = np.random.default_rng(0).permutation(1000)
    assert classify_lr_trace(shuffled, (10.0 ** np.linspace(-3, 0, 1000))[shuffled]).kind == RANGE


@pytest.mark.parametrize("name, lr", [
    ("warm-up then cosine", np.where(STEPS < 100, STEPS / 100 * 0.1, 0.05 * (1 + np.cos(np.pi * (STEPS - 100) / 900)))),
    ("one-cycle", np.interp(STEPS, [0, 300, 1000], [0.004, 0.1, 1e-5])),
    ("exponential decay", 0.1 * 0.995**STEPS),
])
def test_anything_else_is_other_with_a_reason(name: str, lr: np.ndarray) -> None:
    guess = classify_lr_trace(STEPS, lr)
    assert guess.kind == OTHER and guess.config == {}, name
    assert "neither a range test nor piecewise constant" in guess.reason


def test_no_lr_logged() -> None:
    unknown = ScheduleGuess(OTHER, "no lr logged: its schedule is unknown")
    assert classify_lr_trace(STEPS, np.full(1000, np.nan)) == unknown


def rounded(lr: np.ndarray, dtype: torch.dtype) -> np.ndarray:
    """The lrs as a bf16 / fp16 optimizer state holds them."""
    return torch.tensor(lr).to(dtype).double().numpy()


def test_a_warm_up_then_a_constant_lr_or_a_step_decay_is_summarised_after_the_warm_up() -> None:
    constant = classify_lr_trace(STEPS, np.minimum(STEPS / 500, 1.0) * 0.1)
    assert constant == ScheduleGuess(
        CONSTANT, "lr warms up from 0 to 0.1 over steps 0-500, then constant at 0.1", {"lr": 0.1})
    decay = np.where(STEPS < 100, STEPS / 100 * 0.1, np.where(STEPS < 600, 0.1, 0.01))
    assert classify_lr_trace(STEPS, decay) == ScheduleGuess(
        STEP, "lr warms up from 0 to 0.1 over steps 0-100, then piecewise constant: 0.1, then 0.01 from step 600",
        {"lr": 0.1, "decay_steps": [600], "decay_lrs": [0.01]})
    # the HF Trainer logs every 10 steps: its warm-up is 5 logged points
    sparse = classify_lr_trace(STEPS[10::10], decay[10::10])
    assert sparse.kind == STEP and sparse.config == {"lr": 0.1, "decay_steps": [600], "decay_lrs": [0.01]}


@pytest.mark.parametrize("name, step, lr, why", [
    ("warm-up from 0 cut off", STEPS[:300], STEPS[:300] / 500 * 0.1, "a warm-up cut off before its peak"),
    ("warm-up from 0 logged every 10 steps, cut off", STEPS[10:300:10], STEPS[10:300:10] / 500 * 0.1,
     "a warm-up or a one-cycle cut off"),
    ("one-cycle (cos) cut off at its peak", STEPS[:300],
     0.1 - (0.1 - 0.004) * (1 + np.cos(np.pi * STEPS[:300] / 299)) / 2,
     "a warm-up or a one-cycle cut off"),
    ("one-cycle (linear) cut off at its peak", STEPS[:300], np.linspace(0.004, 0.1, 300),
     "a warm-up or a one-cycle cut off"),
])
def test_a_trace_cut_off_inside_a_warm_up_or_a_one_cycle_is_other(name, step, lr, why) -> None:
    guess = classify_lr_trace(step, lr)
    assert guess.kind == OTHER and guess.config == {} and why in guess.reason, (name, guess)
    assert "inf" not in guess.reason


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_the_tolerance_survives_bf16_and_fp16_rounded_lrs(dtype: torch.dtype) -> None:
    # an lr computed a little differently at each step (a LambdaLR factor of ~1), then kept in half precision
    jitter = 1.0 + 2e-3 * np.sin(STEPS)
    assert classify_lr_trace(STEPS, rounded(3e-4 * jitter, dtype)).kind == CONSTANT
    decay = classify_lr_trace(STEPS, rounded(np.where(STEPS < 600, 0.1, 0.01) * jitter, dtype))
    assert decay.kind == STEP and decay.config["decay_steps"] == [600]
    assert decay.config["decay_lrs"] == [pytest.approx(0.01, rel=0.01)]
    # a range test rounded to bf16 holds some lrs for two steps: still a range test, through 4 decades and 20k steps
    for steps in (1000, 20000):
        lr = rounded(10.0 ** np.linspace(-4, 0, steps), dtype)
        guess = classify_lr_trace(np.arange(steps), lr)
        assert guess.kind == RANGE and "geometrically" in guess.reason, (steps, guess)
    warm = classify_lr_trace(STEPS, rounded(np.minimum(STEPS / 500, 1.0) * 0.1 * jitter, dtype))
    assert warm.kind == CONSTANT and warm.config["lr"] == pytest.approx(0.1, rel=0.01)


# -- schedules of runs the real libraries wrote, read from the lr as they logged it --


@pytest.mark.slow
@pytest.mark.parametrize("run_id, kind, config", [
    ("lightning_every_step", RANGE, {"lre_min": pytest.approx(-4.0), "lre_max": pytest.approx(0.0)}),
    # the lr logged every 10 steps (the loss every step): still a range test
    ("lightning_own_loss", RANGE, {"lre_min": pytest.approx(-4 + 4 * 9 / 199), "lre_max": pytest.approx(0.0)}),
    ("hf_range", RANGE, {"lre_min": pytest.approx(-4 + 4 * 9 / 199), "lre_max": pytest.approx(0.0)}),
    # warm-up from 0 over 30 steps, x0.1 from step 121 (the Trainer's steps start at 1), logged every 5 steps
    ("hf_warm_up_step", STEP, {"lr": pytest.approx(0.05), "decay_steps": [125], "decay_lrs": [pytest.approx(0.005)]}),
])
def test_the_schedules_of_lightning_and_hf_trainer_runs(library_runs, run_id, kind, config) -> None:
    loaded = load_runs(library_runs[run_id])
    [info] = frame_records(loaded.runs)
    assert (info["schedule"], info["schedule_from"]) == (kind, "lr trace")
    # the runs table holds list fields as their text (one type per column)
    assert {k: ast.literal_eval(v) if isinstance(v, str) else v for k, v in info.items() if k in config} == config
    if run_id == "hf_warm_up_step":
        assert info["schedule_note"] == ("lr warms up from 0.006667 to 0.05 over steps 5-35, then piecewise constant: "
                                         "0.05, then 0.005 from step 125")


def test_the_schedules_of_fastai_runs() -> None:
    loaded = load_runs(FASTAI)
    info = {r["run_id"]: r for r in frame_records(loaded.runs)}
    assert info["fastai_range"]["schedule"] == RANGE
    assert info["fastai_range"]["schedule_note"] == "lr rises geometrically from 0.0001 to 0.9698 over steps 0-299"
    assert info["fastai_one_cycle"]["schedule"] == OTHER
    assert "rises to 0.05 then falls" in info["fastai_one_cycle"]["schedule_note"]
    assert any(n.startswith("run fastai_one_cycle: lr rises to 0.05") and "left out of the exponent pick" in n
               for n in loaded.notes)
