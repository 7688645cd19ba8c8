"""The makemore MLP's hand-written training step on the CPU, in NumPy, for one model or a pack's K, and the
minibatch mean torch takes.

`pipeline.train.model.SGDStep` (one model) and `pipeline.pack.stacked_mlp.StackedSGDStep` (K) are the
step in torch; they are the ones on CUDA. On the CPU this model is so small that the time of a step
is the calls, not the arithmetic: a torch op costs 2-5 us to dispatch and allocate its output, a
NumPy op writing into a buffer made once about 1 us, and torch's tanh on a (32, 200) batch takes
17 us where NumPy's takes 2.7 us (2 x86_64 cores, torch 2.13.0 CPU, NumPy 2.4). One model's step
takes ~70 us here against ~130 us, five stacked ~250 us against ~400 us (docs/performance.md):

    x = [C[X].view(B, -1), 1]                   # (K, B, block_size * n_embd + 1): a column of ones
    h = [tanh(x @ [W1; b1]), 1]                 # (K, B, n_hidden + 1)
    logits = h @ [W2; b2]                       # (K, B, vocab)

W1 and b1 follow each other in the flat buffer, as W2 and b2 do, so [W1; b1] and [W2; b2] are views,
and so are their gradients: x.T @ dh gives W1's and b1's at once (no sum over the batch per bias).
C's gradient is a one-hot (B * block_size, vocab) matrix's transpose times the embeddings' gradient.
Every buffer is made once; each call writes into them. The step leaves its losses per example in a
chunk's (n, K, B) array, and `batch_mean` makes the minibatch means of the whole chunk at once.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from lrscan.pipeline.train.model import FLOAT32_MAX


class NumpySGDStep:
    """One training step of the seed's loop on the CPU for K >= 1 models at once, forward + hand-written backward +
    SGD update, in NumPy: a single run is K = 1 (`MLP`), a pack's stack K rows (`pipeline.pack.stacked_mlp`).

    Every array has the members on its first axis and each member's matmuls are NumPy's BLAS calls on
    its own slices, so a member of a stack gets the numbers it gets alone, bit for bit. Built once per
    model and batch size: its arrays are views of the model's flat buffers (a step updates `model.flat`
    in place) and of buffers made here, so a call allocates almost nothing. Call it inside
    `np.errstate(over="ignore", invalid="ignore", divide="ignore")`: a diverging run's overflows and NaN
    are its losses, not warnings.
    """

    def __init__(self, model: Any, batch_size: int):
        # model: an MLP, flat (P,), or a stack, flat (K, P); the same shapes either way
        if model.flat.device.type != "cpu" or model.flat.dtype != torch.float32:
            raise ValueError(f"NumpySGDStep needs a float32 CPU model, not {model.flat.dtype} on {model.flat.device}")
        if not (model.flat.is_contiguous() and model.grad.is_contiguous()):
            # a reshape below would copy, and the steps would update the copy
            raise ValueError("NumpySGDStep needs the model's flat buffers contiguous")
        V, E, H, T = model.vocab_size, model.n_embd, model.n_hidden, model.block_size
        D, B = T * E, batch_size
        P = V * E + (D + 1) * H + (H + 1) * V
        flat, grad = model.flat.numpy().reshape(-1, P), model.grad.numpy().reshape(-1, P)  # (K, P): views
        K = flat.shape[0]
        ends = np.cumsum([V * E, (D + 1) * H, (H + 1) * V])
        starts, shapes = (0, *ends[:2]), ((V, E), (D + 1, H), (H + 1, V))
        self.C, self.W1b1, self.W2b2 = (flat[:, a:b].reshape(K, *shape) for a, b, shape in zip(starts, ends, shapes))
        self.gC, self.gW1b1, self.gW2b2 = (grad[:, a:b].reshape(K, *shape) for a, b, shape in
                                           zip(starts, ends, shapes))
        self.flat, self.grad = flat, grad
        # W1 and W2 without their biases, transposed
        self.W1t, self.W2t = self.W1b1[:, :D].transpose(0, 2, 1), self.W2b2[:, :H].transpose(0, 2, 1)
        self.K, self.B, self.T, self.E = K, B, T, E
        # the inputs with a column of ones, and the embeddings' place in them as (K, B, block_size, n_embd)
        self.x = np.ones((K, B, D + 1), np.float32)               # (K, B, D + 1)
        self.emb = np.lib.stride_tricks.as_strided(self.x, (K, B, T, E), (4 * B * (D + 1), 4 * (D + 1), 4 * E, 4))
        self.h1 = np.ones((K, B, H + 1), np.float32)              # (K, B, H + 1)
        self.h = self.h1[:, :, :H]                                # (K, B, H), a view
        self.logits = np.empty((K, B, V), np.float32)
        self.probs = np.empty((K, B, V), np.float32)
        self.row_max = np.empty((K, B, 1), np.float32)
        self.row_sum = np.empty((K, B, 1), np.float32)
        self.dh = np.empty((K, B, H), np.float32)
        self.dtanh = np.empty((K, B, H), np.float32)
        self.demb = np.empty((K, B, D), np.float32)
        self.onehot = np.zeros((K, B * T, V), np.float32)
        self.update = np.empty_like(flat)
        self.members = np.arange(K)[:, None]                      # (K, 1)
        self.rows, self.context_rows = np.arange(B)[None, :], np.arange(B * T)[None, :]

    def __call__(self, Xb: np.ndarray, Yb: np.ndarray, alpha: np.ndarray, nll: np.ndarray) -> None:
        """Xb (K, B * block_size) int64 contexts flattened per member, Yb (K, B) int64, alpha (K, 1) float32 each
        member's -lr / B (`alphas`); nll (K, B) float32 is given each example's cross-entropy before the update
        (`batch_mean` of a chunk's rows: the minibatch losses)."""
        K, B, members, rows = self.K, self.B, self.members, self.rows
        # forward
        self.emb[...] = self.C[members, Xb].reshape(K, B, self.T, self.E)  # (K, B, T, E) into x
        np.matmul(self.x, self.W1b1, out=self.h)                   # (K, B, H): x @ W1 + b1
        np.tanh(self.h, out=self.h)
        logits = np.matmul(self.h1, self.W2b2, out=self.logits)    # (K, B, V): h @ W2 + b2
        # log-softmax, shifted by each row's max as torch's is: finite logits give finite log-probabilities
        # (ufuncs' own methods: NumPy's np.max and np.sum wrappers cost more than the work here)
        np.maximum.reduce(logits, 2, keepdims=True, out=self.row_max)
        logits -= self.row_max
        probs = np.exp(logits, out=self.probs)                     # (K, B, V), not yet normalized
        np.add.reduce(probs, 2, keepdims=True, out=self.row_sum)
        np.subtract(np.log(self.row_sum[:, :, 0]), logits[members, rows, Yb], out=nll)  # (K, B): -log p(target)
        # backward: d loss / d logits = (softmax - onehot) / B; the 1/B is folded into the update
        probs /= self.row_sum
        probs[members, rows, Yb] -= 1
        np.matmul(self.h1.transpose(0, 2, 1), probs, out=self.gW2b2)  # (K, H + 1, V): W2's and b2's
        dh = np.matmul(probs, self.W2t, out=self.dh)               # (K, B, H)
        np.multiply(self.h, self.h, out=self.dtanh)
        np.subtract(1, self.dtanh, out=self.dtanh)
        dh *= self.dtanh                                           # (K, B, H): dh * (1 - h**2)
        np.matmul(self.x.transpose(0, 2, 1), dh, out=self.gW1b1)   # (K, D + 1, H): W1's and b1's
        np.matmul(dh, self.W1t, out=self.demb)                     # (K, B, D)
        onehot = self.onehot
        onehot.fill(0)
        onehot[members, self.context_rows, Xb] = 1                 # (K, B * T, V)
        np.matmul(onehot.transpose(0, 2, 1), self.demb.reshape(K, -1, self.E), out=self.gC)  # (K, V, E)
        # update: every parameter of every member at once, each member with its own factor
        np.multiply(self.grad, alpha, out=self.update)
        self.flat += self.update


def numpy_steps(step: NumpySGDStep, batches: list[tuple[np.ndarray, np.ndarray, np.ndarray]], nll: np.ndarray) -> None:
    """`step` over the batches in order, (X, Y, alpha) each as `NumpySGDStep` takes them; step i's losses per
    example into nll[i] (n, K, B)."""
    # a diverging run's overflows and NaN are its losses, not warnings
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for i, (Xb, Yb, alpha) in enumerate(batches):
            step(Xb, Yb, alpha, nll[i])


def alphas(lrs: np.ndarray, batch_size: int) -> np.ndarray:
    """The update's factors -lr / B, float32, for lrs (n, K) float64 -> (n, K, 1): clamped to float32's range, so an
    lr past it (a range test far into divergence) makes the weights inf, and the next loss non-finite, and leaves a
    parameter whose gradient is 0 as it was (0 * -inf would be NaN); the torch steps clamp alike."""
    return np.maximum(-np.asarray(lrs, np.float64) / batch_size, -FLOAT32_MAX).astype(np.float32)[..., None]


def batch_mean(nll: np.ndarray) -> np.ndarray:
    """The minibatch means of per-example losses, float32 (..., B) -> (...), summed in the order
    `F.nll_loss` sums them on the CPU (partial sums in a cascade of levels of 16), so a mean is the one
    the torch step (`SGDStep`) takes of the same numbers. Done on a whole chunk at once: ~B small ops
    per chunk instead of a reduction per step."""
    nll = np.asarray(nll, dtype=np.float32)
    B = nll.shape[-1]
    power, n_levels = 4, 8  # torch: max(4, ceil_log2(B) // 8) and a cascade of 8 levels
    mask = (1 << power) - 1
    levels = [np.zeros(nll.shape[:-1], np.float32) for _ in range(n_levels)]
    total = np.zeros(nll.shape[:-1], np.float32)
    with np.errstate(over="ignore", invalid="ignore"):  # a diverging member's inf and NaN are its losses
        for b in range(B):
            levels[0] = levels[0] + nll[..., b]
            for j in range(n_levels - 1):
                if b & (mask << (j * power)):
                    break
                levels[j + 1] = levels[j + 1] + levels[j]
                levels[j] = np.zeros_like(levels[j])
        for level in levels:
            total = total + level
    return total / np.float32(B)
