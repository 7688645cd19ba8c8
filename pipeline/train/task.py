"""What the trainer trains besides the makemore MLP: a Task (model, optimizer, batches, loss), loaded and checked.

    # my_task.py                                   python -m pipeline.train --task=my_task.py:make \\
    def make(seed, width=64):                          --task_args={'width': 64}
        torch.manual_seed(seed)
        model = Net(width)
        return Task(model, torch.optim.AdamW(model.parameters()), batches=lambda step: ..., loss_fn=...)

`make(seed, **task_args)` builds the task; the trainer sets the lr of every param group at every step
(keeping the groups' ratios), and logs, stops, checkpoints and resumes it like the MLP.

Every mistake a task can make that shows before training is found here, before a run exists, and
said in one line (an LrscanError): a path or function that is not there, arguments `make` does not
take, something that is not a Task, a model without parameters, an optimizer over other parameters,
batches that yield nothing, a loss that is not a scalar tensor. The last two need one real batch and
one real forward pass (`check_task`'s dry run); it leaves no trace (see `_dry_run`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.machinery
import importlib.util
import inspect
import itertools
import random
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lrscan.pipeline.errors import LrscanError
from lrscan.pipeline.train import rngstate


@dataclass
class Task:
    """A model, its optimizer, where its batches come from and how its loss is computed.

    batches: a function `batch(i) -> batch` (exact on resume: micro-batch i = step * accumulation_steps + j)
             or an iterable (a DataLoader, a list; restarted when exhausted; on resume re-created with
             iter() and fast-forwarded, so exact only if it yields the same batches every time)
    loss_fn: `loss_fn(model, batch) -> scalar tensor`, any forward and any loss
    evaluate: optional `evaluate(model) -> {"dev_loss": ..., ...}`, called at eval steps (all its values are
              logged there) and at the end (the summary), under torch.no_grad(), with the model's train/eval
              mode and the global random states put back after it
    scaler: an optional torch.amp.GradScaler (mixed precision: a step it skips is not a measured point)
    accumulation_steps: micro-batches per training step, each loss divided by it, one optimizer step
    notes: what the task's maker wants said with its results (an adapter: a scheduler it does not step);
           range_test's and prove's results carry them
    """

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    batches: Iterable[Any] | Callable[[int], Any]
    loss_fn: Callable[[torch.nn.Module, Any], torch.Tensor]
    evaluate: Callable[[torch.nn.Module], Mapping[str, float]] | None = None
    scaler: torch.amp.GradScaler | None = None
    accumulation_steps: int = 1
    notes: tuple[str, ...] = ()

    @property
    def batch_fn(self) -> Callable[[int], Any] | None:
        """The batch(i) function, or None when batches is an iterable."""
        return self.batches if callable(self.batches) else None


def load_task(spec: str, seed: int, task_args: Mapping[str, Any] | None = None) -> Task:
    """`spec` is "path/to/file.py:make" or "package.module:make"; returns the checked `make(seed, **task_args)`
    (built by `make_task`, as every route builds a task)."""
    return make_task(load_make(spec), seed, task_args, where=f"task={spec!r}")


def make_task(make: Callable[..., Any], seed: int, task_args: Mapping[str, Any] | None = None, *,
              where: str = "task") -> Task:
    """`make(seed, **task_args)`, checked: the one way every route builds a task (`--task`, a sweep point, a
    pack member, `range_test(make)`, `range_test("file.py:make")`).

    The arguments are checked against make's signature first, then python, numpy and torch are
    seeded with `seed` (`seed_everything`), so a make that forgets to seed still builds the same task
    every time: a seed's curve depends neither on the route nor on which seeds ran before it (and a
    resumed run continues the very task it was)."""
    task_args = dict(task_args or {})
    name = getattr(make, "__name__", type(make).__name__)
    try:
        inspect.signature(make).bind(seed, **task_args)
    except TypeError as e:
        raise LrscanError(f"{where}: make(seed, **task_args) with task_args={task_args!r} does not fit "
                          f"{name}{_signature(make)}: {e}") from None
    except ValueError:  # a builtin without a signature: let the call say it
        pass
    seed_everything(seed)
    return check_task(make(seed, **task_args), where=f"{where}: {name}(seed={seed}, ...)")


def seed_everything(seed: int) -> None:
    """python's, numpy's and torch's global generators (CPU and every CUDA device) seeded with `seed`."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # numpy takes 0 <= seed < 2**32
    torch.manual_seed(seed)       # seeds every CUDA device too


