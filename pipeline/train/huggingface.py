"""A Hugging Face Trainer as a Task: its model, its own optimizer and param groups, its data, its compute_loss.

    import lrscan
    task = lrscan.task_from_hf_trainer(trainer)                 # one model: lrscan.range_test(task)
    make_task = lrscan.task_from_hf_trainer(make)               # make(seed) -> Trainer: seeds, prove
    proof = lrscan.range_test(make_task, seeds=[1, 2, 3]).prove(steps=500)
    lrscan.apply_lr(proof, training_args)                       # TrainingArguments.learning_rate

What the Task does with the trainer's objects, as `Trainer.train` would:
- the optimizer is the trainer's own: the one given as `optimizers=(optimizer, scheduler)` (copied,
  its param groups and state kept, so the trainer's is never stepped), else the one
  `trainer.create_optimizer()` builds (`optim`, its weight-decay groups, a subclass's override);
  lrscan sets the lr of every step keeping the groups' ratios, and the trainer's scheduler
  (`lr_scheduler_type`, warm-up) is not stepped: the Task's notes say so;
- the loss is `trainer.compute_loss(model, batch)`: `model(**batch).loss`, or a subclass's own loss,
  label smoothing, compute_loss_func;
- the train batches are the trainer's train dataloader's (its sampler, batch size, collator and the
  removal of columns the model's forward does not take), batch i a function of (seed, i)
  (pipeline/train/adapters.py), on the model's device;
- the held-out loss (`dev_loss`, what prove judges by) is compute_loss over the eval dataloader in
  eval mode, batches weighted by size as the trainer's eval_loss is;
- from TrainingArguments: bf16 (autocast), fp16 (autocast and a GradScaler),
  gradient_accumulation_steps, max_grad_norm (clipping by norm before each step).

Refused in one line naming it: DeepSpeed, FSDP, several processes or GPUs. Nothing the user passed is
changed: the trainer's attributes (its optimizer slot, caches, the accelerator's list of prepared
dataloaders) are put back after the adapter reads them, and range_test restores the model's
weights and modes and the global random states.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch

from lrscan.pipeline.errors import LrscanError
from lrscan.pipeline.train import rngstate
from lrscan.pipeline.train.adapters import (
    NOT_STEPPED,
    batches_of,
    clip_gradients,
    kept_attributes,
    mixed_precision,
    note,
    own_optimizer,
    set_optimizer_lr,
    task_factory,
    to_device,
    unscheduled,
)
from lrscan.pipeline.train.task import Task

TRAINER_KEYWORDS = ("model", "args", "train_dataset", "eval_dataset", "data_collator", "processing_class")


def task_from_hf_trainer(trainer: Any = None, *, seed: int | None = None, **trainer_kwargs: Any):
    """An HF `Trainer` as a `Task`; or, given `make(seed)`, a function `make_task(seed) -> Task`.

    Parameters
    ----------
    trainer : transformers.Trainer, or a function make(seed, **task_args)
        The trainer (its model trained in place by range_test, which puts it back afterwards); or a
        function returning, for a seed, a Trainer or a dict of Trainer keywords (model, args,
        train_dataset, eval_dataset, data_collator): the form range_test over seeds, prove, sweeps
        and `--task` need (each seed its own model).
    seed : int, optional
        The object form's batch order (default `args.seed`; the factory form uses each seed).
    **trainer_kwargs
        Instead of a trainer: model=, args=, train_dataset=, eval_dataset=, data_collator=, as
        `Trainer(...)` takes them (a Trainer is built from them, the global random states kept).
    """
    if trainer is None and trainer_kwargs:
        return _task(_trainer(trainer_kwargs, "task_from_hf_trainer"), seed=seed)
    if trainer_kwargs:
        raise LrscanError(f"task_from_hf_trainer: give a Trainer or its keywords, not both "
                          f"({', '.join(sorted(trainer_kwargs))} beside {type(trainer).__name__})")
    if _is_trainer(trainer):
        return _task(trainer, seed=seed)
    if callable(trainer) and not isinstance(trainer, torch.nn.Module):
        def build(made: Any, seed: int) -> Task:
            if isinstance(made, Mapping):
                made = _trainer(made, "task_from_hf_trainer(make)")
            if not _is_trainer(made):
                raise LrscanError(f"task_from_hf_trainer(make): make(seed) returned {type(made).__name__}; expected a "
                                  f"transformers.Trainer or a dict of its keywords (model, args, train_dataset, ...)")
            return _task(made, seed=seed)

        return task_factory(trainer, build, "task_from_hf_trainer")
    raise LrscanError(f"task_from_hf_trainer: {type(trainer).__name__} is neither a transformers.Trainer nor a "
                      f"function make(seed) returning one")


def apply_lr(lr: float, target: Any) -> float:
    """lr where an HF user sets it: `TrainingArguments.learning_rate` (a Trainer's args), and the trainer's optimizer
    when it has one (every param group, keeping their ratios)."""
    args = target.args if _is_trainer(target) else target
    if not hasattr(args, "learning_rate"):
        raise LrscanError(f"apply_lr: {type(target).__name__} has no learning_rate (expected TrainingArguments or a "
                          f"Trainer)")
    args.learning_rate = lr
    if _is_trainer(target) and getattr(target, "optimizer", None) is not None:
        set_optimizer_lr(lr, target.optimizer)
    return lr


def _trainer(kwargs: Mapping[str, Any], where: str) -> Any:
    """A Trainer built from its keywords, leaving the global random states as they were (its __init__ seeds them)."""
    from transformers import Trainer

    unknown = sorted(set(kwargs) - set(TRAINER_KEYWORDS))
    if unknown:
        raise LrscanError(f"{where}: {', '.join(map(repr, unknown))} not among the Trainer keywords lrscan takes "
                          f"({', '.join(TRAINER_KEYWORDS)}); build the Trainer yourself and pass it")
    rng = rngstate.capture()
    try:
        return Trainer(**kwargs)
    finally:
        rngstate.restore(rng)


def _task(trainer: Any, *, seed: int | None) -> Task:
    model, args = trainer.model, trainer.args
    where = f"task_from_hf_trainer({type(model).__name__})"
    _refuse(trainer, where)
    notes: list[str] = []
    device = next(model.parameters()).device
    with _kept(trainer):
        train = trainer.get_train_dataloader()
        evaluation = trainer.get_eval_dataloader() if trainer.eval_dataset is not None else None
        if trainer.optimizer is not None:
            optimizer = own_optimizer(_unwrapped(trainer.optimizer, "optimizer"), model)
        else:
            optimizer = unscheduled(trainer.create_optimizer())
    if trainer.lr_scheduler is not None:
        scheduler = type(_unwrapped(trainer.lr_scheduler, "scheduler")).__name__
        note(notes, f"the Trainer's {scheduler} {NOT_STEPPED}")
    else:
        warm_up = f", warm-up {args.warmup_steps} steps" if getattr(args, "warmup_steps", 0) else ""
        kind = str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type))
        note(notes, f"the Trainer's lr_scheduler_type={kind!r}{warm_up} {NOT_STEPPED}")
    clip_gradients(optimizer, args.max_grad_norm if args.max_grad_norm and args.max_grad_norm > 0 else None, "norm")
    dtype = torch.bfloat16 if args.bf16 else torch.float16 if args.fp16 else None

    def prepare(batch: Any) -> Any:
        return to_device(batch, device)

    batches = batches_of(train, args.seed if seed is None else seed, prepare)

    def loss_fn(model: Any, batch: Any) -> torch.Tensor:
        loss = trainer.compute_loss(model, dict(batch))  # a copy: label smoothing pops "labels" from it
        return loss.mean() if loss.numel() > 1 else loss  # DataParallel's per-GPU losses, as the trainer means them

    evaluate = None if evaluation is None else _evaluator(trainer, evaluation, prepare, dtype, device)
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
    return Task(model=model, optimizer=optimizer, batches=batches, loss_fn=mixed_precision(loss_fn, device.type, dtype),
                evaluate=evaluate, scaler=scaler, accumulation_steps=int(args.gradient_accumulation_steps),
                notes=tuple(notes))


def _refuse(trainer: Any, where: str) -> None:
    """What the adapter cannot honour, in one line."""
    if getattr(trainer, "is_deepspeed_enabled", False):
        raise LrscanError(f"{where}: the Trainer runs DeepSpeed (TrainingArguments.deepspeed); lrscan trains one "
                          f"process's model: run the range test without it")
    if getattr(trainer, "is_fsdp_enabled", False):
        raise LrscanError(f"{where}: the Trainer runs FSDP (TrainingArguments.fsdp); lrscan trains one process's "
                          f"model: run the range test without it")
    args = trainer.args
    if args.world_size > 1 or args.n_gpu > 1:
        raise LrscanError(f"{where}: the Trainer trains on {max(args.world_size, args.n_gpu)} processes or GPUs; "
                          f"lrscan trains on one device (CUDA_VISIBLE_DEVICES=0, one process)")
    if trainer.model is None:
        raise LrscanError(f"{where}: the Trainer has no model (model_init builds it at train()): give model=")


def _evaluator(trainer: Any, loader: Any, prepare: Callable[[Any], Any], dtype: torch.dtype | None,
               device: torch.device) -> Callable[[Any], dict[str, float]]:
    """evaluate(model) -> {"dev_loss": compute_loss over the eval loader, batches weighted by their size}."""

    def evaluate(model: Any) -> dict[str, float]:
        model.eval()  # as the trainer evaluates; the trainer puts every module's mode back after
        total, count = 0.0, 0
        for batch in loader:
            batch = prepare(batch)
            size = _size(batch)
            autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
            with autocast:
                loss = trainer.compute_loss(model, dict(batch))
            total += float(loss.float().mean()) * size
            count += size
        if not count:
            raise LrscanError("task_from_hf_trainer: the eval dataset gives no batch")
        return {"dev_loss": total / count}

    return evaluate


def _size(batch: Mapping[str, Any]) -> int:
    """A batch's number of examples: the first dimension of its first tensor."""
    for value in batch.values():
        if isinstance(value, torch.Tensor) and value.ndim > 0:
            return int(value.shape[0])
    return 1


@contextlib.contextmanager
def _kept(trainer: Any) -> Iterator[None]:
    """The trainer's and its accelerator's attributes, and the accelerator's list of prepared dataloaders, as before."""
    accelerator = getattr(trainer, "accelerator", None)
    prepared = getattr(accelerator, "_dataloaders", None)
    before = list(prepared) if isinstance(prepared, list) else None
    with kept_attributes(trainer, accelerator):
        try:
            yield
        finally:
            if before is not None:
                prepared[:] = before


def _unwrapped(obj: Any, inner: str) -> Any:
    """accelerate's AcceleratedOptimizer / AcceleratedScheduler (a trainer that has trained holds them) unwrapped."""
    while type(obj).__module__.split(".")[0] == "accelerate" and getattr(obj, inner, None) is not None:
        obj = getattr(obj, inner)
    return obj


def _is_trainer(obj: Any) -> bool:
    return obj is not None and any(c.__name__ == "Trainer" and c.__module__.split(".")[0] == "transformers"
                                   for c in type(obj).__mro__)
