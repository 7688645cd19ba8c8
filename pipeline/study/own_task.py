"""A user's task in this process, as range_test and prove both build it: per seed, labelled, on its device, traceless.

    seeds = check_seeds(make, [1, 2, 3], fields, where="prove")   # checked, the caller's name in the message
    task = make_seeded(make, seed, task_args, where="prove")       # make(seed, **task_args), seeded first
    label, device = task_label(make), device_of(task.model, "auto", where="prove")
    with restored_globals(): ...                                   # random states and thread count kept

Every error names the function the user called (`where`): `prove: seeds=...`, not an inner helper's name.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from lrscan.pipeline.config import TrainConfig
from lrscan.pipeline.errors import LrscanError
from lrscan.pipeline.train import rngstate
from lrscan.pipeline.train.task import Task, check_task, load_task, make_task


def check_seeds(task: Any, seeds: Any, fields: Mapping[str, Any], *, where: str) -> list[int] | None:
    """The seeds to run, checked (ints, numpy ints too, none repeated); None: one run at `seed=` or the default."""
    if seeds is not None and "seed" in fields:
        raise LrscanError(f"{where}: seed={fields['seed']!r} and seeds={seeds!r}: give one of them")
    if seeds is None:
        return None
    if isinstance(seeds, np.ndarray):
        seeds = seeds.tolist()
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Sequence):
        raise LrscanError(f"{where}: seeds={seeds!r}: expected a list of ints, e.g. seeds=[1, 2, 3]")
    seeds = list(seeds)
    bad = [s for s in seeds if isinstance(s, bool) or not isinstance(s, (int, np.integer))]
    if not seeds or bad:
        raise LrscanError(f"{where}: seeds={seeds!r}: expected a non-empty list of ints, e.g. seeds=[1, 2, 3]")
    repeated = sorted({int(s) for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise LrscanError(f"{where}: seeds={seeds!r}: seed(s) {repeated} repeated (a seed is one paired unit; "
                          f"repeating it measures nothing new)")
    if isinstance(task, Task) and len(seeds) > 1:
        raise LrscanError(f"{where}: seeds={seeds!r} needs a function make(seed) -> Task, one model per seed; "
                          f"a Task is one model")
    return [int(s) for s in seeds]


def check_lrs(lrs: Any, *, where: str) -> list[float]:
    """Learning rates as given (a list, a tuple or a numpy array of positive finite numbers, numpy floats too),
    in order, exactly: never rounded or replaced. The one check of lrs, analysis.candidates'."""
    from lrscan.analysis.candidates import check_lrs as checked

    return list(checked(lrs, where))


def make_seeded(task: Any, seed: int, task_args: Mapping[str, Any], *, where: str) -> Task:
    """The seed's task: a function and a spec are built by `make_task`, as `--task` builds one (seeded first)."""
    if isinstance(task, Task):
        return check_task(task, where=f"{where}(task)")
    if isinstance(task, str):
        return load_task(task, seed, task_args)
    if callable(task):
        return make_task(task, seed, task_args, where=where)
    raise LrscanError(f"{where}: task is a {type(task).__name__}; expected a pipeline.Task, a function "
                      f"make(seed) -> Task or 'path/to/file.py:make'")


def task_label(task: Any) -> str:
    """What the runs' config records as `task`: a spec that loads it where there is one, else what it was."""
    if isinstance(task, str):
        return task
    if isinstance(task, Task):
        return f"(Task object):{type(task.model).__name__}"
    module, name = getattr(task, "__module__", None), getattr(task, "__qualname__", None)
    if module and name:
        return f"{module}:{name}"
    return f"(function):{type(task).__name__}"


def device_of(model: torch.nn.Module, asked: str | None, *, where: str) -> str:
    """The device the runs record: the model's own (a task trains where its model is; it is never moved)."""
    device = next(model.parameters()).device
    if asked not in (None, "auto") and torch.device(asked).type != device.type:
        raise LrscanError(f"{where}: device={asked!r} but the model is on {device}: a task trains where its model "
                          f"is (move it in make, e.g. model.to({asked!r}))")
    if device.type not in ("cpu", "cuda"):
        return asked or TrainConfig.__dataclass_fields__["device"].default  # TrainConfig names cpu and cuda only
    return str(device)


@contextmanager
def restored_globals() -> Iterator[None]:
    """The global random states and torch's thread count as they were, whatever happens inside."""
    rng, threads = rngstate.capture(), torch.get_num_threads()
    try:
        yield
    finally:
        rngstate.restore(rng)
        torch.set_num_threads(threads)