def lr_scales(optimizer: torch.optim.Optimizer) -> list[float]:
    """Each param group's lr as a multiple of the scheduled lr: the ratios the groups were built with.

    A group's built lr is its `initial_lr` where a scheduler recorded one (LambdaLR, OneCycleLR,
    CosineAnnealingLR ... set it when built, and may already have moved `lr`: a warm-up starts it at
    0), else its `lr`. The scheduled lr is that of the first group built with a non-zero lr (group 0
    unless it is frozen): a group built with lr 0 stays at 0. When every group was built with 0, every
    group gets the scheduled lr. The trainer, the packs and `RangeTestResult.apply` all use this rule.
    """
    built = [float(group.get("initial_lr", group["lr"])) for group in optimizer.param_groups]
    reference = next((lr for lr in built if lr != 0.0), 0.0)
    if reference == 0.0:
        return [1.0] * len(built)
    return [lr / reference for lr in built]


def set_lr(optimizer: torch.optim.Optimizer, lr: float, scales: list[float]) -> None:
    """lr x scale on each param group (in place when the group's lr is a tensor, as torch wants it kept one)."""
    for group, scale in zip(optimizer.param_groups, scales):
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(lr * scale)
        else:
            group["lr"] = lr * scale


def load_make(spec: str) -> Callable[..., Any]:
    """The function a task spec names, imported; an LrscanError when the file, module or function is not there."""
    target, colon, name = spec.strip().rpartition(":")
    if not colon or not target or not name.isidentifier():
        raise LrscanError(f"task={spec!r}: expected path/to/file.py:FUNCTION or package.module:FUNCTION")
    if target.endswith(".py") or "/" in target or "\\" in target:
        module = _module_from_file(spec, Path(target))
    else:
        module = _module_by_name(spec, target)
    make = getattr(module, name, None)
    if make is None:
        found = sorted(k for k, v in vars(module).items() if inspect.isfunction(v) and not k.startswith("_")
                       and getattr(v, "__module__", None) == module.__name__)
        raise LrscanError(f"task={spec!r}: {target} has no function {name!r} "
                          f"(its functions: {', '.join(found) if found else 'none'})")
    if not callable(make):
        raise LrscanError(f"task={spec!r}: {target}.{name} is a {type(make).__name__}, not a function")
    return make


def _module_from_file(spec: str, path: Path):
    if not path.is_file():
        raise LrscanError(f"task={spec!r}: task file {str(path)!r} does not exist")
    path = path.resolve()
    # as `python file.py` would: the file's folder is importable (its helpers beside it), and the module is
    # registered under a name that imports it again in another process: a DataLoader worker started with
    # spawn unpickles the task's Dataset by `module.Class`, with this process's sys.path
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    name = task_module_name(path)
    loaded = sys.modules.get(name)
    if loaded is not None and _file_of(loaded) == path:
        return loaded
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise LrscanError(f"task={spec!r}: cannot load {str(path)!r} as Python")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except SyntaxError as e:
        del sys.modules[name]
        raise LrscanError(f"task={spec!r}: {e.filename}, line {e.lineno}: {e.msg}") from None
    except BaseException:
        del sys.modules[name]
        raise
    return module


def task_module_name(path: Path) -> str:
    """The module name a task file loads under: its stem (`net.py` -> `net`), as `import net` from its folder
    names it, wherever the import system finds that name to be this very file; else (the stem is another
    module, e.g. a task file called random.py) a name of its own, stable across processes (a digest of the
    path, not hash(), which differs per process), which only this process knows."""
    path = path.resolve()
    stem = path.stem
    if stem.isidentifier():
        loaded = sys.modules.get(stem)
        if loaded is not None:
            if _file_of(loaded) == path:
                return stem
        else:
            found = importlib.machinery.PathFinder.find_spec(stem, sys.path)
            if found is not None and found.origin and Path(found.origin).resolve() == path:
                return stem
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:12]
    return f"lrscan_task_{stem if stem.isidentifier() else 'file'}_{digest}"


def _file_of(module) -> Path | None:
    file = getattr(module, "__file__", None)
    return Path(file).resolve() if file else None


def _module_by_name(spec: str, target: str):
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as e:
        if e.name is not None and (target == e.name or target.startswith(e.name + ".")):
            raise LrscanError(f"task={spec!r}: no module named {target!r} (a file is given as path/to/file.py:make)") \
                from None
        raise  # the task's module itself imports something missing: its traceback says where


def _signature(fn: Callable) -> str:
    try:
        return str(inspect.signature(fn))
    except (TypeError, ValueError):
        return "(...)"


