"""The adapters' shared parts: a DataLoader as batch(i) of (seed, i) alone, an optimizer copied over the same
parameters without a scheduler's step wrapper, attributes put back, clipping before each step."""

from __future__ import annotations

import types

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lrscan.pipeline.train.adapters import LoaderBatches, clip_gradients, kept_attributes, own_optimizer


@pytest.mark.parametrize("generator", [None, torch.Generator().manual_seed(3)])
def test_a_loaders_batches_depend_on_seed_and_index_alone_in_any_order_of_asking(generator) -> None:
    loader = DataLoader(TensorDataset(torch.arange(20.0)), batch_size=5, shuffle=True, generator=generator)
    forward = LoaderBatches(loader, seed=1)
    asked = [forward(i)[0].tolist() for i in range(8)]
    backward = LoaderBatches(loader, seed=1)
    assert [backward(i)[0].tolist() for i in reversed(range(8))][::-1] == asked
    assert sorted(x for batch in asked[:4] for x in batch) == [float(i) for i in range(20)]  # an epoch: each once
    assert asked[:4] != asked[4:]                                                             # a new order per epoch
    assert [LoaderBatches(loader, seed=2)(i)[0].tolist() for i in range(4)] != asked[:4]
    torch.manual_seed(0)
    state = torch.get_rng_state()
    forward(9)
    assert torch.equal(torch.get_rng_state(), state)  # the global random state is not moved


def test_an_optimizer_copy_shares_the_parameters_and_never_steps_the_original() -> None:
    model = torch.nn.Linear(3, 1)
    theirs = torch.optim.AdamW(model.parameters(), lr=0.1)
    torch.optim.lr_scheduler.StepLR(theirs, step_size=5)  # wraps theirs.step with a reference to theirs
    mine = own_optimizer(theirs, model)
    assert [p for g in mine.param_groups for p in g["params"]] == list(model.parameters())
    model(torch.ones(2, 3)).sum().backward()
    mine.step()
    assert mine.state and not theirs.state and "step" not in vars(mine)


def test_attributes_are_put_back_and_clipping_runs_before_each_step() -> None:
    obj = types.SimpleNamespace(a=[1], b=2)
    a = obj.a
    with kept_attributes(obj):
        obj.a, obj.c = [3], 4
    assert vars(obj) == {"a": [1], "b": 2} and obj.a is a
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    clip_gradients(optimizer, 0.01, "norm")
    (100 * model(torch.ones(2, 3)).sum()).backward()
    optimizer.step()
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    assert norm.item() == pytest.approx(0.01, rel=1e-4)
