"""The seed study's training loop, written the way the seed writes it: our baseline for speed.

Autograd, a per-parameter `p.data += -lr * p.grad` update and a Python `lossi.append(loss.log10().item())`
(from ../shared/seed/learning-rate.md). `naive_logging=True` adds one `wandb.log` per step inside the
loop, as a new user would.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F


def seed_loop(Xtr: torch.Tensor, Ytr: torch.Tensor, vocab_size: int, steps: int, *, n_embd: int = 10,
              n_hidden: int = 200, block_size: int = 3, lr: float = 0.1, run=None) -> float:
    """Run the seed's loop for `steps` steps; returns seconds per step. `run`: a wandb run to log to."""
    g = torch.Generator().manual_seed(2147483647)
    C = torch.randn((vocab_size, n_embd), generator=g)
    W1 = torch.randn((block_size * n_embd, n_hidden), generator=g)
    b1 = torch.randn(n_hidden, generator=g)
    W2 = torch.randn((n_hidden, vocab_size), generator=g)
    b2 = torch.randn(vocab_size, generator=g)
    parameters = [C, W1, b1, W2, b2]
    for p in parameters:
        p.requires_grad = True
    lossi = []
    t0 = time.perf_counter()
    for i in range(steps):
        # minibatch construct
        ix = torch.randint(0, Xtr.shape[0], (32,))
        Xb, Yb = Xtr[ix], Ytr[ix]
        # forward pass
        emb = C[Xb]
        h = torch.tanh(emb.view(-1, block_size * n_embd) @ W1 + b1)
        logits = h @ W2 + b2
        loss = F.cross_entropy(logits, Yb)
        # backward pass
        for p in parameters:
            p.grad = None
        loss.backward()
        # update: simple SGD
        for p in parameters:
            p.data += -lr * p.grad
        # track stats
        lossi.append(loss.log10().item())
        if run is not None:
            run.log({"lr": lr, "lre": -1.0, "loss": loss.item(), "log10_loss": lossi[-1]}, step=i)
    return (time.perf_counter() - t0) / steps
