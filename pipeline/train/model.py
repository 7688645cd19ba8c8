"""The seed's MLP: embedding C, W1, b1, tanh, W2, b2, cross-entropy; trained with plain SGD.

    emb = C[X]                                 # (B, block_size, n_embd)
    h = tanh(emb.view(B, -1) @ W1 + b1)        # (B, n_hidden)
    logits = h @ W2 + b2                       # (B, vocab)
    loss = cross_entropy(logits, Y)

`sgd_step` is that forward pass with the backward pass written out by hand, the way the lecture's
"becoming a backprop ninja" part does it. Autograd costs a tape and ~30 small ops per step; on a
model this small the per-op overhead, not the arithmetic, is the time, so the hand-written pass
(~14 ops, all parameters in one flat buffer so one `add_` updates them all) is what makes per-step
logging affordable. tests/test_model.py checks its gradients against autograd on the seed's code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

PARAM_NAMES = ("C", "W1", "b1", "W2", "b2")
FLOAT32_MAX = float(torch.finfo(torch.float32).max)


class NonFiniteModel(ValueError):
    """The model cannot be sampled from: its weights or outputs are NaN or inf (it diverged)."""


@dataclass
class MLP:
    vocab_size: int
    block_size: int
    n_embd: int
    n_hidden: int
    flat: torch.Tensor   # every parameter, in PARAM_NAMES order
    grad: torch.Tensor   # their gradients, same layout

    @classmethod
    def create(cls, vocab_size: int, block_size: int, n_embd: int, n_hidden: int, *, seed: int,
               init: str = "lecture", device: str | torch.device = "cpu") -> MLP:
        shapes = param_shapes(vocab_size, block_size, n_embd, n_hidden)
        g = torch.Generator().manual_seed(seed)
        # the lecture draws C, W1, b1, W2, b2 in this order from one generator
        tensors = [torch.randn(shape, generator=g) for shape in shapes.values()]
        if init == "scaled":
            # tanh gain / sqrt(fan_in) keeps h out of saturation; small logits start near uniform
            fan_in = block_size * n_embd
            tensors[1] *= (5 / 3) / math.sqrt(fan_in)
            tensors[2] *= 0.01
            tensors[3] *= 0.01
            tensors[4] *= 0.0
        elif init != "lecture":
            raise ValueError(f"unknown init {init!r}")
        flat = torch.cat([t.reshape(-1) for t in tensors]).to(device)
        return cls(vocab_size, block_size, n_embd, n_hidden, flat, torch.zeros_like(flat))

    # views into the flat buffers: no copies, updating `flat` updates every parameter
    def params(self) -> dict[str, torch.Tensor]:
        return _views(self.flat, param_shapes(self.vocab_size, self.block_size, self.n_embd, self.n_hidden))

    def grads(self) -> dict[str, torch.Tensor]:
        return _views(self.grad, param_shapes(self.vocab_size, self.block_size, self.n_embd, self.n_hidden))

    @property
    def n_params(self) -> int:
        return self.flat.numel()

    @torch.no_grad()
    def logits(self, X: torch.Tensor) -> torch.Tensor:
        """The model's logits for contexts X (evaluation and sampling only: no autograd)."""
        p = self.params()
        emb = p["C"][X]                                       # (B, block_size, n_embd)
        # in place: the same numbers as tanh(x @ W1 + b1), a third faster on a 180k-row split (no temporaries)
        h = tanh_((emb.view(X.shape[0], -1) @ p["W1"]).add_(p["b1"]))  # (B, n_hidden)
        return (h @ p["W2"]).add_(p["b2"])                   # (B, vocab)

    @torch.no_grad()
    def loss(self, X: torch.Tensor, Y: torch.Tensor, batch: int = 65536) -> float:
        """Mean cross-entropy over a whole split, in slices so memory stays flat."""
        total, n = 0.0, X.shape[0]
        for i in range(0, n, batch):
            total += F.cross_entropy(self.logits(X[i : i + batch]), Y[i : i + batch], reduction="sum").item()
        return total / max(n, 1)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator, max_len: int = 50) -> list[list[int]]:
        """n words as index lists, sampled character by character until the end marker (index 0).

        Raises NonFiniteModel when the model's probabilities are not finite (a diverged run): finite
        but huge weights can overflow the logits too, so the probabilities are checked, not only the weights.
        """
        if not torch.isfinite(self.flat).all():
            raise NonFiniteModel("its weights are not finite")
        out = []
        for _ in range(n):
            context, word = [0] * self.block_size, []
            for _ in range(max_len):
                probs = F.softmax(self.logits(torch.tensor([context], device=self.flat.device)), dim=1)
                if not torch.isfinite(probs).all():
                    raise NonFiniteModel("its next-character probabilities are not finite")
                ix = torch.multinomial(probs.cpu(), num_samples=1, generator=generator).item()
                if ix == 0:
                    break
                word.append(ix)
                context = context[1:] + [ix]
            out.append(word)
        return out


