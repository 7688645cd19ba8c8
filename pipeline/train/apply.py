"""Where a found lr goes: the place the user sets theirs (an optimizer, a LightningModule's hparams, TrainingArguments).

    proof = lrscan.range_test(make_task, seeds=[1, 2, 3]).prove(horizon=500)
    lrscan.apply_lr(proof, model)            # a LightningModule: model.hparams.lr, as lr_find(update_attr=True)
    lrscan.apply_lr(proof, training_args)    # HF: TrainingArguments.learning_rate
    lrscan.apply_lr(result, optimizer)       # any torch optimizer: every param group, their ratios kept

The libraries are recognised by their classes' names and modules, so neither is imported unless the
target is one of theirs.
"""

from __future__ import annotations

import numbers
from typing import Any

import torch

from lrscan.pipeline.errors import LrscanError
from lrscan.pipeline.train.adapters import set_optimizer_lr


def apply_lr(lr: Any, target: Any, *, attr_name: str = "") -> float:
    """Set a found lr where the user sets theirs; returns the lr set.

    lr: a number, or a result with `best_lr` (a RangeTestResult's pick, a Proof's proven lr).
    target: a torch optimizer (every param group, keeping their ratios and a scheduler's initial_lr,
    as `RangeTestResult.apply` does); a LightningModule (its `lr`/`learning_rate`, in hparams or as an
    attribute, as Lightning's `lr_find(update_attr=True)` sets it); an HF `TrainingArguments` or
    `Trainer` (`args.learning_rate`, and the trainer's optimizer when it has one).
    attr_name: the LightningModule's attribute or hparam to set, as lr_find's attr_name (default lr, learning_rate).
    """
    value = getattr(lr, "best_lr", lr)
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        shown = repr(lr) if isinstance(lr, (int, float, str)) or lr is None else type(lr).__name__
        raise LrscanError(f"apply_lr: {shown} is not a learning rate > 0 (nor a result with best_lr)")
    value = float(value)
    if isinstance(target, torch.optim.Optimizer):
        return set_optimizer_lr(value, target)
    if isinstance(target, torch.nn.Module) and hasattr(target, "training_step") \
            and hasattr(target, "configure_optimizers"):
        from lrscan.pipeline.train.lightning import apply_lr as to_lightning

        return to_lightning(value, target, attr_name)
    if type(target).__module__.split(".")[0] == "transformers":
        from lrscan.pipeline.train.huggingface import apply_lr as to_hf

        return to_hf(value, target)
    if attr_name:
        raise LrscanError(f"apply_lr: attr_name={attr_name!r} names a LightningModule's attribute; "
                          f"{type(target).__name__} is not one")
    raise LrscanError(f"apply_lr: {type(target).__name__} is none of a torch optimizer, a LightningModule, an HF "
                      f"Trainer or TrainingArguments")
