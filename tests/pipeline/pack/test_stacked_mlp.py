"""The batched step of K stacked MLPs against K separate hand-written steps (pipeline.train.model.SGDStep)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lrscan.pipeline.pack.stacked_mlp import StackedMLP, StackedSGDStep, batch_mean
from lrscan.pipeline.train.model import MLP, SGDStep

V, BLOCK, EMB, HID, B = 27, 3, 4, 32, 32


def _batches(n_steps: int, K: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randint(0, V, (n_steps, K, B * BLOCK), generator=g)  # (n, K, B * block)
    Y = torch.randint(0, V, (n_steps, K, B), generator=g)          # (n, K, B)
    return X, Y


def test_k_stacked_steps_equal_k_separate_steps():
    K, n_steps = 5, 60
    seeds, lrs = [3, 1, 4, 1, 5], torch.tensor([1e-3, 1e-2, 0.1, 0.3, 1.0], dtype=torch.float64)
    alone = [MLP.create(V, BLOCK, EMB, HID, seed=s) for s in seeds]
    steps = [SGDStep(m) for m in alone]
    stack = StackedMLP.stack([MLP.create(V, BLOCK, EMB, HID, seed=s) for s in seeds])
    stacked = StackedSGDStep(stack)
    X, Y = _batches(n_steps, K)
    alphas = stacked.alphas(lrs, B)
    for i in range(n_steps):
        want = np.array([steps[k](X[i, k], Y[i, k], float(lrs[k])).item() for k in range(K)])
        got = batch_mean(stacked(X[i], Y[i], alphas).numpy())
        np.testing.assert_allclose(got, want, rtol=1e-6)
    for k in range(K):
        torch.testing.assert_close(stack.flat[k], alone[k].flat, rtol=1e-5, atol=1e-6)
        # a row is that member alone: the same loss over a split
        Xs, Ys = X[0, k].view(B, BLOCK), Y[0, k]
        assert stack.member(k).loss(Xs, Ys) == pytest.approx(alone[k].loss(Xs, Ys), rel=1e-6)


def test_members_do_not_mix():
    # member 0 trains the same whatever its packmates' weights, batches and lrs
    X, Y = _batches(20, 3, seed=1)
    runs = []
    for other_seed, other_lr in ((7, 0.01), (8, 10.0)):
        stack = StackedMLP.stack([MLP.create(V, BLOCK, EMB, HID, seed=s) for s in (2, other_seed, other_seed + 1)])
        step = StackedSGDStep(stack)
        alphas = step.alphas(torch.tensor([0.1, other_lr, other_lr], dtype=torch.float64), B)
        Xo = X.clone()
        Xo[:, 1:] = X[:, 1:].flip(0)
        losses = [batch_mean(step(Xo[i], Y[i], alphas).numpy())[0] for i in range(20)]
        runs.append((np.array(losses), stack.flat[0].clone()))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    torch.testing.assert_close(runs[0][1], runs[1][1], rtol=0, atol=0)


def test_keep_drops_members_and_keeps_the_others_rows():
    stack = StackedMLP.stack([MLP.create(V, BLOCK, EMB, HID, seed=s) for s in range(4)])
    kept = stack.keep([3, 1])
    assert kept.n_members == 2
    torch.testing.assert_close(kept.flat, stack.flat[[3, 1]], rtol=0, atol=0)
    X, Y = _batches(1, 2)
    step = StackedSGDStep(kept)
    step(X[0], Y[0], step.alphas(torch.tensor([0.1, 0.1], dtype=torch.float64), B))
    torch.testing.assert_close(stack.flat[3], MLP.create(V, BLOCK, EMB, HID, seed=3).flat, rtol=0, atol=0)
