"""The NumPy step against the seed's autograd step and torch's hand-written one, and batch_mean against F.nll_loss."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lrscan.pipeline.pack.stacked_mlp import StackedMLP
from lrscan.pipeline.train.model import MLP, SGDStep
from lrscan.pipeline.train.numpy_step import NumpySGDStep, alphas, batch_mean, numpy_steps


def _step(step: NumpySGDStep, X: torch.Tensor, Y: torch.Tensor, lr: float) -> np.ndarray:
    """One step of a lone model (K = 1): X (B, block_size), Y (B,); each example's loss (B,)."""
    nll = np.empty((1, 1, Y.shape[0]), np.float32)
    numpy_steps(step, [(X.reshape(1, -1).numpy(), Y.reshape(1, -1).numpy(), alphas(np.array([lr]), Y.shape[0]))], nll)
    return nll[0, 0]


@pytest.mark.parametrize(("vocab", "block", "embd", "hidden", "batch"),
                         [(27, 3, 10, 200, 32), (27, 3, 2, 100, 1), (5, 1, 3, 7, 33), (40, 8, 4, 16, 7)])
def test_one_step_equals_the_seeds_autograd_step(vocab, block, embd, hidden, batch):
    g = torch.Generator().manual_seed(vocab + batch)
    m = MLP.create(vocab, block, embd, hidden, seed=3)
    X = torch.randint(0, vocab, (batch, block), generator=g)
    X[0] = X[0, 0]  # one context whose characters repeat: C's rows are summed, not overwritten
    Y = torch.randint(0, vocab, (batch,), generator=g)
    lr = 0.1
    # the seed's step with autograd, on copies of the parameters
    C, W1, b1, W2, b2 = (t.clone().requires_grad_() for t in m.params().values())
    logits = torch.tanh(C[X].view(batch, -1) @ W1 + b1) @ W2 + b2
    per_example = F.cross_entropy(logits, Y, reduction="none")
    per_example.mean().backward()
    after = [(p - lr * p.grad).detach() for p in (C, W1, b1, W2, b2)]

    nll = _step(NumpySGDStep(m, batch), X, Y, lr)
    np.testing.assert_allclose(nll, per_example.detach().numpy(), rtol=1e-5, atol=1e-5)
    for (name, got), want in zip(m.params().items(), after):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, msg=name)


def test_many_steps_follow_torchs_hand_written_step():
    g = torch.Generator().manual_seed(0)
    a, b = MLP.create(27, 3, 10, 200, seed=1), MLP.create(27, 3, 10, 200, seed=1)
    torch_step, numpy_step = SGDStep(a), NumpySGDStep(b, 32)
    for i in range(100):
        X, Y = torch.randint(0, 27, (32, 3), generator=g), torch.randint(0, 27, (32,), generator=g)
        lr = 0.1 if i < 50 else 0.01
        want = torch_step(X.view(-1), Y, lr).item()
        got = batch_mean(_step(numpy_step, X, Y, lr)[None])[0]
        assert got == pytest.approx(want, rel=1e-5), i
    torch.testing.assert_close(b.flat, a.flat, rtol=1e-4, atol=1e-5)


def test_k_stacked_members_are_their_runs_alone_bit_for_bit():
    # a pack's member gets the numbers it gets alone: the same BLAS calls on its own slices
    K, B, n = 4, 32, 30
    seeds, lrs = [3, 1, 4, 1], np.array([1e-3, 0.1, 1.0, 1e30])  # the last one diverges
    g = torch.Generator().manual_seed(6)
    X = torch.randint(0, 27, (n, K, B * 3), generator=g).numpy()
    Y = torch.randint(0, 27, (n, K, B), generator=g).numpy()
    stack = StackedMLP.stack([MLP.create(27, 3, 10, 200, seed=s) for s in seeds])
    factors = alphas(np.tile(lrs, (n, 1)), B)                       # (n, K, 1)
    together = np.empty((n, K, B), np.float32)
    numpy_steps(NumpySGDStep(stack, B), list(zip(X, Y, factors)), together)
    for k, seed in enumerate(seeds):
        alone = MLP.create(27, 3, 10, 200, seed=seed)
        nll = np.empty((n, 1, B), np.float32)
        numpy_steps(NumpySGDStep(alone, B), list(zip(X[:, k:k + 1], Y[:, k:k + 1], factors[:, k:k + 1])), nll)
        np.testing.assert_array_equal(together[:, k], nll[:, 0])
        assert torch.equal(stack.flat[k].nan_to_num(), alone.flat.nan_to_num())
        assert torch.equal(stack.flat[k].isnan(), alone.flat.isnan())
    assert not (together[-1, 3] < 100).all() and np.isfinite(together[:, :3]).all()  # only the last one diverged


def test_alphas_are_minus_lr_over_b_in_float32_clamped():
    got = alphas(np.array([[0.1, 1e300], [0.0, 3.0]]), 32)
    assert got.shape == (2, 2, 1) and got.dtype == np.float32
    np.testing.assert_array_equal(got[..., 0], np.array([[-0.1 / 32, -np.finfo(np.float32).max], [0.0, -3.0 / 32]],
                                                        np.float32))


