"""apply_lr: a found lr (a number, a range test's pick, a proof's lr) set on an optimizer keeping its groups' ratios;
anything else refused in one line."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from lrscan.pipeline.errors import LrscanError
from lrscan.pipeline.train.apply import apply_lr


def test_an_optimizer_gets_the_lr_on_every_group_with_their_ratios_and_a_schedulers_initial_lr() -> None:
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 1)
    optimizer = torch.optim.AdamW([{"params": a.parameters()}, {"params": b.parameters(), "lr": 1e-4}], lr=1e-3)
    torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: step / 10)  # warm-up: the groups' lr are 0 now
    assert apply_lr(types.SimpleNamespace(best_lr=np.float64(0.02)), optimizer) == 0.02
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.02, 0.002])
    assert [g["initial_lr"] for g in optimizer.param_groups] == pytest.approx([0.02, 0.002])


@pytest.mark.parametrize("lr, target, fragment", [
    (-1.0, torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=0.1), "-1.0 is not a learning rate > 0"),
    (True, torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=0.1), "True is not a learning rate"),
    (types.SimpleNamespace(), torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=0.1), "SimpleNamespace is not"),
    (0.1, torch.nn.Linear(1, 1), "Linear is none of a torch optimizer, a LightningModule"),
])
def test_what_is_not_an_lr_or_a_place_for_one_is_refused(lr, target, fragment) -> None:
    with pytest.raises(LrscanError) as err:
        apply_lr(lr, target)
    assert fragment in str(err.value)
