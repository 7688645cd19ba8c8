import math

import numpy as np
import pytest
import torch

from lrscan.pipeline.train.schedule import ClimbStop, range_lres, schedule_lrs, step_lrs


def test_range_hits_both_ends_exactly_and_matches_the_seed():
    lrs, lres = schedule_lrs("range", 1000, lre_min=-3.0, lre_max=0.0, lr=0.1, decay_steps=(), decay_lrs=())
    assert lres[0] == -3.0 and lres[-1] == 0.0 and len(lres) == 1000
    assert lrs[0] == 10 ** -3.0 and lrs[-1] == 1.0
    seed = 10 ** torch.linspace(-3, 0, 1000, dtype=torch.float64)
    np.testing.assert_allclose(lrs, seed.numpy(), rtol=1e-12)
    assert np.all(np.diff(lres) > 0)


def test_range_single_step_and_equal_ends():
    assert range_lres(-2.0, -2.0, 5).tolist() == [-2.0] * 5
    assert range_lres(-3.0, 0.0, 1).tolist() == [-3.0]


def test_step_decay_one_boundary_is_the_seed_rule():
    lrs = step_lrs(0.1, (100000,), (0.01,), 200000)
    expected = np.array([0.1 if i < 100000 else 0.01 for i in range(200000)])
    np.testing.assert_array_equal(lrs, expected)
    assert lrs[99999] == 0.1 and lrs[100000] == 0.01


def test_step_decay_several_boundaries_and_lre():
    lrs, lres = schedule_lrs("step", 10, lre_min=0, lre_max=0, lr=0.1, decay_steps=(3, 7), decay_lrs=(0.01, 0.001))
    assert lrs.tolist() == [0.1] * 3 + [0.01] * 4 + [0.001] * 3
    np.testing.assert_allclose(lres, np.log10(lrs))


def test_constant_and_boundary_past_the_end():
    lrs, _ = schedule_lrs("constant", 4, lre_min=0, lre_max=0, lr=0.05, decay_steps=(2,), decay_lrs=(0.01,))
    assert lrs.tolist() == [0.05] * 4
    assert step_lrs(0.1, (10,), (0.01,), 5).tolist() == [0.1] * 5


def _run(stop: ClimbStop, losses):
    for step, loss in enumerate(losses):
        _, climbed = stop.update(step, loss)
        if climbed:
            return step
    return None


def test_climb_stop_fires_where_the_smoothed_loss_passes_k_times_the_best():
    # a range-test-like curve: falls to 1.0 by step 200, then climbs fast
    losses = [3.0 - 2.0 * min(s, 200) / 200 + (0.05 * (s - 300) ** 1.5 if s > 300 else 0.0) for s in range(1000)]
    stop = ClimbStop(beta=0.98, factor=4.0, burn_in_steps=100)
    at = _run(stop, losses)
    # recompute the rule by hand: bias-corrected EMA, first step where smooth > 4 * running best
    avg, best, expected = 0.0, math.inf, None
    for s, loss in enumerate(losses):
        avg = 0.98 * avg + 0.02 * loss
        sm = avg / (1 - 0.98 ** (s + 1))
        if s >= 100 and sm > 4 * best:
            expected = s
            break
        best = min(best, sm)
    assert at == expected and at is not None and at > 300


def test_bias_correction_starts_at_the_raw_loss():
    smooth, _ = ClimbStop().update(0, 2.5)
    assert smooth == pytest.approx(2.5)  # Lightning's off-by-one would give ~1.26


def test_early_spike_inside_burn_in_does_not_stop():
    losses = [1.0] * 5 + [100.0] + [1.0] * 200
    assert _run(ClimbStop(burn_in_steps=50), losses) is None


def test_negative_losses_do_not_stop_spuriously():
    # a flat negative curve with noise: a ratio rule would fire at once (-2 > 4 * -2.1)
    rng = np.random.default_rng(0)
    losses = (-2.0 + 0.05 * rng.standard_normal(500)).tolist()
    assert _run(ClimbStop(burn_in_steps=10), losses) is None


def test_climb_stop_state_round_trip():
    a, b = ClimbStop(), ClimbStop()
    for s in range(10):
        a.update(s, 1.0 + s)
    b.load(a.state())
    assert a.update(10, 3.0) == b.update(10, 3.0)


def test_a_linear_range_is_evenly_spaced_in_lr_and_its_lre_is_log10_of_it():
    lrs, lres = schedule_lrs("range", 5, lre_min=-3.0, lre_max=0.0, lr=0.1, decay_steps=(), decay_lrs=(),
                             step_mode="linear")
    np.testing.assert_allclose(lrs, [0.001, 0.25075, 0.5005, 0.75025, 1.0])
    np.testing.assert_array_equal(lres, np.log10(lrs))
    exp_lrs, exp_lres = schedule_lrs("range", 5, lre_min=-3.0, lre_max=0.0, lr=0.1, decay_steps=(), decay_lrs=())
    np.testing.assert_array_equal(exp_lres, [-3.0, -2.25, -1.5, -0.75, 0.0])  # the default: even in lre
