"""K makemore MLPs stacked in one buffer and trained by one batched hand-written step (bmm/baddbmm).

    flat = (K, P)                               # member k's parameters in row k, PARAM_NAMES order
    emb = C[k][X[k]]                            # (K, B, block_size * n_embd)
    h = tanh(baddbmm(b1, emb, W1))              # (K, B, n_hidden)
    logits = baddbmm(b2, h, W2)                 # (K, B, vocab)

Member k's row holds exactly what `pipeline.train.model.MLP.flat` holds for that member alone, so a
row is checkpointed, evaluated and sampled as a lone MLP (`member`). `StackedSGDStep` is
`pipeline.train.model.SGDStep` with every op batched over the K members and a (K,) tensor of lrs:
the per-op overhead that dominates a step of this small model is paid once for the K members.
Each member sees only its own rows (its batch, its parameters): members never mix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from pipeline.train.model import FLOAT32_MAX, MLP, PARAM_NAMES, param_shapes


@dataclass
class StackedMLP:
    vocab_size: int
    block_size: int
    n_embd: int
    n_hidden: int
    flat: torch.Tensor   # (K, P): every member's parameters, one row each
    grad: torch.Tensor   # (K, P): their gradients, same layout

    @classmethod
    def stack(cls, models: list[MLP]) -> StackedMLP:
        """The members' flat parameters stacked row by row (copied)."""
        first = models[0]
        shape = (first.vocab_size, first.block_size, first.n_embd, first.n_hidden)
        if any((m.vocab_size, m.block_size, m.n_embd, m.n_hidden) != shape for m in models):
            raise ValueError("stacked members must have the same shapes")
        return cls.stack_rows([m.flat for m in models], *shape)

    @classmethod
    def stack_rows(cls, flats: list[torch.Tensor], vocab_size: int, block_size: int, n_embd: int,
                   n_hidden: int) -> StackedMLP:
        flat = torch.stack(flats)  # (K, P)
        return cls(vocab_size, block_size, n_embd, n_hidden, flat, torch.zeros_like(flat))

    @property
    def n_members(self) -> int:
        return self.flat.shape[0]

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return param_shapes(self.vocab_size, self.block_size, self.n_embd, self.n_hidden)

    def params(self) -> dict[str, torch.Tensor]:
        return _stacked_views(self.flat, self.shapes())

    def grads(self) -> dict[str, torch.Tensor]:
        return _stacked_views(self.grad, self.shapes())

    def member(self, k: int) -> MLP:
        """Member k as a lone MLP whose weights are a view of row k (no copy): for its loss and samples."""
        return MLP(self.vocab_size, self.block_size, self.n_embd, self.n_hidden, self.flat[k], self.grad[k])

    def member_of(self, row: torch.Tensor) -> MLP:
        """A lone MLP of this stack's shapes over one row of weights (P,): a member's, or a replayed copy."""
        return MLP(self.vocab_size, self.block_size, self.n_embd, self.n_hidden, row, torch.zeros_like(row))

    def keep(self, rows: list[int]) -> StackedMLP:
        """The pack without the members that left it: a new stack of the given rows, in that order."""
        index = torch.tensor(rows, dtype=torch.long, device=self.flat.device)
        flat = self.flat.index_select(0, index)  # (K', P)
        return StackedMLP(self.vocab_size, self.block_size, self.n_embd, self.n_hidden, flat, torch.zeros_like(flat))