def test_the_same_steps_give_the_same_bits():
    # a replay retrains a chunk from its start: it must land on the same weights, bit for bit
    g = torch.Generator().manual_seed(2)
    batches = [(torch.randint(0, 27, (32, 3), generator=g), torch.randint(0, 27, (32,), generator=g))
               for _ in range(20)]
    runs = []
    for _ in range(2):
        m = MLP.create(27, 3, 10, 200, seed=5)
        step = NumpySGDStep(m, 32)
        losses = [_step(step, X, Y, 0.3) for X, Y in batches]
        runs.append((np.stack(losses), m.flat.clone()))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    assert torch.equal(runs[0][1], runs[1][1])


def test_a_diverging_run_gives_non_finite_losses_silently_and_an_lr_past_float32_makes_inf_weights():
    g = torch.Generator().manual_seed(3)
    m = MLP.create(27, 3, 10, 200, seed=1)
    step = NumpySGDStep(m, 32)
    losses = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the errstate the loop sets keeps NumPy quiet
        for lr in (1e3, 1e6, 1e12, 1e40, 1e300):
            X, Y = torch.randint(0, 27, (32, 3), generator=g), torch.randint(0, 27, (32,), generator=g)
            losses.append(batch_mean(_step(step, X, Y, lr)[None])[0])
    assert losses[0] > 10 and not np.isfinite(losses[-1])
    assert not torch.isfinite(m.flat).all()


def test_huge_logits_give_the_finite_loss_torch_gives():
    # log-softmax shifted by each row's max: logits far past exp's range still give a finite loss
    m = MLP.create(27, 3, 10, 200, seed=1)
    m.params()["W2"].mul_(50.0)
    g = torch.Generator().manual_seed(4)
    X, Y = torch.randint(0, 27, (32, 3), generator=g), torch.randint(0, 27, (32,), generator=g)
    want = F.cross_entropy(m.logits(X), Y, reduction="none").numpy()
    assert want.max() > 100 and np.isfinite(want).all()
    np.testing.assert_allclose(_step(NumpySGDStep(m, 32), X, Y, 0.1), want, rtol=1e-5, atol=1e-4)


def test_an_lr_past_float32_leaves_the_parameters_without_gradient_as_they_were():
    # -lr / B clamped to float32's range: 0 * -inf would be NaN, 0 * -FLOAT32_MAX is 0
    m = MLP.create(27, 3, 10, 200, seed=1)
    before = m.params()["C"].clone()
    X, Y = torch.randint(0, 5, (32, 3)), torch.randint(0, 27, (32,))
    _step(NumpySGDStep(m, 32), X, Y, 1e300)
    torch.testing.assert_close(m.params()["C"][5:], before[5:], rtol=0, atol=0)  # characters no context holds
    assert not torch.isfinite(m.params()["C"][:5]).all()


def test_the_step_writes_into_the_models_buffers():
    m = MLP.create(27, 3, 10, 200, seed=1)
    before = m.flat.clone()
    step = NumpySGDStep(m, 4)
    _step(step, torch.zeros(4, 3, dtype=torch.int64), torch.ones(4, dtype=torch.int64), 0.1)
    assert not torch.equal(m.flat, before)  # the model itself moved: checkpoints and evals see the step
    assert np.shares_memory(step.flat, m.flat.numpy()) and np.shares_memory(step.grad, m.grad.numpy())


def test_only_a_float32_cpu_model():
    m = MLP.create(5, 1, 2, 3, seed=1)
    m.flat = m.flat.double()
    with pytest.raises(ValueError, match="float32 CPU model"):
        NumpySGDStep(m, 4)
    with pytest.raises(ValueError, match="float32 CPU model"):
        NumpySGDStep(MLP.create(5, 1, 2, 3, seed=1, device="meta"), 4)
    stack = StackedMLP.stack([MLP.create(5, 1, 2, 3, seed=s) for s in range(3)])
    stack.flat = stack.flat[::2]  # rows 0 and 2: a view a reshape would copy
    with pytest.raises(ValueError, match="contiguous"):
        NumpySGDStep(stack, 4)


@pytest.mark.parametrize("batch", [1, 7, 16, 32, 33, 100, 300])
def test_batch_mean_is_the_minibatch_loss_of_torchs_step(batch):
    g = torch.Generator().manual_seed(batch)
    logp = torch.log_softmax(torch.randn(6, batch, 27, generator=g) * 3, 2)
    Y = torch.randint(0, 27, (6, batch), generator=g)
    want = torch.stack([F.nll_loss(logp[k], Y[k]) for k in range(6)]).numpy()
    got = batch_mean(-logp.gather(2, Y.unsqueeze(2)).squeeze(2).numpy())
    np.testing.assert_array_equal(got, want)  # the same order of sums: the same bits
