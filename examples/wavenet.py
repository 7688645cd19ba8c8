"""A task beyond the MLP: makemore part 5's WaveNet-style model on names.txt, trained with AdamW.

    python -m pipeline.train --task=examples/wavenet.py:make --task_args="{'n_embd': 24}" --steps=1000
    python -m pipeline.study --task=examples/wavenet.py:make --lre_min=-5 --lre_max=-1
    python examples/wavenet.py                     # a range test over 3 seeds from Python, figure to wavenet.png

The lecture's model: 8 characters of context are embedded, then fused two at a time, three times
(8 -> 4 -> 2 -> 1), each fusion a Linear, a BatchNorm and a tanh, so the receptive field grows
like a dilated causal convolution. Built from torch.nn parts and trained with AdamW (weight decay
on the matrices only, as nanoGPT does), so the range test sees another optimizer, param groups,
BatchNorm buffers and autograd, none of which the hand-written MLP has.

`batch(i)` draws minibatch i from a generator seeded by (seed, i): a function of the index alone,
so a resumed run sees exactly the batches it would have seen (exact resume).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from lrscan.pipeline.config import default_data_path
from lrscan.pipeline.errors import LrscanError, exit_with
from lrscan.pipeline.train.data import load_splits
from lrscan.pipeline.train.task import Task


class FlattenConsecutive(nn.Module):
    """(B, T, C) -> (B, T/n, C*n): fuse n neighbouring positions; the last fusion drops the time axis."""

    def __init__(self, n: int):
        super().__init__()
        self.n = n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        x = x.reshape(B, T // self.n, C * self.n)
        return x.squeeze(1) if x.shape[1] == 1 else x


class BatchNormLast(nn.BatchNorm1d):
    """BatchNorm over the last axis, statistics over every other one (the lecture's 3-d BatchNorm1d)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:  # (B, T, C): torch's BatchNorm1d wants the channels second
            return super().forward(x.transpose(1, 2)).transpose(1, 2)
        return super().forward(x)


def wavenet(vocab_size: int, block_size: int, n_embd: int, n_hidden: int) -> nn.Sequential:
    levels = int(math.log2(block_size))
    layers: list[nn.Module] = [nn.Embedding(vocab_size, n_embd)]
    width = n_embd
    for _ in range(levels):
        layers += [FlattenConsecutive(2), nn.Linear(width * 2, n_hidden, bias=False), BatchNormLast(n_hidden),
                   nn.Tanh()]
        width = n_hidden
    layers.append(nn.Linear(n_hidden, vocab_size))
    model = nn.Sequential(*layers)
    with torch.no_grad():
        model[-1].weight *= 0.1  # a less confident last layer: the first losses start near log(vocab)
    return model


def make(seed: int, *, data: str | None = None, block_size: int = 8, n_embd: int = 24, n_hidden: int = 128,
         batch_size: int = 32, weight_decay: float = 0.01, split_seed: int = 42, device: str = "cpu") -> Task:
    """The lecture's WaveNet (block_size 8, n_embd 24, n_hidden 128: 76k parameters) as a Task.

    data: the word list; default: found as the trainer finds its --data (`pipeline.config.default_data_path`:
    $LRSCAN_DATA, else data/names.txt here, else the set-up's copy), so it works from any folder. Split
    80/10/10 by `split_seed` as the MLP's.
    """
    if block_size < 2 or block_size & (block_size - 1):
        raise LrscanError(f"block_size={block_size}: must be a power of 2 >= 2 (the model fuses positions pairwise)")
    splits = load_splits(data or default_data_path(), block_size, split_seed)
    Xtr, Ytr = (t.to(device) for t in splits.train)
    held_out = {"dev_loss": splits.dev, "test_loss": splits.test}

    # the weights from the seed alone, without moving the caller's global random state
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = wavenet(len(splits.vocab), block_size, n_embd, n_hidden).to(device)
    # nanoGPT's split: weight decay on matrices and embeddings, none on biases and BatchNorm's gains
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=1e-3)

    def batch(i: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed((seed * 1_000_003 + i) % (2**63 - 1))
        ix = torch.randint(0, Xtr.shape[0], (batch_size,), generator=g).to(device)
        return Xtr[ix], Ytr[ix]

    def loss_fn(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        X, Y = batch
        return F.cross_entropy(model(X), Y)

    @torch.no_grad()
    def evaluate(model: nn.Module) -> dict[str, float]:
        was_training = model.training
        model.eval()  # BatchNorm uses its running statistics, as at inference
        try:
            return {name: F.cross_entropy(model(X.to(device)), Y.to(device)).item()
                    for name, (X, Y) in held_out.items()}
        finally:
            model.train(was_training)

    return Task(model=model, optimizer=optimizer, batches=batch, loss_fn=loss_fn, evaluate=evaluate)


def main(argv: list[str] | None = None) -> None:
    """A range test of this model over 3 seeds from Python, printed and drawn."""
    import argparse

    import matplotlib

    matplotlib.use("Agg")
    from lrscan.pipeline import range_test

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="word list (default: $LRSCAN_DATA, else data/names.txt here, else "
                                                "the set-up's copy, as the trainer finds it)")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 3])
    p.add_argument("--lre_min", type=float, default=-5.0)
    p.add_argument("--lre_max", type=float, default=-1.0)
    p.add_argument("--out", default="wavenet.png")
    args = p.parse_args(argv)
    data = args.data or default_data_path()  # the CLI's edge: the environment is read here
    try:
        result = range_test(make, seeds=args.seeds, steps=args.steps, lre_min=args.lre_min, lre_max=args.lre_max,
                            task_args={"data": data})
    except LrscanError as e:
        exit_with(e, "examples/wavenet.py")
    print(result)
    result.plot().figure.savefig(args.out, dpi=120)
    print(f"figure: {args.out}")


if __name__ == "__main__":
    main()
