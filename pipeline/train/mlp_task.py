"""The makemore MLP as a Task: the same parameters, init and batches as the default task, trained with autograd.

    python -m pipeline.train --task=pipeline.train.mlp_task:make --task_args="{'n_hidden': 200}"

The default task trains this model with a hand-written step (pipeline/train/makemore.py); this is the
same model as any user would write it, an nn.Module with torch.optim.SGD, so the generic path can be
checked against the fast one (equal per-step losses within float tolerance) and measured beside it.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from lrscan.pipeline import keys
from lrscan.pipeline.config import default_data_path
from lrscan.pipeline.train.data import SAMPLING_BLOCK_STEPS, batch_indices, load_splits
from lrscan.pipeline.train.model import MLP, PARAM_NAMES
from lrscan.pipeline.train.task import Task


class MakemoreMLP(nn.Module):
    """C, W1, b1, tanh, W2, b2 as parameters, initialised exactly as `model.MLP.create` does."""

    def __init__(self, vocab_size: int, block_size: int, n_embd: int, n_hidden: int, *, seed: int,
                 init: str = "lecture"):
        super().__init__()
        ref = MLP.create(vocab_size, block_size, n_embd, n_hidden, seed=seed, init=init)
        for name, value in ref.params().items():
            self.register_parameter(name, nn.Parameter(value.clone()))

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        emb = self.C[X]                                               # (B, block_size, n_embd)
        h = torch.tanh(emb.view(X.shape[0], -1) @ self.W1 + self.b1)  # (B, n_hidden)
        return h @ self.W2 + self.b2                                  # (B, vocab)


def make(seed: int, *, data: str = "", block_size: int = 3, split_seed: int = 42, n_embd: int = 2,
         n_hidden: int = 100, init: str = "lecture", batch_size: int = 32, device: str = "cpu") -> Task:
    """The default task's model, data and batches (TrainConfig's defaults) as a Task with torch.optim.SGD."""
    splits = load_splits(data or default_data_path(), block_size, split_seed)
    Xtr, Ytr = (t.to(device) for t in splits.train)
    Xdev, Ydev = (t.to(device) for t in splits.dev)
    model = MakemoreMLP(len(splits.vocab), block_size, n_embd, n_hidden, seed=seed, init=init).to(device)
    assert tuple(name for name, _ in model.named_parameters()) == PARAM_NAMES
    # the lr is set by the trainer at every step
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    cache: dict[str, object] = {"block": -1, "ix": None}

    def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        # the default task's minibatches: drawn per block of steps from a generator seeded by (seed, block)
        block = step // SAMPLING_BLOCK_STEPS
        if cache["block"] != block:
            cache["block"] = block
            cache["ix"] = batch_indices(seed, block * SAMPLING_BLOCK_STEPS, SAMPLING_BLOCK_STEPS, Xtr.shape[0],
                                        batch_size).to(device)
        ix = cache["ix"][step - block * SAMPLING_BLOCK_STEPS]
        return Xtr[ix], Ytr[ix]

    def loss_fn(m: nn.Module, b: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        X, Y = b
        return F.cross_entropy(m(X), Y)

    def evaluate(m: nn.Module) -> dict[str, float]:
        return {keys.DEV_LOSS: F.cross_entropy(m(Xdev), Ydev).item()}

    return Task(model=model, optimizer=optimizer, batches=batch, loss_fn=loss_fn, evaluate=evaluate)