def check_task(task: Any, *, where: str = "task") -> Task:
    """`task` as a Task the trainer can train, or an LrscanError naming the first thing wrong with it.

    Runs one real batch through loss_fn (see `_dry_run`). Returns the task to train: `task` itself,
    or, when its batches are a one-shot iterator (a generator), a copy whose batches put back the
    batch the dry run took."""
    if not isinstance(task, Task):
        raise LrscanError(f"{where} returned {_what(task)}, not a pipeline.Task")
    if not isinstance(task.model, torch.nn.Module):
        raise LrscanError(f"{where}: Task.model is {_what(task.model)}, not a torch.nn.Module")
    params = [p for p in task.model.parameters()]
    if not any(p.requires_grad for p in params):
        raise LrscanError(f"{where}: Task.model ({type(task.model).__name__}) has no parameters to train"
                          + (" (none requires grad)" if params else ""))
    if not isinstance(task.optimizer, torch.optim.Optimizer):
        raise LrscanError(f"{where}: Task.optimizer is {_what(task.optimizer)}, not a torch.optim.Optimizer")
    own = {id(p) for p in params}
    theirs = [p for group in task.optimizer.param_groups for p in group["params"]]
    foreign = sum(id(p) not in own for p in theirs)
    if foreign or not theirs:
        raise LrscanError(f"{where}: Task.optimizer is not over the model's parameters ({foreign} of its "
                          f"{len(theirs)} parameters are not the model's; build it from model.parameters())")
    if any("lr" not in group for group in task.optimizer.param_groups):
        raise LrscanError(f"{where}: Task.optimizer ({type(task.optimizer).__name__}) has no 'lr' in its param "
                          f"groups: the trainer sets the lr of every group")
    if not callable(task.loss_fn):
        raise LrscanError(f"{where}: Task.loss_fn is {_what(task.loss_fn)}, not a function loss_fn(model, batch)")
    if task.evaluate is not None and not callable(task.evaluate):
        raise LrscanError(f"{where}: Task.evaluate is {_what(task.evaluate)}, not a function evaluate(model) or None")
    if task.scaler is not None and not isinstance(task.scaler, torch.amp.GradScaler):
        raise LrscanError(f"{where}: Task.scaler is {_what(task.scaler)}, not a torch.amp.GradScaler or None")
    k = task.accumulation_steps
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise LrscanError(f"{where}: Task.accumulation_steps={k!r}: must be an int >= 1")
    if task.batch_fn is None and not isinstance(task.batches, Iterable):
        raise LrscanError(f"{where}: Task.batches is {_what(task.batches)}, not an iterable or a function batch(step)")
    return _dry_run(task, where)


def _dry_run(task: Task, where: str) -> Task:
    """One real batch and one forward pass through loss_fn, before any run exists; no trace left.

    The trainer draws every batch after this, so the check must not move anything a batch or a
    forward pass depends on, or a run would differ from its own resumption (which checks again):
    the global random states (dropout, a shuffling DataLoader's seed, the task's own draws) are
    captured before and restored after, the model's buffers (BatchNorm's running statistics) are
    put back, and gradients are not computed. batch(0) is asked for, which a function of the step
    answers the same later; an iterable is iterated afresh by the trainer (iter() again, the same
    first batch when it is deterministic), except a one-shot iterator (iter(x) is x), whose first
    batch is handed back in front of it.
    """
    rng = rngstate.capture()
    buffers = [(b, b.detach().clone()) for b in task.model.buffers()]
    try:
        if task.batch_fn is not None:
            batch = task.batch_fn(0)
            if batch is None:
                raise LrscanError(f"{where}: Task.batches(0) returned None: batch(step) must return a batch")
        else:
            iterator = iter(task.batches)
            try:
                batch = next(iterator)
            except StopIteration:
                raise LrscanError(f"{where}: Task.batches is empty: iterating it yields no batch") from None
            if iterator is task.batches:
                task = dataclasses.replace(task, batches=_PutBack(batch, iterator))
        loss = task.loss_fn(task.model, batch)
        if not isinstance(loss, torch.Tensor):
            raise LrscanError(f"{where}: Task.loss_fn(model, batch) returned {_what(loss)}, not a scalar tensor")
        if loss.numel() != 1:
            raise LrscanError(f"{where}: Task.loss_fn(model, batch) returned a tensor of shape {tuple(loss.shape)}, "
                              f"not a scalar (reduce it, e.g. with .mean())")
        if not loss.is_floating_point():
            raise LrscanError(f"{where}: Task.loss_fn(model, batch) returned a {loss.dtype} tensor, not a float")
        if not loss.requires_grad:
            raise LrscanError(f"{where}: Task.loss_fn(model, batch) returned a loss that does not depend on the "
                              f"model's parameters (it does not require grad)")
    finally:
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)
        rngstate.restore(rng)
    return task


class _PutBack(Iterator):
    """A one-shot iterator with the batch the dry run took put back in front of it."""

    def __init__(self, first: Any, rest: Iterator):
        self._it = itertools.chain([first], rest)

    def __next__(self) -> Any:
        return next(self._it)


def _what(value: Any) -> str:
    if value is None:
        return "None"
    text = repr(value)
    return f"{type(value).__name__} {text[:60] + '...' if len(text) > 60 else text}"
