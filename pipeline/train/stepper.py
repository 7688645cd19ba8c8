"""The stepper: what the one loop asks of K >= 1 members' models, whatever they are and however they are stepped.

The loop (pipeline/train/loop.py) is the same recipe for every run; only this differs:

    MakemoreRun   pipeline/train/makemore.py    one makemore MLP, its hand-written fast step (K = 1)
    TaskRun       pipeline/train/generic.py     one task's model, autograd and its own optimizer (K = 1)
    StackedRun    pipeline/pack/stacked_mlp.py  K makemore MLPs stacked, one batched hand-written step
    FunctionalRun pipeline/pack/functional.py   K copies of a task, stepped together with torch.func

Member k is row k everywhere: of the losses, of `replay`, `evaluate`, `state`. A member's `state(k)`
is the single run's checkpoint content for it, so a run resumes alone or in a pack, both ways.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Stepper(Protocol):
    n_params: int

    def train_chunk(self, starts: list[int], lrs: np.ndarray, rewindable: bool) -> np.ndarray:
        """Train n steps of every member: member k from its step starts[k] with lrs[:, k] ((n, K) float64).
        Their losses, (n, K) float64, each the loss of the step's batch before its update.
        rewindable: keep the chunk's start, for `replay`."""

    def replay(self, kept: dict[int, int]) -> None:
        """The members k that stopped inside the last chunk: back to its start, then its first kept[k] steps
        again (the same batches and lrs), so their weights are those of their stop steps. Others: untouched."""

    def keep(self, rows: list[int]) -> Stepper:
        """The members `rows` only, in that order (the others left)."""

    def evaluate(self, k: int) -> dict[str, float]:
        """What member k's eval step logs (e.g. dev_loss); {} when there is nothing to evaluate."""

    def final_losses(self, ks: list[int]) -> dict[int, dict[str, float]]:
        """The final losses of the members ks for their summaries (side by side where that is faster)."""

    def state(self, k: int) -> dict:
        """Member k's weights (and optimizer, random states, ...) for its checkpoint, in the single run's format."""

    def report(self, k: int, run_id: str, summary: dict, tail: str, samples: bool = True) -> None:
        """Print member k's end: its losses, `tail` (speed, stop), its samples where it has any and `samples` asks
        (a run paused at a search's rung draws none: they come when it ends)."""


def report_line(run_id: str, losses: str, tail: str) -> str:
    """A member's end as `report` prints it: its losses (none when it made no held-out pass), then `tail`."""
    return f"run {run_id}: {losses + '  ' if losses else ''}({tail})"
