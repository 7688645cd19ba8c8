"""analysis.binning: the range runs' measured rows, binned by lre one run at a time."""

from __future__ import annotations

import numpy as np

from lrscan.analysis.binning import bin_cells, bin_edges, measured_rows, skip_window
from tests.support.frames import range_loaded


def test_a_frame_in_any_row_order_bins_the_same() -> None:
    loaded = range_loaded(seeds=(1, 2, 3))
    shuffled = loaded.steps.sample(frac=1.0, random_state=0)  # runs interleaved, steps out of order
    rows, mixed = measured_rows(loaded.steps, loaded.runs, "loss"), measured_rows(shuffled, loaded.runs, "loss")
    assert isinstance(rows.rows[0], slice) and not isinstance(mixed.rows[0], slice)  # load_runs' order: no copy
    assert list(rows.run_ids) == list(mixed.run_ids) == ["run000", "run001", "run002"]
    assert rows.lre_span == mixed.lre_span
    edges = bin_edges(rows.lre_span, 0.1, None)
    kept, other = (bin_cells(frame, r, "loss", edges, 0.1, 0.05) for frame, r in ((loaded.steps, rows),
                                                                                   (shuffled, mixed)))
    for name in ("all_count", "window_count", "n_steps", "last_step", "last_bin"):
        np.testing.assert_array_equal(getattr(kept, name), getattr(other, name), err_msg=name)
    np.testing.assert_allclose(kept.all_mean, other.all_mean, rtol=1e-12)  # sums in another order
    np.testing.assert_allclose(kept.window_mean, other.window_mean, rtol=1e-12)
    assert kept.n_steps.tolist() == [1000, 1000, 1000] and kept.last_step.tolist() == [999, 999, 999]


def test_a_run_counts_up_to_its_first_infinite_loss() -> None:
    loaded = range_loaded(seeds=(1, 2))
    steps = loaded.steps.copy()
    steps.loc[(steps["run_id"] == "run001") & (steps["step"] == 600), "loss"] = np.inf
    rows = measured_rows(steps, loaded.runs, "loss")
    assert rows.keep[0] is None and rows.keep[1].sum() == 600  # run001: steps 0..599
    cells = bin_cells(steps, rows, "loss", bin_edges(rows.lre_span, None, 50), 0.1, 0.05)
    assert cells.last_step.tolist() == [999, 599]


def test_skip_window_is_by_position_in_step_order() -> None:
    inside, last = skip_window(np.array([3, 1, 2, 0, 4]), 0.2, 0.2)  # skip one step at each end
    assert inside.tolist() == [True, True, True, False, False] and last == 4
    inside, last = skip_window(np.arange(10), 0.1, 0.0)
    assert inside.tolist() == [False] + 9 * [True] and last == 9
