"""What the Lightning and Hugging Face adapters share: a DataLoader as batch(i), their precision, clipping, the factory.

An adapter (pipeline/train/lightning.py, pipeline/train/huggingface.py) turns a user's own objects
into a `Task`, so the trainer, the packs, range_test, prove and the study train them unchanged. The
parts here know neither library:

- `LoaderBatches`: a map-style DataLoader as a function batch(i). Epoch e = i // len(loader) is the
  loader's own batch sampler iterated once under the global random states seeded by (seed, e) (a
  RandomSampler, a LengthGroupedSampler draw their order from them), and batch i is the loader's
  collate_fn over its dataset items, so a batch depends on (seed, i) alone: exact resume, paired
  seeds across lrs, and packs where the model packs. An IterableDataset is iterated as it is.
  Items are fetched in this process: the loader's workers are not used.
- `mixed_precision`: the loss under torch.autocast (and a GradScaler for float16), as the
  libraries' "16-mixed"/"bf16-mixed" and fp16/bf16 train.
- `clip_gradients`: gradient clipping by norm or value before each optimizer step (a step
  pre-hook on the adapter's own optimizer, after a GradScaler has unscaled the gradients).
- `own_optimizer`: a copy of a user's optimizer over the same parameters (its state and param
  groups copied), so nothing the adapter adds to it reaches theirs.
- `kept_attributes`: an object's attributes as they were (a DataModule's setup, a Trainer's caches).
- `task_factory`: `make(seed) -> the user's objects` as `make(seed) -> Task`, for seeds and prove.
- `set_optimizer_lr`: a found lr on an optimizer's param groups, keeping their ratios.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch

from lrscan.pipeline.errors import LrscanError
from lrscan.pipeline.train.task import Task, lr_scales, set_lr

# what a Task's notes say of a scheduler the user's code builds: the adapters do not step it
NOT_STEPPED = ("is not stepped: lrscan sets the lr of every step itself (the range test's schedule, prove's "
               "horizon schedule), keeping the param groups' ratios")


class LoaderBatches:
    """A DataLoader's batches as batch(i), each a function of (seed, i); `index`: the last one's place in its epoch."""

    def __init__(self, loader: Any, seed: int, prepare: Callable[[Any], Any] = lambda batch: batch,
                 limit: int | None = None):
        self.loader, self.seed, self.prepare = loader, int(seed), prepare
        self.dataset, self.collate = loader.dataset, loader.collate_fn
        self.batch_sampler = getattr(loader, "batch_sampler", None)
        if self.batch_sampler is None or isinstance(self.dataset, torch.utils.data.IterableDataset):
            raise LrscanError(f"{type(loader).__name__} over {type(self.dataset).__name__}: not a map-style loader "
                              f"(an IterableDataset): use LoaderBatches.iterable")
        self.per_epoch = len(self.batch_sampler) if limit is None else min(limit, len(self.batch_sampler))
        if self.per_epoch < 1:
            raise LrscanError(f"the {type(loader).__name__} over {type(self.dataset).__name__} "
                              f"({len(self.dataset)} items) gives no batch")
        self.index = 0
        self._epoch: tuple[int, list[list[int]]] | None = None

    def order(self, epoch: int) -> list[list[int]]:
        """The epoch's batches as dataset indices: the batch sampler under random states seeded by (seed, epoch)."""
        if self._epoch is None or self._epoch[0] != epoch:
            seed = (self.seed * 1_000_003 + epoch) % (2**63 - 1)
            # a sampler with a generator of its own (DataLoader(generator=...)) draws from it: seeded the same way
            own = getattr(getattr(self.batch_sampler, "sampler", None), "generator", None)
            kept = own.get_state() if isinstance(own, torch.Generator) else None
            with torch.random.fork_rng(devices=[]), _python_and_numpy_forked():
                _seed_all(seed)
                if kept is not None:
                    own.manual_seed(seed)
                try:
                    self._epoch = (epoch, [list(ix) for _, ix in zip(range(self.per_epoch), self.batch_sampler)])
                finally:
                    if kept is not None:
                        own.set_state(kept)
        return self._epoch[1]

    def __call__(self, i: int) -> Any:
        epoch, self.index = divmod(int(i), self.per_epoch)
        return self.prepare(self.collate([self.dataset[j] for j in self.order(epoch)[self.index]]))

    @staticmethod
    def iterable(loader: Any, prepare: Callable[[Any], Any] = lambda batch: batch) -> _Enumerated:
        """An IterableDataset's loader as the Task's batches: iterated afresh each pass, `index` counted per pass."""
        return _Enumerated(loader, prepare)


class _Enumerated:
    def __init__(self, loader: Any, prepare: Callable[[Any], Any]):
        self.loader, self.prepare, self.index = loader, prepare, 0

    def __iter__(self) -> Iterator[Any]:
        for index, batch in enumerate(self.loader):
            self.index = index
            yield self.prepare(batch)


def batches_of(loader: Any, seed: int, prepare: Callable[[Any], Any], limit: int | None = None):
    """A loader as a Task's batches: batch(i) where it is map-style, else the loader iterated."""
    if getattr(loader, "batch_sampler", None) is None or isinstance(getattr(loader, "dataset", None),
                                                                    torch.utils.data.IterableDataset):
        return LoaderBatches.iterable(loader, prepare)
    return LoaderBatches(loader, seed, prepare, limit)