def tanh_(t: torch.Tensor) -> torch.Tensor:
    """`t.tanh_()`, through NumPy on the CPU: torch's CPU tanh takes ~2.6 ns an element there, NumPy's ~0.4 ns
    (pipeline/train/numpy_step.py). For tensors autograd does not track."""
    if t.device.type == "cpu" and t.dtype == torch.float32:
        a = t.numpy()
        np.tanh(a, out=a)
        return t
    return t.tanh_()


def param_shapes(vocab_size: int, block_size: int, n_embd: int, n_hidden: int) -> dict[str, tuple[int, ...]]:
    return {
        "C": (vocab_size, n_embd),
        "W1": (block_size * n_embd, n_hidden),
        "b1": (n_hidden,),
        "W2": (n_hidden, vocab_size),
        "b2": (vocab_size,),
    }


def _views(buf: torch.Tensor, shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    out, offset = {}, 0
    for name, shape in shapes.items():
        n = math.prod(shape)
        out[name] = buf[offset : offset + n].view(shape)
        offset += n
    return out


class SGDStep:
    """One training step of the seed's loop, forward + hand-written backward + SGD update.

    Built once per model: it binds the parameter views so the per-step call does tensor work only.
    """

    def __init__(self, model: MLP):
        self.model = model
        p, g = model.params(), model.grads()
        self.C, self.W1, self.b1, self.W2, self.b2 = (p[k] for k in PARAM_NAMES)
        self.gC, self.gW1, self.gb1, self.gW2, self.gb2 = (g[k] for k in PARAM_NAMES)
        self.W1t, self.W2t = self.W1.t(), self.W2.t()
        self.minus_one = torch.full((1, 1), -1.0, dtype=model.flat.dtype, device=model.flat.device)

    def __call__(self, Xb: torch.Tensor, Yb: torch.Tensor, lr: float) -> torch.Tensor:
        """Xb (B * block_size,) int64 contexts flattened, Yb (B,) int64.

        Returns the 0-d loss tensor (the mean cross-entropy before the update).
        """
        B = Yb.shape[0]
        # forward
        emb = self.C[Xb].view(B, -1)                         # (B, block_size * n_embd)
        h = tanh_(torch.addmm(self.b1, emb, self.W1))        # (B, n_hidden)
        logits = torch.addmm(self.b2, h, self.W2)            # (B, vocab)
        logp = torch.log_softmax(logits, 1)                  # (B, vocab)
        loss = F.nll_loss(logp, Yb)                          # mean cross-entropy, as F.cross_entropy
        # backward: d loss / d logits = (softmax - onehot) / B; the 1/B is folded into the update
        dlogits = logp.exp_()                                # (B, vocab), logp reused in place
        # minus the one-hot targets: p + (-1) is p - 1 exactly, and no (B, vocab) one-hot is built per step
        dlogits.scatter_add_(1, Yb.unsqueeze(1), self.minus_one.expand(B, 1))
        torch.mm(h.t(), dlogits, out=self.gW2)               # (n_hidden, vocab)
        torch.sum(dlogits, 0, out=self.gb2)                  # (vocab,)
        dh = torch.ops.aten.tanh_backward(torch.mm(dlogits, self.W2t), h)  # (B, n_hidden): dh * (1 - h**2)
        torch.mm(emb.t(), dh, out=self.gW1)                  # (block_size * n_embd, n_hidden)
        torch.sum(dh, 0, out=self.gb1)                       # (n_hidden,)
        demb = torch.mm(dh, self.W1t)                        # (B, block_size * n_embd)
        self.gC.zero_().index_add_(0, Xb, demb.view(-1, self.gC.shape[1]))  # (vocab, n_embd)
        # update: one fused op over every parameter
        # an lr past float32's range (a range test run far into divergence) makes the weights inf,
        # and the next loss non-finite, rather than an error converting alpha
        self.model.flat.add_(self.model.grad, alpha=max(-lr / B, -FLOAT32_MAX))
        return loss
