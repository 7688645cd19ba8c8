"""A LightningModule and its data as a Task: training_step is the loss, configure_optimizers the optimizer.

    import lrscan
    task = lrscan.task_from_lightning(model, datamodule=dm)              # one model: lrscan.range_test(task)
    make_task = lrscan.task_from_lightning(make, trainer=trainer)       # make(seed) -> (model, dm): seeds, prove
    proof = lrscan.range_test(make_task, seeds=[1, 2, 3]).prove(steps=500)
    lrscan.apply_lr(proof, model)         # model.hparams.lr (or lr, learning_rate), as lr_find(update_attr=True)

What the Task does with the user's objects, as `Trainer.fit` would:
- the loss of a step is `training_step(batch, batch_idx)` (a tensor, or a dict's "loss"), each batch
  through the module's on_before_batch_transfer, transfer_batch_to_device and on_after_batch_transfer
  hooks; `self.log` calls in it are taken and dropped (lrscan logs the loss of every step itself);
- the optimizer and its param groups are those `configure_optimizers` returns (called once per Task,
  so the Task's optimizer is its own); a scheduler it returns is not stepped: lrscan sets the lr of
  every step (the range test's schedule, prove's horizon schedule), keeping the groups' ratios, and the
  Task's notes say so;
- the train batches come from a LightningDataModule (prepare_data, setup("fit"), train_dataloader),
  the dataloaders given, or the module's own train_dataloader: batch i is a function of (seed, i)
  (pipeline/train/adapters.py), batch_idx its place in its epoch;
- the held-out loss (`dev_loss`, what prove judges by) is the validation loader run through
  `validation_step` in eval mode: the logged `val_key` ("val_loss"), averaged over batches weighted
  by batch size as Lightning's epoch mean is, else the loss validation_step returns; every other
  name it logs is kept too;
- from the user's Trainer, when one is given: precision ("32-true", "16-mixed" with a GradScaler,
  "bf16-mixed"), accumulate_grad_batches, gradient_clip_val/gradient_clip_algorithm,
  limit_train_batches/limit_val_batches, and the device (a module `make` built is moved there).

Refused in one line naming it, before any run: manual optimization, several optimizers, a Trainer
with DeepSpeed or FSDP, several devices or nodes, another precision, a training_step that needs
`self.trainer`. Nothing the user passed is changed: a DataModule's and the module's attributes are
put back after their hooks, the Trainer is only read, and range_test restores the module's weights,
modes and the global random states. Other hooks (on_train_batch_start, on_after_backward,
optimizer_step overrides ...) are not called.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from lrscan.pipeline.errors import LrscanError
from lrscan.pipeline.train.adapters import (
    NOT_STEPPED,
    batches_of,
    clip_gradients,
    kept_attributes,
    mixed_precision,
    note,
    set_optimizer_lr,
    task_factory,
    unscheduled,
)
from lrscan.pipeline.train.generic import OWN_KEYS
from lrscan.pipeline.train.task import Task

PRECISIONS = {"32-true": None, "32": None, "16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}
LIBRARIES = ("lightning", "pytorch_lightning")  # the unified package and the standalone one
NO_TRAINER = "is not attached to a `Trainer`"  # Lightning's error when a hook reads self.trainer


def task_from_lightning(model: Any, train_dataloaders: Any = None, val_dataloaders: Any = None,
                        datamodule: Any = None, *, trainer: Any = None, val_key: str = "val_loss", seed: int = 0):
    """A LightningModule and its data as a `Task`; or, given `make(seed)`, a function `make_task(seed) -> Task`.

    Parameters
    ----------
    model : LightningModule, or a function make(seed, **task_args)
        The module (trained in place by range_test, which puts it back afterwards); or a function
        returning, for a seed, the module alone (its own *_dataloader hooks), `(module, datamodule)`,
        `(module, train_dataloader)` or `(module, train_dataloader, val_dataloader)`: the form range_test
        over seeds, prove, sweeps and `--task` need (each seed its own module).
    train_dataloaders, val_dataloaders, datamodule
        As `Trainer.fit` takes them (a LightningDataModule may come as train_dataloaders).
    trainer : lightning Trainer, optional
        Its precision, accumulate_grad_batches, gradient clipping, limit_*_batches and device are
        honoured; it is only read.
    val_key : str
        The name validation_step logs its loss under ("val_loss").
    seed : int
        The object form's batch order (the factory form uses each seed).
    """
    if _is(model, "LightningModule"):
        return _task(model, train_dataloaders, val_dataloaders, datamodule, trainer=trainer, val_key=val_key,
                     seed=seed, owned=False)
    if callable(model) and not isinstance(model, torch.nn.Module):
        if any(x is not None for x in (train_dataloaders, val_dataloaders, datamodule)):
            raise LrscanError("task_from_lightning(make, ...): make(seed) returns the data with the module, "
                              "e.g. `return model, datamodule`; pass no dataloaders or datamodule beside it")
        _settings(trainer, "task_from_lightning(make)")  # a trainer it cannot honour: said now, not per seed

        def build(made: Any, seed: int) -> Task:
            module, train, val, dm = _unpack(made)
            return _task(module, train, val, dm, trainer=trainer, val_key=val_key, seed=seed, owned=True)

        return task_factory(model, build, "task_from_lightning")
    raise LrscanError(f"task_from_lightning: {type(model).__name__} is neither a LightningModule nor a function "
                      f"make(seed) returning one")


def apply_lr(lr: float, module: Any, attr_name: str = "") -> float:
    """lr where Lightning's `lr_find(update_attr=True)` puts it: `attr_name`, else `lr` or `learning_rate`, on the
    module or in its hparams; and on the live optimizers of the Trainer it is attached to, keeping group ratios."""
    parsing = importlib.import_module(f"{_package(module)}.utilities.parsing")
    names = [attr_name] if attr_name else ["lr", "learning_rate"]
    found = next((name for name in names if parsing.lightning_hasattr(module, name)), None)
    if found is None:
        raise LrscanError(f"apply_lr: {type(module).__name__} has no {' or '.join(map(repr, names))} attribute or "
                          f"hparam to set (save_hyperparameters() with lr=..., or name one with attr_name=)")
    parsing.lightning_setattr(module, found, lr)
    trainer = getattr(module, "_trainer", None)
    for optimizer in getattr(trainer, "optimizers", None) or []:
        set_optimizer_lr(lr, optimizer)
    return lr


# -- the Task -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Settings:
    dtype: torch.dtype | None = None
    accumulate: int = 1
    clip: float | None = None
    clip_algorithm: str = "norm"
    limit_train: float | int = 1.0
    limit_val: float | int = 1.0
    device: torch.device | None = None


def _task(module: Any, train: Any, val: Any, dm: Any, *, trainer: Any, val_key: str, seed: int,
          owned: bool) -> Task:
    where = f"task_from_lightning({type(module).__name__})"
    if not getattr(module, "automatic_optimization", True):
        raise LrscanError(f"{where}: manual optimization (automatic_optimization=False): lrscan steps the optimizer "
                          f"itself and cannot set the lr of steps that training_step takes")
    settings = _settings(trainer, where)
    if owned and settings.device is not None:
        module.to(settings.device)  # a module make built: it trains on the trainer's device
    device = next(module.parameters()).device
    if _is(train, "LightningDataModule"):
        train, dm = None, train
    notes: list[str] = []
    train, val = _loaders(module, train, val, dm, where, notes)
    optimizer = _optimizer(module, where, notes)
    clip_gradients(optimizer, settings.clip, settings.clip_algorithm)

    def prepare(batch: Any) -> Any:
        with _needs_no_trainer(where, "its batch transfer hooks"):
            batch = module.on_before_batch_transfer(batch, 0)
            batch = module.transfer_batch_to_device(batch, device, 0)
            return module.on_after_batch_transfer(batch, 0)

    batches = batches_of(train, seed, prepare, _limit(settings.limit_train, train))

    def loss_fn(model: Any, batch: Any) -> torch.Tensor:
        with _needs_no_trainer(where, "training_step"), _logged(model):
            out = model.training_step(batch, batches.index)
        loss = out.get("loss") if isinstance(out, Mapping) else out
        if not isinstance(loss, torch.Tensor):
            raise LrscanError(f"{where}: training_step returned {type(out).__name__}"
                              f"{' without a loss' if isinstance(out, Mapping) else ''}: lrscan trains every step, "
                              f"so it needs the loss (a tensor, or a dict with 'loss')")
        return loss

    evaluate = None
    if val is not None and _overrides(module, "LightningModule", "validation_step"):
        evaluate = _evaluator(module, val, prepare, val_key, settings, device, where)
    elif val is not None:
        note(notes, "the validation data has no validation_step to run: no held-out loss (prove judges by the "
                    "training loss)")
    scaler = torch.amp.GradScaler(device.type) if settings.dtype == torch.float16 else None
    return Task(model=module, optimizer=optimizer, batches=batches,
                loss_fn=mixed_precision(loss_fn, device.type, settings.dtype), evaluate=evaluate, scaler=scaler,
                accumulation_steps=settings.accumulate, notes=tuple(notes))


def _settings(trainer: Any, where: str) -> _Settings:
    """What lrscan honours of a Trainer's arguments, or an LrscanError naming what it cannot."""
    if trainer is None:
        return _Settings()
    strategy = type(trainer.strategy).__name__
    if "DeepSpeed" in strategy or "FSDP" in strategy:
        raise LrscanError(f"{where}: the Trainer's {strategy} shards the model across processes; lrscan trains one "
                          f"process's model: give a single-device Trainer for the range test")
    if trainer.num_devices > 1 or trainer.num_nodes > 1:
        raise LrscanError(f"{where}: the Trainer runs on {trainer.num_devices} devices x {trainer.num_nodes} nodes "
                          f"({strategy}); lrscan trains on one device: give Trainer(devices=1)")
    precision = str(trainer.precision)
    if precision not in PRECISIONS:
        raise LrscanError(f"{where}: Trainer(precision={precision!r}): lrscan trains at "
                          f"{', '.join(map(repr, PRECISIONS))}")
    algorithm = trainer.gradient_clip_algorithm
    return _Settings(dtype=PRECISIONS[precision], accumulate=int(trainer.accumulate_grad_batches),
                     clip=trainer.gradient_clip_val or None,
                     clip_algorithm=str(getattr(algorithm, "value", algorithm) or "norm"),
                     limit_train=trainer.limit_train_batches, limit_val=trainer.limit_val_batches,
                     device=trainer.strategy.root_device)