@contextlib.contextmanager
def _python_and_numpy_forked() -> Iterator[None]:
    import random

    import numpy as np

    python, numpy = random.getstate(), np.random.get_state()
    try:
        yield
    finally:
        random.setstate(python)
        np.random.set_state(numpy)


def _seed_all(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def to_device(batch: Any, device: torch.device) -> Any:
    """Every tensor in a batch (tensors, mappings such as an HF BatchEncoding, lists, tuples) on `device`."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, Mapping):
        moved = {k: to_device(v, device) for k, v in batch.items()}
        return moved if type(batch) is dict or not _rebuilds(batch) else type(batch)(moved)
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # a namedtuple
        return type(batch)(*(to_device(v, device) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def _rebuilds(mapping: Mapping) -> bool:
    try:
        type(mapping)({})
        return True
    except Exception:
        return False


def mixed_precision(loss_fn: Callable, device_type: str, dtype: torch.dtype | None) -> Callable:
    """loss_fn under torch.autocast(device_type, dtype); loss_fn itself when dtype is None (full precision)."""
    if dtype is None:
        return loss_fn

    @functools.wraps(loss_fn)
    def autocast_loss(model, batch):
        with torch.autocast(device_type=device_type, dtype=dtype):
            return loss_fn(model, batch)

    return autocast_loss


def clip_gradients(optimizer: torch.optim.Optimizer, value: float | None, algorithm: str = "norm") -> None:
    """Clip the gradients of `optimizer`'s parameters before each of its steps, by total norm or by value."""
    if not value:
        return
    if algorithm not in ("norm", "value"):
        raise LrscanError(f"gradient clipping algorithm {algorithm!r}: lrscan clips by 'norm' or 'value'")
    params = [p for group in optimizer.param_groups for p in group["params"]]

    def clip(opt, args, kwargs):
        if algorithm == "norm":
            torch.nn.utils.clip_grad_norm_(params, float(value))
        else:
            torch.nn.utils.clip_grad_value_(params, float(value))

    optimizer.register_step_pre_hook(clip)


def own_optimizer(optimizer: torch.optim.Optimizer, model: torch.nn.Module) -> torch.optim.Optimizer:
    """A copy of `optimizer` over the same parameters: its param groups and state copied, the parameters shared."""
    shared = {id(p): p for p in model.parameters()}
    shared.update({id(p): p for group in optimizer.param_groups for p in group["params"]})
    return unscheduled(copy.deepcopy(optimizer, memo=dict(shared)))


def unscheduled(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The optimizer without the step wrapper an lr scheduler built on it installs (a scheduler the adapter does
    not step): the wrapper only counts calls, for the scheduler's own warning, and in a copy it would step the
    original optimizer (it holds a reference to it); without it, a pack can step the optimizer."""
    step = vars(optimizer).get("step")
    if step is not None and getattr(step, "_wrapped_by_lr_sched", False):
        del vars(optimizer)["step"]
    return optimizer


@contextlib.contextmanager
def kept_attributes(*objects: Any) -> Iterator[None]:
    """Each object's attributes as they were after the block (the same values rebound, new ones removed)."""
    saved = [(obj, dict(vars(obj))) for obj in objects if obj is not None and hasattr(obj, "__dict__")]
    try:
        yield
    finally:
        for obj, before in saved:
            now = vars(obj)
            for name in [n for n in now if n not in before]:
                del now[name]
            for name, value in before.items():
                if now.get(name, _MISSING) is not value:
                    now[name] = value


_MISSING = object()


def task_factory(make: Callable[..., Any], build: Callable[[Any, int], Task], label: str) -> Callable[..., Task]:
    """`make(seed, **task_args)` (the user's objects) as `make_task(seed, **task_args) -> Task`: build(objects, seed).

    The returned function takes make's own arguments (range_test's task_args, `--task_args`), so
    range_test over seeds, prove, sweeps and `--task=file.py:make_task` build one Task per seed."""

    def make_task(seed: int, **task_args: Any) -> Task:
        return build(make(seed, **task_args), seed)

    try:
        make_task.__signature__ = inspect.signature(make)
    except (TypeError, ValueError):
        pass
    name = f"{getattr(make, '__module__', '?')}:{getattr(make, '__qualname__', type(make).__name__)}"
    make_task.__qualname__ = make_task.__name__ = f"{label}({name})"
    make_task.__module__ = getattr(make, "__module__", __name__)
    make_task.__doc__ = f"{label}: the Task that {name} builds, for a seed."
    return make_task


def note(notes: list[str], text: str) -> None:
    """A note for the Task (what the adapter did differently from the library), printed once per text."""
    if text not in notes:
        notes.append(text)


def set_optimizer_lr(lr: float, optimizer: torch.optim.Optimizer) -> float:
    """lr on every param group keeping their ratios (`task.lr_scales`), and on `initial_lr` where a scheduler keeps
    one, so a scheduler built afterwards starts from it (as `RangeTestResult.apply` does)."""
    scales = lr_scales(optimizer)
    set_lr(optimizer, lr, scales)
    for group, scale in zip(optimizer.param_groups, scales):
        if "initial_lr" in group:
            group["initial_lr"] = lr * scale
    return lr
