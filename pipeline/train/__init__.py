"""One training run: a TrainConfig in (the makemore MLP, or any model as a Task), every step logged, a summary out.

    python -m pipeline.train --schedule=range --lre_min=-3 --lre_max=0 --steps=1000
    python -m pipeline.train --task=path/to/file.py:make --task_args="{'width': 64}"
    from lrscan.pipeline.train import train; train(TrainConfig(...)); train(TrainConfig(...), task=Task(...))

The names are loaded on first use (PEP 562): the wandb logging process imports runwriter.py from this
package and must not pay for torch (~2.5 s of its start-up, before any row could be written).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"train": "lrscan.pipeline.train.loop", "Task": "lrscan.pipeline.train.task",
            "load_task": "lrscan.pipeline.train.task"}

__all__ = ["Task", "load_task", "train"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
