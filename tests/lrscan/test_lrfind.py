"""lrscan.find: one call from a factory to a proven lr; its result prints, plots, applies.

docs/quickstart.md's first block (lrscan.find on a model it makes) runs as written in tests/test_docs.py, and
from an installed wheel beside a user's pipeline.py and analysis.py in tests/test_environment.py.
"""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import lrscan
from lrscan.pipeline.errors import LrscanError

matplotlib.use("Agg")
pytestmark = pytest.mark.slow
FAST = {"steps": 60, "wandb_mode": "disabled", "climb_burn_in_steps": 20}


def make(seed: int, adam: bool = False) -> lrscan.Task:
    """A tiny regression net on data made from the seed, two param groups (the head at half the body's lr)."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(256, 4, generator=g)                                      # (256, 4)
    y = X @ torch.randn(4, 1, generator=g) + 0.1 * torch.randn(256, 1, generator=g)  # (256, 1)
    body, head = torch.nn.Linear(4, 8), torch.nn.Linear(8, 1)
    model = torch.nn.Sequential(body, torch.nn.Tanh(), head)
    groups = [{"params": body.parameters(), "lr": 0.1}, {"params": head.parameters(), "lr": 0.05}]
    optimizer = torch.optim.AdamW(groups) if adam else torch.optim.SGD(groups)

    def batch(i):
        ix = torch.randint(0, 256, (16,), generator=torch.Generator().manual_seed(seed * 1000 + i))
        return X[ix], y[ix]

    def evaluate(model):
        return {"dev_loss": F.mse_loss(model(X[200:]), y[200:]).item()}

    return lrscan.Task(model, optimizer, batches=batch, loss_fn=lambda m, b: F.mse_loss(m(b[0]), b[1]),
                       evaluate=evaluate)


def test_find_runs_the_range_test_and_the_proof_and_applies_the_proven_lr():
    found = lrscan.find(make, horizon=40, seeds=np.arange(1, 3), **FAST)
    assert found.proven and found.not_proven == ""
    assert found.range_test.seeds == [1, 2] and found.proof.decision.n_seeds == 2
    assert found.best_lr == found.proof.best_lr and found.best_lr in set(found.table["lr"])
    assert found.proof.steps == 40  # the horizon is what each candidate trains
    text = str(found)
    assert text.startswith(f"lrscan.find: lr {found.best_lr:.4g} (proven")
    assert "range test: 2 run(s)" in text and found.proof.verdict.opening() in text and found.proof.best in text
    fig = found.plot()
    assert len(fig.axes) >= 2 and "proven" in fig.axes[0].get_title()
    # apply: the proven lr on the first group, the others keeping their ratio (0.05 / 0.1)
    optimizer = make(0).optimizer
    assert found.apply(optimizer) == found.best_lr
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([found.best_lr, found.best_lr / 2])


def test_proof_apply_keeps_the_groups_ratios_and_a_schedulers_initial_lr():
    proof = lrscan.prove(make, np.array([1e-2, 3e-2]), steps=np.int64(20), seeds=[1], wandb_mode="disabled")
    optimizer = make(0).optimizer
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.0)  # a warm-up from 0
    assert proof.apply(optimizer) == proof.best_lr
    assert [g["initial_lr"] for g in optimizer.param_groups] == pytest.approx([proof.best_lr, proof.best_lr / 2])
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([proof.best_lr, proof.best_lr / 2])
    del scheduler
    with pytest.raises(LrscanError, match="apply_lr: dict is none of a torch optimizer"):
        proof.apply({})


def test_a_task_is_one_seed_and_the_result_says_what_is_not_proven():
    task = make(1)
    before = [p.detach().clone() for p in task.model.parameters()]
    found = lrscan.find(task, horizon=40, **FAST)
    assert not found.proven and found.proof is None and "not trained against each other" in found.not_proven
    assert found.range_test.seeds == [1] or len(found.range_test.seeds) == 1
    assert found.best_lr == found.range_test.best_lr
    assert "not proven: a Task is one model" in str(found) and "NOT proven" in str(found).splitlines()[0]
    assert all(torch.equal(a, b) for a, b in zip(before, task.model.parameters()))  # the model as it was
    assert len(found.plot().axes) == 1
    with pytest.raises(LrscanError, match=r"^find: seeds=\[1, 2, 5\]: a Task is one model"):
        lrscan.find(task, horizon=40, seeds=[1, 2, 5], **FAST)


def test_the_default_range_follows_the_optimizer():
    sgd = lrscan.range_test(make, seeds=[1], **FAST)
    adam = lrscan.range_test(lambda seed: make(seed, adam=True), seeds=[1], **FAST)
    assert (sgd.range.lre_min, sgd.range.lre_max) == (-3.0, 0.0) and "SGD-like" in sgd.range.why
    assert (adam.range.lre_min, adam.range.lre_max) == (-5.0, -1.0) and "AdamW (Adam-like)" in adam.range.why
    assert adam.steps["lre"].min() == pytest.approx(-5.0) and "range: lr 1e-05..0.1" in str(adam)
    given = lrscan.range_test(make, seeds=[1], lre_min=np.float32(-2.0), **FAST)
    assert (given.range.lre_min, given.range.lre_max) == (-2.0, 0.0)


def test_extend_runs_the_suggested_range_before_proving():
    # 1e-6..1e-5 on SGD: the loss barely moves and never turns up
    found = lrscan.find(make, horizon=20, seeds=[1], lre_min=-6, lre_max=-5, extend=True, **FAST)
    first = found.ranges[0]
    assert first.suggest_range() is not None and "never turns up" in first.range_check.message
    assert len(found.ranges) >= 2 and found.ranges[1].range.lre_max > first.range.lre_max
    assert found.range_test is found.ranges[-1] and "range test 2 of" in str(found)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"horizon": 0}, "find: horizon=0: "),
    ({"horizon": 10, "seeds": [1, 1.5]}, "find: seeds="),
    ({"horizon": 10, "seeds": np.array([1, 1])}, "find: seeds="),
    ({"horizon": 10, "lrs": [0.1, -1]}, "find: "),
    ({"horizon": 10, "lre_min": -1, "start_lr": 0.1}, "find: lre_min=-1 and start_lr=0.1 name the same end"),
    ({"horizon": 10, "steps": 2.5}, "find: steps=2.5: expected a whole number"),
    ({"horizon": 10, "no_such_field": 1}, "find: unknown keyword(s) 'no_such_field'"),
    ({"horizon": 10, "schedule": "cosine"}, "find: "),
])
def test_bad_input_names_find(kwargs, message):
    with pytest.raises(LrscanError) as e:
        lrscan.find(make, **{**FAST, **kwargs})
    assert str(e.value).startswith(message) and "\n" not in str(e.value), str(e.value)
