"""pipeline.prove and RangeTestResult.prove on a model of the test's own: real offline runs in one group, packed."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lrscan.analysis.judge import TABLE_COLUMNS
from lrscan.analysis.sources import load_runs
from lrscan.pipeline import Proof, Task, prove, range_test
from lrscan.pipeline.errors import LrscanError
from lrscan.pipeline.study.horizon import StepDecay
from lrscan.pipeline.train.data import load_splits
from tests.pipeline.study.test_range_test import tiny_make

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def packable_make(seed: int, *, data: str) -> Task:
    """A small AdamW model a pack can step (no dropout, batches from its own generator)."""
    splits = load_splits(data, 3, 42)
    V = len(splits.vocab)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Embedding(V, 4), nn.Flatten(), nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, V))
    Xtr, Ytr = splits.train

    def batch(i):
        g = torch.Generator().manual_seed(seed * 1000 + i)
        ix = torch.randint(0, len(Xtr), (16,), generator=g)
        return Xtr[ix], Ytr[ix]

    def evaluate(model):
        with torch.no_grad():
            return {"dev_loss": F.cross_entropy(model(splits.dev[0]), splits.dev[1]).item()}

    return Task(model=model, optimizer=torch.optim.AdamW(model.parameters(), lr=1e-3), batches=batch,
                loss_fn=lambda m, b: F.cross_entropy(m(b[0]), b[1]), evaluate=evaluate)


def test_prove_trains_each_lr_at_the_horizon_with_the_schedule_as_real_runs(words_file, tmp_path):
    make = functools.partial(tiny_make, data=str(words_file))
    proof = prove(make, np.array([1e-3, 1e-2, 3e-1]), horizon=30, schedule=[(20, 0.1)], seeds=[1, 2])
    assert isinstance(proof, Proof)
    assert len(proof.runs) == 6 and proof.judged_by == "dev_loss" and proof.horizon == proof.steps == 30
    table = proof.table
    assert list(table.columns) == TABLE_COLUMNS  # analysis.judge's table, as python -m analysis writes it
    assert table["seeds"].tolist() == [[1, 2]] * 3 and sorted(table["lr"]) == [1e-3, 1e-2, 3e-1]
    assert proof.best_lr == proof.verdict.chosen_lr and table["mean"].is_monotonic_increasing
    assert proof.verdict.headline() in str(proof) and proof.to_dict()["rule"] == proof.verdict.rule
    # every candidate x seed is a real W&B run of one group, with the schedule asked, named once by its lr
    loaded = load_runs(str(tmp_path / "wandb"), group=proof.group)
    runs = loaded.runs.set_index("run_id")
    assert sorted(runs.index) == sorted(proof.runs["run_id"])
    assert set(runs["schedule"]) == {"step"} and set(runs["steps"]) == {30}
    for _, r in proof.runs.iterrows():
        assert runs.loc[r["run_id"], "dev_loss"] == pytest.approx(r["loss"], rel=1e-6)
        assert runs.loc[r["run_id"], "run_name"] == f"prove-lr{r['lr']:.4g}"
        lrs = loaded.steps.loc[loaded.steps["run_id"] == r["run_id"]].set_index("step")["lr"]
        assert lrs.loc[19] == pytest.approx(r["lr"]) and lrs.loc[20] == pytest.approx(r["lr"] * 0.1)
    summary = proof.to_dict()
    assert summary["horizon"] == 30 and summary["schedule"]["text"] == "lr x 0.1 at step 20"
    assert "lr x 0.1 at step 20" in str(proof)
    # the same seed is the same init and batches: lr 1e-3 on seed 1 trained again gives the same loss
    again = prove(make, [np.float32(1e-3).item()], steps=30, schedule=StepDecay(at=(20,), factors=(0.1,)), seeds=[1])
    first = proof.runs.loc[(proof.runs["lr"] == 1e-3) & (proof.runs["seed"] == 1), "loss"].item()
    assert again.runs["loss"].item() == pytest.approx(first, rel=1e-6)
    assert proof.plot().get_xscale() == "log"


def test_a_pack_trains_the_k_x_s_runs_as_one_after_another_does(words_file, capsys):
    make = functools.partial(packable_make, data=str(words_file))
    args = {"horizon": 25, "schedule": {"at": [0.6], "factors": [0.1]}, "seeds": [1, 2], "wandb_mode": "disabled"}
    packed = prove(make, [3e-3, 3e-2], **args)
    alone = prove(make, [3e-3, 3e-2], pack=1, **args)
    assert "not packed" not in capsys.readouterr().out
    assert packed.runs["loss"].to_numpy() == pytest.approx(alone.runs["loss"].to_numpy(), rel=1e-5)
    assert packed.schedule == StepDecay(at=(15,), factors=(0.1,))
    # a task that cannot pack trains one after another and says why once
    prove(functools.partial(tiny_make, data=str(words_file)), [1e-2, 1e-1], horizon=5, seeds=[1],
          wandb_mode="disabled")
    assert capsys.readouterr().out.count("prove: the 2 runs train one after another, not packed") == 1


def test_range_test_result_prove_drops_the_range_tests_settings_and_trains_the_users_lrs_exactly(words_file):
    make = functools.partial(tiny_make, data=str(words_file))
    result = range_test(make, seeds=[1, 2], lre_min=-4.0, lre_max=0.0, steps=80, climb_burn_in_steps=40,
                        pick_on="dev_loss", pick_args={"n_boot": 50}, wandb_mode="disabled")
    asked = result.best_lr * 1.05  # within a tenth of a decade of the pick: trained as asked, not replaced
    proof = result.prove(horizon=12, seeds=[1], lrs=np.array([asked]))
    names = ",".join(proof.table["suggested_by"])
    assert "fastai_minimum" in names and "user" in names
    assert asked in proof.table["lr"].tolist() and result.best_lr not in proof.table["lr"].tolist()
    # the range test evaluated every step (pick_on dev_loss); the proof's runs evaluate at their end only
    assert len(proof.runs) == len(proof.table) and np.isfinite(proof.table["mean"].iloc[0])
    assert proof.verdict.opening() in str(proof) and "12 steps (constant)" in str(proof)


def test_a_task_without_evaluate_is_judged_on_its_training_tail(words_file):
    def make(seed: int):
        task = tiny_make(seed, data=str(words_file))
        task.evaluate = None
        return task

    proof = prove(make, [1e-2, 1e-1], horizon=10, seeds=[1], wandb_mode="disabled")
    assert set(proof.runs["criterion"]) == {"train_loss_last_10pct"} and "last 10%" in proof.judged_by


@pytest.mark.parametrize("call, message", [
    (lambda make: prove(make, [0.01, -1.0], horizon=5), "prove: lrs=.*-1.0 is not a learning rate"),
    (lambda make: prove(make, [0.01], horizon=5, lr=0.1), "'lr'"),
    (lambda make: prove(make, [0.01], horizon=5, seeds=[1, 1]), r"prove: seeds=\[1, 1\]: seed\(s\) \[1\] repeated"),
    (lambda make: prove(make, [0.01], horizon=5, seeds="12"), "prove: seeds='12'"),
    (lambda make: prove(make, [0.01]), "prove: give horizon="),
    (lambda make: prove(make, [0.01], steps=5, horizon=6), "prove: steps=5 and horizon=6"),
    (lambda make: prove(make, [0.01], horizon=0), "prove: horizon=0"),
    (lambda make: prove(make, [0.01], horizon=5, schedule=[(9, 0.1)]), "decay step 9 is outside the run"),
    (lambda make: prove(make, [0.01, 0.01], horizon=5), "0.01 repeated"),
    (lambda make: prove(make, [0.01], horizon=5, pack=0), "prove: pack=0"),
])
def test_bad_input_is_one_line_naming_prove(words_file, call, message):
    with pytest.raises(LrscanError, match=message):
        call(functools.partial(tiny_make, data=str(words_file)))
    with pytest.raises(LrscanError, match="a Task object is one model"):
        prove(tiny_make(1, data=str(words_file)), [0.01], horizon=5)