def _unpack(made: Any) -> tuple[Any, Any, Any, Any]:
    """make(seed)'s return as (module, train, val, datamodule)."""
    parts = list(made) if isinstance(made, (tuple, list)) else [made]
    if not parts or not _is(parts[0], "LightningModule") or len(parts) > 3:
        raise LrscanError(f"task_from_lightning(make): make(seed) returned {type(made).__name__}; expected a "
                          f"LightningModule, (module, datamodule), (module, train_dataloader) or "
                          f"(module, train_dataloader, val_dataloader)")
    module, rest = parts[0], parts[1:] + [None] * (3 - len(parts))
    if _is(rest[0], "LightningDataModule"):
        return module, None, None, rest[0]
    return module, rest[0], rest[1], None


def _loaders(module: Any, train: Any, val: Any, dm: Any, where: str, notes: list[str]) -> tuple[Any, Any]:
    """The train and validation loaders, from the datamodule (its hooks run, its attributes put back), the
    loaders given, or the module's own *_dataloader hooks."""
    if dm is not None:
        with kept_attributes(dm), _needs_no_trainer(where, "the datamodule's hooks"):
            dm.prepare_data()
            dm.setup(stage="fit")
            train = dm.train_dataloader()
            if val is None and _overrides(dm, "LightningDataModule", "val_dataloader"):
                val = dm.val_dataloader()
    else:
        with kept_attributes(module), _needs_no_trainer(where, "its *_dataloader hooks"):
            if train is None and _overrides(module, "LightningModule", "train_dataloader"):
                train = module.train_dataloader()
            if val is None and _overrides(module, "LightningModule", "val_dataloader"):
                val = module.val_dataloader()
    if train is None:
        raise LrscanError(f"{where}: no training data: give a LightningDataModule, train_dataloaders, or a "
                          f"train_dataloader() in the module")
    if not hasattr(train, "__iter__") or isinstance(train, (Mapping, list, tuple)):
        raise LrscanError(f"{where}: the training data is a {type(train).__name__}; lrscan takes one DataLoader "
                          f"(not several combined)")
    if isinstance(val, (list, tuple)):
        if len(val) > 1:
            note(notes, f"the first of {len(val)} validation dataloaders gives the held-out loss")
        val = val[0] if val else None
    return train, val


