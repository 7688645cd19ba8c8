"""The process's global random states (python, numpy, torch CPU and CUDA): captured, restored, checkpointed.

A task's own code may draw from any of them (dropout, a shuffling DataLoader, `random.choice` in a
batch function); a run that must continue bit for bit after a rewind or a resume, or a look at a task
that must leave no trace, saves and restores all four. `capture` is cheap (the trainer takes one per
micro-batch of an iterable while a chunk may be replayed); `for_checkpoint` turns one into plain
tensors and lists that a checkpoint loads with weights_only=True, and `restore` takes either form.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def capture() -> dict[str, Any]:
    """Every global random state, as the libraries give it (for `restore` in this process)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(legacy=True), "torch": torch.get_rng_state()}
    # only a process that has touched CUDA has CUDA states; reading them otherwise would initialise CUDA
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def for_checkpoint(state: dict[str, Any]) -> dict[str, Any]:
    """`state` as plain tensors, numbers and lists (a checkpoint loads them with weights_only=True)."""
    version, internal, gauss_next = state["python"]
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    return {
        **state,
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
        "numpy": {"kind": kind, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
    }


def restore(state: dict[str, Any]) -> None:
    """Put back what `capture` returned, here, or what `for_checkpoint` made of it, in any process."""
    py, npy = state["python"], state["numpy"]
    if isinstance(py, dict):  # from a checkpoint
        py = (py["version"], tuple(py["internal"]), py["gauss_next"])
        npy = (npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"], npy["gauss"])
    random.setstate(py)
    np.random.set_state(npy)
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
