"""pipeline.prove and RangeTestResult.prove on a model of the test's own: real offline runs in one group."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from lrscan.analysis.judge import TABLE_COLUMNS, TRAIN_TAIL
from lrscan.analysis.sources import load_runs
from lrscan.pipeline import Proof, prove, range_test
from lrscan.pipeline.errors import LrscanError
from tests.pipeline.study.test_range_test import tiny_make

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def test_prove_trains_each_lr_on_each_seed_as_real_runs_and_the_table_decides(words_file, tmp_path):
    make = functools.partial(tiny_make, data=str(words_file))
    proof = prove(make, [1e-3, 1e-2, 3e-1], steps=30, seeds=[1, 2])
    assert isinstance(proof, Proof)
    assert len(proof.runs) == 6 and proof.judged_by == "dev_loss"
    table = proof.table
    assert list(table.columns) == TABLE_COLUMNS  # analysis.judge's table, as python -m analysis writes it
    assert table["seeds"].tolist() == [[1, 2]] * 3
    assert proof.best_lr == proof.verdict.chosen_lr and table["mean"].is_monotonic_increasing
    assert str(proof).splitlines()[1] == proof.verdict.headline()
    # every candidate x seed is a real W&B run of one group, named and tagged by its candidate, with its dev_loss
    loaded = load_runs(str(tmp_path / "wandb"), group=proof.group)
    runs = loaded.runs.set_index("run_id")
    assert sorted(runs.index) == sorted(proof.runs["run_id"])
    assert set(runs["schedule"]) == {"constant"} and set(runs["steps"]) == {30}
    for _, r in proof.runs.iterrows():
        assert runs.loc[r["run_id"], "dev_loss"] == pytest.approx(r["loss"], rel=1e-6)
        assert runs.loc[r["run_id"], "run_name"] == f"prove-lr={r['lr']:.3g}-lr{r['lr']:.4g}"
    # the same seed is the same init and batches: lr 1e-3 on seed 1 trained again gives the same loss
    again = prove(make, [1e-3], steps=30, seeds=[1])
    first = proof.runs.loc[(proof.runs["lr"] == 1e-3) & (proof.runs["seed"] == 1), "loss"].item()
    assert again.runs["loss"].item() == first
    assert proof.plot().get_xscale() == "log"


def test_range_test_result_prove_uses_its_suggesters_and_a_task_without_evaluate_is_judged_on_training(words_file):
    def make(seed: int):
        task = tiny_make(seed, data=str(words_file))
        task.evaluate = None
        return task

    result = range_test(make, seeds=[1, 2], lre_min=-4.0, lre_max=0.0, steps=80, climb_burn_in_steps=40,
                        pick_args={"n_boot": 50})
    proof = result.prove(steps=10, seeds=[1], lrs=[0.5])
    names = ",".join(proof.table["suggested_by"])
    assert "min_loss" in names and "fastai_minimum" in names and "user" in names
    min_loss = proof.table.loc[proof.table["suggested_by"].str.startswith("min_loss")]
    assert min_loss["lr"].item() == pytest.approx(result.best_lr)
    assert set(proof.runs["criterion"]) == {TRAIN_TAIL}
    assert "last 10%" in proof.judged_by and np.isfinite(proof.table["mean"].iloc[0])
    assert proof.verdict.opening() in str(proof)


def test_a_task_object_cannot_be_rebuilt_per_candidate(words_file):
    task = tiny_make(1, data=str(words_file))
    with pytest.raises(LrscanError, match="a Task object is one model"):
        prove(task, [0.01], steps=5)
    with pytest.raises(LrscanError, match="^prove: .*not a learning rate"):
        prove(functools.partial(tiny_make, data=str(words_file)), [0.01, -1.0], steps=5)
    with pytest.raises(LrscanError, match="'lr'"):
        prove(functools.partial(tiny_make, data=str(words_file)), [0.01], steps=5, lr=0.1)
    with pytest.raises(LrscanError, match=r"^prove: seeds=\[1, 1\]"):
        prove(functools.partial(tiny_make, data=str(words_file)), [0.01], steps=5, seeds=[1, 1])