def _stacked_views(buf: torch.Tensor, shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    out, offset = {}, 0
    K = buf.shape[0]
    for name, shape in shapes.items():
        n = math.prod(shape)
        out[name] = buf[:, offset : offset + n].view(K, *shape)  # (K, *shape), a view of the columns
        offset += n
    return out


class StackedSGDStep:
    """One training step of K members at once: forward, hand-written backward, SGD update with K lrs.

    Built once per stack, like SGDStep: it binds the parameter views, so a call does tensor work only.
    """

    def __init__(self, model: StackedMLP):
        self.model = model
        p, g = model.params(), model.grads()
        self.C, self.W1, self.b1, self.W2, self.b2 = (p[k] for k in PARAM_NAMES)
        self.gC, self.gW1, self.gb1, self.gW2, self.gb2 = (g[k] for k in PARAM_NAMES)
        self.W1t, self.W2t = self.W1.transpose(1, 2), self.W2.transpose(1, 2)
        # member k gathers from C[k] only: the member index beside each context index
        self.member = torch.arange(model.n_members, device=model.flat.device).view(-1, 1)  # (K, 1)
        self.minus_one = torch.full((1, 1, 1), -1.0, dtype=model.flat.dtype, device=model.flat.device)

    def alphas(self, lrs: torch.Tensor, batch_size: int) -> torch.Tensor:
        """The update's factors -lr / B per member and step, clamped to float32 as SGDStep does: lrs (..., K)."""
        return (-lrs.double() / batch_size).clamp(min=-FLOAT32_MAX).to(self.model.flat.dtype)

    def __call__(self, Xb: torch.Tensor, Yb: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """Xb (K, B * block_size) int64 contexts flattened per member, Yb (K, B) int64, alpha (K,) float:
        each member's -lr / B (`alphas`).

        Returns each example's cross-entropy before the update (K, B); `batch_mean` makes them each
        member's minibatch loss, the number SGDStep returns.
        """
        K, B = Yb.shape
        # forward
        emb = self.C[self.member, Xb].view(K, B, -1)              # (K, B, block_size * n_embd)
        h = torch.baddbmm(self.b1.unsqueeze(1), emb, self.W1).tanh_()  # (K, B, n_hidden)
        logits = torch.baddbmm(self.b2.unsqueeze(1), h, self.W2)  # (K, B, vocab)
        logp = torch.log_softmax(logits, 2)                       # (K, B, vocab)
        nll = logp.gather(2, Yb.unsqueeze(2)).view(K, B).neg_()  # (K, B): -log p(target), before logp is reused
        # backward: d loss / d logits = (softmax - onehot) / B; the 1/B is folded into alpha
        dlogits = logp.exp_()                                     # (K, B, vocab), logp reused in place
        dlogits.scatter_add_(2, Yb.unsqueeze(2), self.minus_one.expand(K, B, 1))  # minus the one-hot targets
        torch.bmm(h.transpose(1, 2), dlogits, out=self.gW2)      # (K, n_hidden, vocab)
        torch.sum(dlogits, 1, out=self.gb2)                       # (K, vocab)
        dh = torch.ops.aten.tanh_backward(torch.bmm(dlogits, self.W2t), h)  # (K, B, n_hidden): dh * (1 - h**2)
        torch.bmm(emb.transpose(1, 2), dh, out=self.gW1)         # (K, block_size * n_embd, n_hidden)
        torch.sum(dh, 1, out=self.gb1)                            # (K, n_hidden)
        demb = torch.bmm(dh, self.W1t)                            # (K, B, block_size * n_embd)
        member = self.member.expand_as(Xb)                        # (K, B * block_size)
        self.gC.zero_().index_put_((member, Xb), demb.view(K, Xb.shape[1], -1), accumulate=True)  # (K, vocab, n_embd)
        # update: one fused op over every member's parameters, each with its own factor
        self.model.flat.addcmul_(self.model.grad, alpha.unsqueeze(1))  # (K, P) += (K, P) * (K, 1)
        return nll


def batch_mean(nll: np.ndarray) -> np.ndarray:
    """The minibatch means of per-example losses, float32 (..., B) -> (...), summed in the order
    `F.nll_loss` sums them on the CPU (partial sums in a cascade of levels of 16), so a member's logged
    loss is the single trainer's bit for bit. Done on a whole chunk at once in numpy: ~B small ops per
    chunk instead of a reduction per step."""
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