def _optimizer(module: Any, where: str, notes: list[str]) -> torch.optim.Optimizer:
    """The one optimizer configure_optimizers returns (its schedulers noted: they are not stepped)."""
    with kept_attributes(module), _needs_no_trainer(where, "configure_optimizers"):
        out = module.configure_optimizers()
    optimizers, schedulers = _parse_optimizers(out)
    if len(optimizers) != 1 or not isinstance(optimizers[0], torch.optim.Optimizer):
        what = f"{len(optimizers)} optimizers" if len(optimizers) != 1 else type(optimizers[0]).__name__
        raise LrscanError(f"{where}: configure_optimizers returns {what}; lrscan sets the lr of one torch optimizer "
                          f"(several optimizers, e.g. a GAN's, cannot share one lr)")
    for scheduler in schedulers:
        scheduler = scheduler.get("scheduler") if isinstance(scheduler, Mapping) else scheduler
        if scheduler is not None:
            note(notes, f"the {type(scheduler).__name__} that configure_optimizers returns {NOT_STEPPED}")
    return unscheduled(optimizers[0])


def _parse_optimizers(out: Any) -> tuple[list[Any], list[Any]]:
    """configure_optimizers' return forms (Lightning's): an optimizer, a list of them, ([optimizers], [schedulers]),
    a dict with "optimizer" (and "lr_scheduler"), a list of such dicts."""
    if out is None:
        return [], []
    if isinstance(out, Mapping):
        return [out.get("optimizer")], [out.get("lr_scheduler")]
    if isinstance(out, (list, tuple)):
        if len(out) == 2 and all(isinstance(x, (list, tuple)) for x in out):
            return list(out[0]), list(out[1])
        if out and all(isinstance(x, Mapping) for x in out):
            return [x.get("optimizer") for x in out], [x.get("lr_scheduler") for x in out]
        return list(out), []
    return [out], []


