"""K makemore MLPs stacked in one buffer and trained by one batched hand-written step (bmm/baddbmm).

    flat = (K, P)                               # member k's parameters in row k, PARAM_NAMES order
    emb = C[k][X[k]]                            # (K, B, block_size * n_embd)
    h = tanh(baddbmm(b1, emb, W1))              # (K, B, n_hidden)
    logits = baddbmm(b2, h, W2)                 # (K, B, vocab)

Member k's row holds exactly what `pipeline.train.model.MLP.flat` holds for that member alone, so a
row is checkpointed, evaluated and sampled as a lone MLP (`member`). `StackedSGDStep` is
`pipeline.train.model.SGDStep` with every op batched over the K members and a (K,) tensor of lrs:
the per-op overhead that dominates a step of this small model is paid once for the K members.
That is the step on CUDA; on the CPU the pack takes NumPy's step with the members on its first axis
(`pipeline.train.numpy_step.NumpySGDStep`, the single run's too), so a member's weights and losses
are those of its run alone, bit for bit.
Each member sees only its own rows (its batch, its parameters): members never mix. `StackedRun` is
the pack's stepper for the one loop (pipeline/train/stepper.py): each member's batches drawn from its
own (seed, step) with `batch_indices`, the K steps of a chunk batched, a replay of the members that
stopped inside it, their evaluations and final losses.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from lrscan.pipeline import keys
from lrscan.pipeline.config import TrainConfig
from lrscan.pipeline.train.data import Splits, batch_indices
from lrscan.pipeline.train.makemore import losses_text
from lrscan.pipeline.train.model import FLOAT32_MAX, MLP, PARAM_NAMES, NonFiniteModel, param_shapes, tanh_
from lrscan.pipeline.train.numpy_step import NumpySGDStep, alphas, batch_mean, numpy_steps
from lrscan.pipeline.train.stepper import report_line


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
        h = tanh_(torch.baddbmm(self.b1.unsqueeze(1), emb, self.W1))  # (K, B, n_hidden)
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


class StackedRun:
    """A pack's K makemore MLPs as the loop's stepper: row k of the stack is member k (`cfgs[k]`)."""

    def __init__(self, stack: StackedMLP, cfgs: list[TrainConfig], splits: Splits, device: torch.device):
        self.stack, self.cfgs, self.splits, self.device = stack, cfgs, splits, device
        # the step: NumPy's on the CPU (a member's numbers are its single run's, bit for bit), torch's on CUDA
        self.batch_size = cfgs[0].batch_size
        self.numpy_step = NumpySGDStep(stack, self.batch_size) if device.type == "cpu" else None
        self.step_fn = StackedSGDStep(stack) if self.numpy_step is None else None
        self.Xtr, self.Ytr = (t.to(device) for t in splits.train)
        self.n_params = stack.flat.shape[1]
        self._batches: list = []
        self._chunk_start: torch.Tensor | None = None
        self._stopped: dict[int, torch.Tensor] = {}  # the weights of members that stopped inside the last chunk

    def train_chunk(self, starts: list[int], lrs: np.ndarray, rewindable: bool) -> np.ndarray:
        n, K = lrs.shape
        B = self.cfgs[0].batch_size
        ix = torch.stack([batch_indices(cfg.seed, s, n, self.Xtr.shape[0], B) for cfg, s in zip(self.cfgs, starts)],
                         1).to(self.device)                                 # (n, K, B)
        Xc, Yc = self.Xtr[ix], self.Ytr[ix]                                 # (n, K, B, block_size), (n, K, B)
        Xc = Xc.view(n, K, -1)                                              # (n, K, B * block_size)
        self._chunk_start = self.stack.flat.clone() if rewindable else None
        self._stopped = {}
        if self.numpy_step is not None:
            self._batches = list(zip(Xc.numpy(), Yc.numpy(), alphas(lrs, B)))  # (K, B * T), (K, B), (K, 1) a step
            nll = np.empty((n, K, B), np.float32)
            numpy_steps(self.numpy_step, self._batches, nll)
        else:
            factors = self.step_fn.alphas(torch.from_numpy(lrs).to(self.device), B)  # (n, K)
            self._batches = list(zip(Xc.unbind(0), Yc.unbind(0), factors.unbind(0)))
            nll = torch.stack([self.step_fn(*batch) for batch in self._batches]).cpu().numpy()  # (n, K, B)
        return batch_mean(nll).astype(np.float64)                           # (n, K): each member's minibatch loss

    def replay(self, kept: dict[int, int]) -> None:
        # the stopped members' rows rewound to the chunk's start and trained again, alone in a small stack, up to
        # the step each keeps; the members that go on are not touched
        rows = sorted(kept)
        start = self._chunk_start[rows].clone()                             # (K', P)
        sub = StackedMLP(self.stack.vocab_size, self.stack.block_size, self.stack.n_embd, self.stack.n_hidden,
                         start, torch.zeros_like(start))
        if self.numpy_step is not None:
            numpy_step, index = NumpySGDStep(sub, self.batch_size), np.array(rows)
            nll = np.empty((1, len(rows), self.batch_size), np.float32)  # the replay's losses are not logged again

            def sub_step(X: np.ndarray, Y: np.ndarray, alpha: np.ndarray) -> None:
                numpy_steps(numpy_step, [(X, Y, alpha)], nll)
        else:
            sub_step, index = StackedSGDStep(sub), torch.tensor(rows, device=start.device)
        for j in range(max(kept.values())):
            X, Y, alpha = self._batches[j]
            sub_step(X[index], Y[index], alpha[index])
            for i, k in enumerate(rows):
                if kept[k] == j + 1:
                    self._stopped[k] = sub.flat[i].clone()

    def keep(self, rows: list[int]) -> StackedRun:
        return StackedRun(self.stack.keep(rows), [self.cfgs[k] for k in rows], self.splits, self.device)

    def model(self, k: int) -> MLP:
        """Member k as a lone MLP: its row, or its weights at its stop step when it stopped inside the last chunk."""
        return self.stack.member_of(self._stopped[k]) if k in self._stopped else self.stack.member(k)

    def evaluate(self, k: int) -> dict[str, float]:
        return {keys.DEV_LOSS: self.model(k).loss(*(t.to(self.device) for t in self.splits.dev))}

    def final_losses(self, ks: list[int]) -> dict[int, dict[str, float]]:
        """A summary's train loss is a pass over the whole training split (~0.5 s for the lecture's model on
        one core), and a pack's members usually end at the same step: one thread per member, up to the cores
        the members' own `num_threads` leave, each thread with the single run's thread count, so every loss
        is the number the member's single run gives."""
        num_threads = self.cfgs[ks[0]].num_threads
        # the cores this process may use (a Slurm allocation or taskset limits them), not the machine's
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        workers = max(1, min(len(ks), cores // max(1, num_threads)))

        def losses(k: int) -> dict[str, float]:
            torch.set_num_threads(num_threads)  # per thread: a new thread would take OpenMP's default
            model = self.model(k)
            return {key: model.loss(X.to(self.device), Y.to(self.device))
                    for key, (X, Y) in ((keys.TRAIN_LOSS, self.splits.train), (keys.DEV_LOSS, self.splits.dev),
                                        (keys.TEST_LOSS, self.splits.test))}

        if workers == 1:
            return {k: losses(k) for k in ks}
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return dict(zip(ks, pool.map(losses, ks)))

    def state(self, k: int) -> dict:
        return {"flat": self.model(k).flat.detach().cpu().clone()}

    def report(self, k: int, run_id: str, summary: dict, tail: str, samples: bool = True) -> None:
        print(report_line(run_id, losses_text(summary), tail), flush=True)
        cfg = self.cfgs[k]
        if cfg.samples and samples:
            g = torch.Generator().manual_seed(cfg.seed + 10)
            try:
                names = ["".join(self.splits.vocab.itos[i] for i in w) for w in self.model(k).sample(cfg.samples, g)]
                print(f"run {run_id} samples: " + ", ".join(names), flush=True)
            except NonFiniteModel as e:
                print(f"run {run_id} samples: none, the model diverged ({e})", flush=True)
