"""Packed sweeps: many sweep points trained stacked in one process, each its own W&B run.

The makemore MLP through its hand-written step batched over the members (stacked_mlp.py); a task
whose copies torch.func can step exactly (plain SGD, batch(step), no buffers or randomness) through
vmap (functional.py); anything else is not packed and runs one process per point. Either way the
training is the single run's loop (pipeline/train/loop.py) driving K members through a stepper.

    python -m pipeline.pack POINTS.json
    from lrscan.pipeline.pack import train_pack

`train_pack` is loaded on first use (PEP 562): a pack's wandb logging process imports logger.py from this
package and must not pay for torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["train_pack"]


def __getattr__(name: str) -> Any:
    if name != "train_pack":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = importlib.import_module("lrscan.pipeline.pack.loop").train_pack
    globals()[name] = value
    return value