def _evaluator(module: Any, val: Any, prepare: Any, val_key: str, settings: _Settings, device: torch.device,
               where: str):
    """evaluate(model) -> {"dev_loss": ..., <each name validation_step logs>: ...}, batches weighted by size."""
    limit = _limit(settings.limit_val, val)
    extract = importlib.import_module(f"{_package(module)}.utilities.data").extract_batch_size

    def evaluate(model: Any) -> dict[str, float]:
        model.eval()  # as Lightning validates; the trainer puts every module's mode back after
        sums: dict[str, float] = {}
        weights: dict[str, float] = {}
        for idx, batch in enumerate(val):
            if limit is not None and idx >= limit:
                break
            batch = prepare(batch)
            try:
                size = float(extract(batch))
            except Exception:  # a batch Lightning cannot size either: an even weight
                size = 1.0
            autocast = torch.autocast(device.type, dtype=settings.dtype) if settings.dtype is not None \
                else contextlib.nullcontext()
            with autocast, _needs_no_trainer(where, "validation_step"), _logged(model) as logged:
                out = model.validation_step(batch, idx)
            returned = out.get("loss", out.get(val_key)) if isinstance(out, Mapping) else out
            if isinstance(returned, torch.Tensor) and returned.numel() == 1:
                logged.append(("(returned)", returned, None))
            for name, value, batch_size in logged:
                number = _number(value)
                if number is not None:
                    weight = float(batch_size) if batch_size else size
                    sums[name] = sums.get(name, 0.0) + number * weight
                    weights[name] = weights.get(name, 0.0) + weight
        means = {name: sums[name] / weights[name] for name in sums if weights[name] > 0}
        dev = means.get(val_key, means.get("(returned)"))
        if dev is None:
            raise LrscanError(f"{where}: validation_step logged no {val_key!r} and returned no loss (it logged "
                              f"{sorted(n for n in means if n != '(returned)') or 'nothing'}): name its loss with "
                              f"val_key=")
        kept = {name: v for name, v in means.items() if name not in OWN_KEYS and name not in ("dev_loss", "(returned)")}
        return {"dev_loss": dev, **kept}

    return evaluate


