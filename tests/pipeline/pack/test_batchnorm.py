"""Batch norm in a pack's vmapped loss, channels last: each member against its model alone, and the kernel's layout."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap
from torch.profiler import ProfilerActivity, profile

from pipeline.pack.batchnorm import channels_last_batch_norm
from pipeline.pack.functional import FunctionalStep, why_not_functional
from pipeline.train.task import Task

K = 3  # members


class Net(nn.Module):
    """BatchNorm1d on (B, C) and (B, C, L), BatchNorm2d on (B, C, H, W), and wavenet's BatchNorm over the last dim."""

    def __init__(self, **bn):
        super().__init__()
        self.inp = nn.Linear(6, 8)
        self.bn_2d = nn.BatchNorm1d(8, **bn)
        self.to_seq = nn.Linear(8, 4 * 5)
        self.bn_3d = nn.BatchNorm1d(4, **bn)
        self.to_img = nn.Linear(20, 2 * 3 * 3)
        self.bn_img = nn.BatchNorm2d(2, **bn)
        self.bn_last = nn.BatchNorm1d(3, **bn)  # on a transposed (B, T, C): wavenet's layout
        self.out = nn.Linear(18, 5)

    def forward(self, x):
        h = torch.tanh(self.bn_2d(self.inp(x)))  # (B, 8)
        h = torch.tanh(self.bn_3d(self.to_seq(h).view(-1, 4, 5)))  # (B, 4, 5)
        h = torch.tanh(self.bn_img(self.to_img(h.flatten(1)).view(-1, 2, 3, 3)))  # (B, 2, 3, 3)
        h = self.bn_last(h.reshape(-1, 6, 3).transpose(1, 2)).transpose(1, 2)  # (B, 6, 3)
        return self.out(h.flatten(1))


def make(seed: int, **bn) -> Task:
    torch.manual_seed(seed)
    model = Net(**bn)
    with torch.no_grad():  # gains and shifts away from 1 and 0, so a wrong affine part shows
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)

    def batch(i):
        g = torch.Generator().manual_seed(seed * 1000 + i)
        return torch.randn(16, 6, generator=g) * 3 + 1, torch.randint(0, 5, (16,), generator=g)

    def loss_fn(model, b):
        return F.cross_entropy(model(b[0]), b[1])

    return Task(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), batches=batch, loss_fn=loss_fn)


def assert_close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bn", [{}, {"affine": False}, {"track_running_stats": False}, {"momentum": 0.3}])
def test_packed_members_step_as_each_does_alone_grads_losses_and_running_stats(bn):
    packed, alone = [make(s, **bn) for s in range(K)], [make(s, **bn) for s in range(K)]
    assert why_not_functional(packed) == ""
    step = FunctionalStep(packed)
    first = FunctionalStep([make(s, **bn) for s in range(K)])
    _, first_grads = first.losses_and_grads(first.stacked_batch([0] * K))
    for i in range(4):
        losses = step.step([i] * K, [0.1] * K)
        for k, t in enumerate(alone):
            t.optimizer.zero_grad()
            loss = t.loss_fn(t.model, t.batch_fn(i))
            loss.backward()
            if i == 0:  # the gradients before either side moved
                for n, p in t.model.named_parameters():
                    assert_close(first_grads[n][k], p.grad)
            t.optimizer.step()
            assert_close(losses[k], loss.detach())
    for k, t in enumerate(alone):
        for n, p in t.model.named_parameters():
            assert_close(step.params[n][k], p.detach())
        for n, b in t.model.named_buffers():  # running mean, var and num_batches_tracked
            assert_close(step.consts[n][k], b)


def test_momentum_none_is_not_packed_and_says_why():
    # the module's cumulative average reads float(num_batches_tracked), which vmap cannot give per member
    why = why_not_functional([make(s, momentum=None) for s in range(K)])
    assert "vmapped" in why


def _stacked(models):
    params = {n: torch.stack([dict(m.named_parameters())[n].detach() for m in models]) for n, _ in
              models[0].named_parameters()}
    buffers = {n: torch.stack([dict(m.named_buffers())[n] for m in models]) for n, _ in models[0].named_buffers()}
    return params, buffers


def test_eval_mode_is_left_to_torch_bit_for_bit():
    models = [make(s).model.eval() for s in range(K)]
    params, buffers = _stacked(models)
    x = torch.randn(K, 16, 6)

    def out(params, buffers, x):
        return functional_call(models[0], (params, buffers), (x,))

    plain = vmap(out)(params, buffers, x)
    with channels_last_batch_norm():
        folded = vmap(out)(params, buffers, x)
    assert torch.equal(plain, folded)


def test_the_kernel_normalizes_every_member_at_once_on_channels_last_rows():
    tasks = [make(s) for s in range(K)]
    step = FunctionalStep(tasks)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        step.losses_and_grads(step.stacked_batch([0] * K))
    shapes = {tuple(e.input_shapes[0]) for e in prof.key_averages(group_by_input_shape=True)
              if e.key in ("aten::native_batch_norm", "aten::native_batch_norm_backward")}
    # (B*rest, K*C): the 3-d, 4-d and transposed inputs as rows, the members side by side in the channels (the
    # profiler also lists each call as one member sees it, (B*rest, C)); no (B, K*C, *rest), the slow layout
    assert {(16, K * 8), (16 * 5, K * 4), (16 * 9, K * 2), (16 * 6, K * 3)} <= shapes
    assert all(len(s) == 2 for s in shapes), shapes


def test_a_double_backward_through_it_is_torchs_own():
    models = [make(s).model for s in range(K)]
    params, buffers = _stacked(models)
    x = torch.randn(K, 16, 6)

    def grad_norm(params, buffers, x):  # a gradient penalty: the gradient's own gradient
        g = grad(lambda p, b: functional_call(models[0], (p, b), (x,)).square().mean())(params, buffers)
        return sum(v.square().sum() for v in g.values())

    plain = vmap(grad(grad_norm))(params, {n: b.clone() for n, b in buffers.items()}, x)
    with channels_last_batch_norm():
        folded = vmap(grad(grad_norm))(params, {n: b.clone() for n, b in buffers.items()}, x)
    for n in plain:
        assert_close(folded[n], plain[n])
