"""The search's runs: paused at a rung and continued, parted at a decay step, equal to runs that never stopped."""

from __future__ import annotations

import os

import numpy as np
import pytest

from lrscan.pipeline.errors import LrscanError
from lrscan.pipeline.study.search_runs import Search, arg_text, node_name

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def test_args_and_names():
    assert arg_text([100, 200]) == "[100, 200]" and arg_text({"a": 1}) == "{'a': 1}" and arg_text(3) == "3"
    assert node_name((0.1, ((100, 0.1),))) == "lr0.1-x0.1@100"


def test_a_run_paused_continued_and_parted_equals_the_run_trained_whole(words_file, tmp_path):
    args = [f"--data={words_file}", "--n_embd=2", "--n_hidden=16", "--samples=0"]
    env = {**os.environ, "WANDB_SILENT": "true"}

    def search(folder):
        return Search(tmp_path / folder, args, horizon=60, seeds=[1, 2], key="search-test0001", workers=2, pack=None,
                      wandb_mode="offline", environ=env)

    trunk, parted = (0.2, ()), (0.2, ((20, 0.1),))
    stepwise = search("stepwise")
    stepwise.train_to([trunk], 20)                  # every run paused at the first rung
    assert [s["step"] for s in (stepwise.state(trunk, 1), stepwise.state(trunk, 2))] == [20, 20]
    stepwise.part({parted: trunk}, at=20)           # the decayed run starts from the trunk's checkpoint at 20
    stepwise.train_to([trunk, parted], 40)
    stepwise.train_to([parted], 60)
    assert stepwise.steps_trained == 2 * (20 + 20 + 20 + 20)  # no step trained twice
    whole = search("whole")
    whole.train_to([parted], 60)                    # the same schedule, never stopped
    a, b = stepwise.losses([parted], 60)[parted], whole.losses([parted], 60)[parted]
    assert np.all(np.isfinite(a)) and a == pytest.approx(b, rel=1e-6)
    assert stepwise.state(parted, 1)["finished"] and not stepwise.state(trunk, 1)["finished"]
    # a rerun of a rung finds its checkpoints: nothing is trained again
    again = search("stepwise")
    again.train_to([parted], 60)
    assert again.steps_trained == 0
    with pytest.raises(LrscanError, match="has no checkpoint at step 30"):
        search("stepwise").part({(0.2, ((30, 0.1),)): trunk}, at=30)
