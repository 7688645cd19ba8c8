"""The stacked optimizer updates against torch.optim itself: each member's weights and state bit for bit."""

from __future__ import annotations

import pytest
import torch

from lrscan.pipeline.pack.updates import make_update, why_not_members, why_not_update
from lrscan.pipeline.train.task import Task


def _task(seed: int, make_opt, groups: bool) -> Task:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3))
    if groups:  # matrices with weight decay at the base lr, biases without at a tenth of it
        params = [{"params": [model[0].weight, model[2].weight]},
                  {"params": [model[0].bias, model[2].bias], "weight_decay": 0.0, "lr": 1e-4}]
    else:
        params = model.parameters()
    return Task(model, make_opt(params), batches=lambda i: None, loss_fn=lambda m, b: None)


OPTIMIZERS = {
    "sgd": lambda p: torch.optim.SGD(p, lr=1e-3),
    "sgd-momentum-wd": lambda p: torch.optim.SGD(p, lr=1e-3, momentum=0.9, dampening=0.1, weight_decay=0.01),
    "sgd-nesterov-max": lambda p: torch.optim.SGD(p, lr=1e-3, momentum=0.9, nesterov=True, maximize=True),
    "sgd-foreach": lambda p: torch.optim.SGD(p, lr=1e-3, momentum=0.5, foreach=True),
    "adam": lambda p: torch.optim.Adam(p, lr=1e-3),
    "adam-wd-amsgrad": lambda p: torch.optim.Adam(p, lr=1e-3, weight_decay=0.01, amsgrad=True),
    "adamw": lambda p: torch.optim.AdamW(p, lr=1e-3, weight_decay=0.1),
    "adamw-amsgrad-max": lambda p: torch.optim.AdamW(p, lr=1e-3, amsgrad=True, maximize=True, betas=(0.8, 0.95)),
    "adamw-foreach": lambda p: torch.optim.AdamW(p, lr=1e-3, foreach=True),
}


@pytest.mark.parametrize("alike", [False, True])
@pytest.mark.parametrize("groups", [False, True])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_a_stacked_update_gives_each_member_what_its_own_optimizer_gives_it(name, groups, alike):
    """alike: the members at the same lrs and step counts (range_test's seeds: one op on the whole stack);
    else each at its own lrs, and member 2 joined late (a resume: its step counts and moments differ)."""
    make_opt = OPTIMIZERS[name]
    K, steps = 3, 60
    packed = [_task(s, make_opt, groups) for s in range(K)]
    alone = [_task(s, make_opt, groups) for s in range(K)]
    g = torch.Generator().manual_seed(0)
    for _ in range(0 if alike else 7):
        for p in alone[2].model.parameters():
            p.grad = torch.randn(p.shape, generator=g)
        alone[2].optimizer.step()
    packed[2].model.load_state_dict(alone[2].model.state_dict())
    packed[2].optimizer.load_state_dict(alone[2].optimizer.state_dict())
    assert why_not_update(packed[0]) == "" and why_not_members(packed) == ""

    names = [n for n, _ in packed[0].model.named_parameters()]
    params = {n: torch.stack([dict(t.model.named_parameters())[n].detach() for t in packed]).clone() for n in names}
    update = make_update(packed, set(names), params)
    built = [float(gr["lr"]) for gr in alone[0].optimizer.param_groups]
    ratios = [lr / built[0] for lr in built]
    for step in range(steps):
        lrs = [10 ** (-3 + 2.5 * step / steps + (0 if alike else k / 4)) for k in range(K)]  # a range test each
        grads = {n: torch.randn((K, *p.shape[1:]), generator=g) for n, p in params.items()}
        for k, t in enumerate(alone):
            for group, ratio in zip(t.optimizer.param_groups, ratios):
                group["lr"] = lrs[k] * ratio  # as the single run sets them
            for n, p in t.model.named_parameters():
                p.grad = grads[n][k].clone()
            t.optimizer.step()
        update.step(params, grads, lrs)
    for k, t in enumerate(alone):
        for n, p in t.model.named_parameters():
            assert torch.equal(params[n][k], p.detach()), f"member {k} {n}"
        update.write_back(k, packed[k])
        mine, theirs = packed[k].optimizer.state_dict()["state"], t.optimizer.state_dict()["state"]
        assert mine.keys() == theirs.keys()
        for i in theirs:
            assert mine[i].keys() == theirs[i].keys()
            for key in theirs[i]:
                assert torch.equal(mine[i][key], theirs[i][key]), f"member {k} param {i} {key}"


@pytest.mark.parametrize("make_opt, why", [
    (lambda p: torch.optim.RMSprop(p), "its optimizer is RMSprop; a pack steps torch.optim.SGD, Adam and AdamW"),
    (lambda p: torch.optim.Adam(p, fused=True), "fused=True"),
    (lambda p: torch.optim.SGD(p, lr=0.1, differentiable=True), "differentiable=True"),
    (lambda p: torch.optim.Adam(p, capturable=True), "capturable=True"),
])
def test_an_optimizer_a_pack_cannot_step_exactly_is_named(make_opt, why):
    assert why in why_not_update(_task(0, make_opt, False))


def test_an_optimizer_with_a_scheduler_of_its_own_is_not_packed():
    task = _task(0, OPTIMIZERS["adamw"], False)
    torch.optim.lr_scheduler.StepLR(task.optimizer, 10)
    assert "an lr scheduler built on it" in why_not_update(task)


def test_members_whose_optimizers_differ_beyond_the_lr_do_not_share_an_update():
    a, b = _task(0, OPTIMIZERS["adamw"], True), _task(1, OPTIMIZERS["adamw"], True)
    assert why_not_members([a, b]) == ""
    b.optimizer.param_groups[1]["weight_decay"] = 0.5
    assert "optimizers differ" in why_not_members([a, b])