def _number(value: Any) -> float | None:
    if hasattr(value, "compute") and not isinstance(value, torch.Tensor):  # a torchmetrics Metric
        value = value.compute()
    try:
        return float(value)
    except (TypeError, ValueError, RuntimeError):  # not a scalar: not a loss
        return None


# -- the user's module and its library ------------------------------------------------------------------


@contextlib.contextmanager
def _logged(model: Any) -> Iterator[list[tuple[str, Any, Any]]]:
    """model.log / model.log_dict taken for the block: the (name, value, batch_size) of each call, nothing sent on."""
    logged: list[tuple[str, Any, Any]] = []

    def log(name, value, *args, batch_size=None, **kwargs):
        logged.append((name, value, batch_size))

    def log_dict(dictionary, *args, batch_size=None, **kwargs):
        logged.extend((name, value, batch_size) for name, value in dictionary.items())

    own = {name: model.__dict__[name] for name in ("log", "log_dict") if name in model.__dict__}
    object.__setattr__(model, "log", log)
    object.__setattr__(model, "log_dict", log_dict)
    try:
        yield logged
    finally:
        for name in ("log", "log_dict"):
            model.__dict__.pop(name, None)
        model.__dict__.update(own)


@contextlib.contextmanager
def _needs_no_trainer(where: str, what: str) -> Iterator[None]:
    try:
        yield
    except RuntimeError as e:
        if NO_TRAINER in str(e):
            raise LrscanError(f"{where}: {what} uses self.trainer ({str(e).strip()}); lrscan calls it without a "
                              f"Trainer: read what it needs from elsewhere (hparams, an argument)") from None
        raise


def _limit(limit: float | int, loader: Any) -> int | None:
    """limit_*_batches as a number of batches per epoch (None: all)."""
    if isinstance(limit, float):
        if limit >= 1.0:
            return None
        try:
            return max(1, int(len(loader) * limit))
        except TypeError:
            return None
    return int(limit)


def _is(obj: Any, name: str) -> bool:
    """obj is an instance of Lightning's class `name`, from pytorch_lightning or lightning.pytorch alike."""
    return obj is not None and any(c.__name__ == name and c.__module__.split(".")[0] in LIBRARIES
                                   for c in type(obj).__mro__)


def _overrides(obj: Any, base_name: str, method: str) -> bool:
    base = next(c for c in type(obj).__mro__ if c.__name__ == base_name)
    return getattr(type(obj), method, None) is not getattr(base, method, None)


def _package(module: Any) -> str:
    """The Lightning package the module's class comes from: "pytorch_lightning" or "lightning.pytorch"."""
    base = next((c for c in type(module).__mro__ if c.__name__ == "LightningModule"), None)
    if base is None:
        raise LrscanError(f"{type(module).__name__} is not a LightningModule")
    return base.__module__.rsplit(".core", 1)[0]
