"""A pack of a user task's points: K copies of its model stepped at once with torch.func, each its own run.

    train_task_pack([Point.parse("t-0", ["--task=net.py:make", "--seed=1"]), ...])
    train_seeds(cfgs, tasks, on_steps)      # range_test's seeds, built in this process

Every member builds its own Task (make(its seed, **task_args)): its model, optimizer and batch(step)
function are its own, so its init and batches do not depend on its packmates. One training step
stacks the K parameter sets and buffers, asks each member's batch(step), runs the loss vmapped over
them through `functional_call` (a BatchNorm's running statistics update in place, member by member)
and one backward of the members' summed losses; then each member's optimizer step, torch.optim's own
arithmetic on the stacked tensors with each member's lr and state (pipeline/pack/updates.py: SGD, Adam,
AdamW, any param groups).

A task packs only when that is exactly what its single run does; `why_not_functional` says why not
otherwise, in one line, before any run exists: an optimizer other than SGD/Adam/AdamW (or fused,
differentiable, capturable, or with a scheduler or hook wrapped around its step), accumulation_steps
> 1, a GradScaler, batches from an iterable, a batch(step) that draws from the global random state
(packed, members would draw each other's batches; found by two dry calls under different states),
randomness in forward (dropout: vmap refuses it), a buffer the forward replaces instead of updating
in place (found by a dry forward alone and vmapped), members whose shapes or optimizers differ.
Constant buffers (a causal mask, a RoPE table) and parameters the loss never reaches (left alone, as
torch.optim leaves a parameter whose gradient is None; found by a dry backward) pack.

Checkpoints: the stacked weights, buffers and optimizer state are written back into each member's
own model and optimizer before its eval, checkpoint or end, and the member's checkpoint is the single
task run's (pipeline/train/loop.py with TaskRun.state()), so it resumes alone (`python -m
pipeline.train --task=... --resume`) or in a pack, at the same steps as alone (ckpt_every_steps,
SIGTERM, the end).
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch.func import functional_call, vmap
from torch.utils._pytree import tree_flatten, tree_map

from lrscan.pipeline.config import TrainConfig
from lrscan.pipeline.errors import LrscanError
from lrscan.pipeline.pack.members import PackMember, Point, resume_members
from lrscan.pipeline.pack.runs import run_members
from lrscan.pipeline.pack.updates import make_update, why_not_members, why_not_update
from lrscan.pipeline.train import checkpoint, rngstate
from lrscan.pipeline.train.generic import MAX_APPLIED_LR, TaskRun
from lrscan.pipeline.train.loop import train_members
from lrscan.pipeline.train.task import Task, load_task


def why_not_functional(tasks: list[Task]) -> str:
    """Why these members' tasks cannot be stepped together with torch.func ('' when they can)."""
    task = tasks[0]
    why = why_not_update(task) or why_not_members(tasks)
    if why:
        return why
    if task.accumulation_steps != 1:
        return f"it accumulates {task.accumulation_steps} micro-batches per step; a pack steps one batch per step"
    if task.scaler is not None:
        return "it has a GradScaler; a pack steps without one"
    if any(p.dtype == torch.float16 for p in task.model.parameters()):
        # vmapped float16 kernels round differently from the model's own (39 of 1020 elements after 50 AdamW
        # steps); bfloat16 and float32 members are bit-identical to their runs alone
        return "its parameters are float16, which a pack cannot step exactly as the run alone (bfloat16 can)"
    if task.batch_fn is None:
        return "its batches are an iterable; a pack asks each member's batch(step)"
    for t in tasks[1:]:
        if [(n, p.shape, p.dtype, p.device) for n, p in t.model.named_parameters()] != \
                [(n, p.shape, p.dtype, p.device) for n, p in task.model.named_parameters()] or \
                [(n, b.shape, b.dtype) for n, b in t.model.named_buffers()] != \
                [(n, b.shape, b.dtype) for n, b in task.model.named_buffers()]:
            return "its members' models differ in parameter or buffer names, shapes, dtypes or devices"
    with _no_trace(tasks):
        try:
            batches = [t.batch_fn(0) for t in tasks]
            leaves = [tree_flatten(b) for b in batches]
            if any(not isinstance(x, torch.Tensor) for x in leaves[0][0]):
                return "its batch(step) gives something other than tensors; a pack stacks the members' batches"
            if any(spec != leaves[0][1] or [x.shape for x in xs] != [x.shape for x in leaves[0][0]]
                   for xs, spec in leaves):
                return "its members' batches differ in structure or shapes"
        except Exception as e:
            return f"its batch(0) fails ({type(e).__name__}: {_first_line(e)})"
        why = _draws_from_global_rng(task)
        if why:
            return why
        try:
            step = FunctionalStep(tasks)  # the members' weights and buffers stacked before either dry forward
            alone = _dry_step_alone(task, batches[0])
            step.losses_and_grads(step.stacked_batch([0] * len(tasks)))
        except Exception as e:  # vmap refuses randomness (dropout) and ops it cannot batch
            return f"its loss cannot be vmapped over members ({type(e).__name__}: {_first_line(e)})"
        # a buffer the forward changes (BatchNorm's running statistics) is carried per member when the vmapped
        # forward changes it in place as the model alone does; one it replaces, or changes otherwise, is not
        for name, after in alone.items():
            mine = step.consts[name][0]
            if not torch.allclose(mine.double(), after.double(), rtol=1e-4, atol=1e-6):
                return (f"its model's buffer {name} changes in forward in a way a vmapped forward does not repeat "
                        f"per member (it is replaced, not updated in place); a pack cannot carry it")
    return ""


def _first_line(e: Exception) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else ""


@contextmanager
def _no_trace(tasks: list[Task]) -> Iterator[None]:
    """The global random states and every member's buffers (the objects and their values) as they were."""
    rng = rngstate.capture()
    saved = [(m, dict(m._buffers), {k: None if b is None else b.detach().clone() for k, b in m._buffers.items()})
             for t in tasks for m in t.model.modules()]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, objects, values in saved:
                m._buffers.update(objects)
                for k, b in objects.items():
                    if b is not None:
                        b.copy_(values[k])
        rngstate.restore(rng)


def _draws_from_global_rng(task: Task) -> str:
    """Why the task's batch(step) depends on the global random states ('' when it does not): packed, each member's
    draws would move its packmates' (nanoGPT's get_batch calls torch.randint without a generator)."""
    seen = []
    for seed in (1, 2):
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        seen.append(tree_flatten(task.batch_fn(0))[0])
    if any(not torch.equal(a, b) for a, b in zip(*seen)):
        return ("its batch(step) draws from the global random state (torch, numpy or random without a generator of "
                "its own), so packed members would draw each other's batches; give batch a generator seeded by "
                "(seed, step) to pack it")
    return ""


def _dry_step_alone(task: Task, batch) -> dict[str, torch.Tensor]:
    """One forward and backward of member 0 alone (no gradient stored): the buffers the forward changed, with
    their new values. Parameters it leaves without a gradient are found by `stepped_names`."""
    before = {n: b.detach().clone() for n, b in task.model.named_buffers()}
    task.loss_fn(task.model, batch)
    return {n: b.detach().clone() for n, b in task.model.named_buffers()
            if n not in before or b.shape != before[n].shape or not torch.equal(b, before[n])}


def stepped_names(task: Task, batch) -> set[str]:
    """The parameters the task's optimizer steps: in a param group, requiring grad, and given a gradient by a
    backward (torch.optim skips a parameter whose .grad is None: unused in the loss, or frozen)."""
    in_optimizer = {id(p) for g in task.optimizer.param_groups for p in g["params"]}
    named = [(n, p) for n, p in task.model.named_parameters() if p.requires_grad and id(p) in in_optimizer]
    with _no_trace([task]):
        loss = task.loss_fn(task.model, batch).reshape(())
        grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
    return {n for (n, _), g in zip(named, grads) if g is not None}


class FunctionalStep:
    """K members' parameters and buffers stacked (name -> (K, ...)), one vmapped step at a time: each member's
    gradients and buffer updates by a vmapped forward and its backward, then its optimizer's update
    (pipeline/pack/updates.py)."""

    def __init__(self, tasks: list[Task], stepped: set[str] | None = None, scales: list[float] | None = None):
        self.tasks, self.scales = tasks, scales
        model = tasks[0].model
        self.template = _LossOf(model, tasks[0].loss_fn)
        if stepped is None:
            stepped = stepped_names(tasks[0], tasks[0].batch_fn(0))
        self.stepped = stepped
        self.names = [n for n, _ in model.named_parameters() if n in stepped]
        # everything else the forward reads, per member: parameters the optimizer leaves alone, and buffers
        # (a BatchNorm's running statistics, updated in place under vmap, member by member)
        self.const_names = [n for n, _ in model.named_parameters() if n not in stepped] + \
                           [n for n, _ in model.named_buffers()]
        own = [{**dict(t.model.named_parameters()), **dict(t.model.named_buffers())} for t in tasks]
        self.params = {n: torch.stack([o[n].detach() for o in own]).clone() for n in self.names}
        self.consts = {n: torch.stack([o[n].detach() for o in own]).clone() for n in self.const_names}
        self.update = make_update(tasks, stepped, self.params, scales)

        def loss_one(params, consts, batch):
            return functional_call(self.template, ({"model." + n: p for n, p in params.items()},
                                                   {"model." + n: c for n, c in consts.items()}), (batch,)).reshape(())

        self._losses = vmap(loss_one)

    def stacked_batch(self, steps: list[int]):
        """Member k's batch(steps[k]), stacked: a leading (K,) dimension on every tensor."""
        return tree_map(lambda *xs: torch.stack(xs), *[t.batch_fn(s) for t, s in zip(self.tasks, steps)])

    def losses_and_grads(self, batch):
        # only the forward is vmapped; autograd runs the backward of its batched ops. The members are independent,
        # so the gradient of their losses' sum by member k's parameters is member k's own gradient, and this
        # backward costs ~15% less than vmap(grad(loss))'s (docs/benchmarks.md). Randomness in forward
        # (dropout): vmap refuses it (randomness="error"), the dry run in why_not_functional finds it before any
        # run exists; buffers change in place, member by member
        with torch.enable_grad():
            params = {n: p.detach().requires_grad_() for n, p in self.params.items()}
            losses = self._losses(params, self.consts, batch)  # (K,)
            grads = torch.autograd.grad(losses.sum(), list(params.values()), allow_unused=True)
        # a parameter this batch's loss does not reach gets a zero gradient, as torch.func.grad gives one
        return losses.detach(), {n: torch.zeros_like(p) if g is None else g for (n, p), g in zip(params.items(), grads)}

    def step(self, steps: list[int], lrs: list[float]) -> torch.Tensor:
        """One optimizer step for every member, at its own step (its batch) and lr; the members' losses (K,)."""
        losses, grads = self.losses_and_grads(self.stacked_batch(steps))
        self.update.step(self.params, grads, lrs)
        return losses.detach()

    def snapshot(self) -> tuple[dict, dict, dict]:
        return ({n: p.clone() for n, p in self.params.items()}, {n: c.clone() for n, c in self.consts.items()},
                self.update.snapshot())

    def restore(self, snap) -> None:
        params, consts, update = snap
        self.params = {n: p.clone() for n, p in params.items()}
        self.consts = {n: c.clone() for n, c in consts.items()}
        self.update.restore(update)

    def rows(self, snap, rows: list[int]):
        """A snapshot of the members `rows` only."""
        params, consts, update = snap
        return ({n: p[rows] for n, p in params.items()}, {n: c[rows] for n, c in consts.items()},
                {n: {key: t[rows] for key, t in s.items()} for n, s in update.items()})

    def copy_row(self, k: int, other: FunctionalStep, i: int) -> None:
        """Member k's weights, buffers and optimizer state from member i of `other` (a replay's result)."""
        for n in self.names:
            self.params[n][k] = other.params[n][i]
        for n in self.const_names:
            self.consts[n][k] = other.consts[n][i]
        self.update.copy_row(k, other.update, i)

    def write_back(self, k: int) -> None:
        """Member k's weights, buffers and optimizer state into its own model and optimizer (its eval,
        checkpoint, end)."""
        t = self.tasks[k]
        own = {**dict(t.model.named_parameters()), **dict(t.model.named_buffers())}
        with torch.no_grad():
            for n in self.names:
                own[n].copy_(self.params[n][k])
            for n in self.const_names:
                own[n].copy_(self.consts[n][k])
        self.update.write_back(k, t)

    def read_buffers(self, k: int) -> None:
        """Member k's buffers from its own model: an evaluate in training mode moves BatchNorm's statistics in
        the run alone too."""
        own = dict(self.tasks[k].model.named_buffers())
        with torch.no_grad():
            for n in self.const_names:
                if n in own:
                    self.consts[n][k] = own[n]

    def keep(self, rows: list[int]) -> FunctionalStep:
        """The members `rows` only, as they are now."""
        for k in range(len(self.tasks)):
            self.write_back(k)
        return FunctionalStep([self.tasks[k] for k in rows], self.stepped, self.scales)


class _LossOf(torch.nn.Module):
    """loss_fn(model, batch) as a module, so functional_call can swap the model's parameters under it."""

    def __init__(self, model: torch.nn.Module, loss_fn):
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, batch):
        return self.loss_fn(self.model, batch)


def load_tasks(points: list[Point]) -> list[Task]:
    return [load_task(p.cfg.task, p.cfg.seed, p.cfg.task_args) for p in points]


def why_not_packed_task(cfg: TrainConfig) -> tuple[str, float]:
    """For the sweep runner: why points of this task cannot share a pack ('' when they can), and the seconds one
    member's training step takes alone (forward, backward, its optimizer's step; 0.0 when it cannot pack): the
    runner weighs it against its logging's share of a core. Builds the task once."""
    torch.set_num_threads(cfg.num_threads)  # as a member of its pack would step
    try:
        tasks = [load_task(cfg.task, cfg.seed, cfg.task_args)]
    except LrscanError as e:
        return f"its task cannot be built here ({e})", 0.0
    why = why_not_functional(tasks)
    return why, 0.0 if why else step_seconds(tasks[0])


def step_seconds(task: Task, steps: int = 5) -> float:
    """The fastest of a few training steps of the task alone (after one to warm up), on its own batches; the task
    is stepped, so only a throwaway copy is measured."""
    on_gpu = any(p.is_cuda for p in task.model.parameters())
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        task.optimizer.zero_grad(set_to_none=True)
        task.loss_fn(task.model, task.batch_fn(i)).backward()
        task.optimizer.step()
        if on_gpu:
            torch.cuda.synchronize()  # the step's kernels, not only their launches
        times.append(time.perf_counter() - t0)
    return min(times[1:])


def train_seeds(cfgs: list[TrainConfig], tasks: list[Task], on_steps: list, made: list[dict], *,
                who: str = "range_test", what: str = "seeds") -> list[dict]:
    """range_test's seeds (cfgs[k] trains tasks[k], rows to on_steps[k]): one pack in this process when their tasks
    can pack (one vmapped step, one logger process holding the K runs), else one after another with the single
    trainer, saying why once; the summaries in order, the same either way (within rtol 1e-5).

    made[k]: the global random states tasks[k]'s make left; a seed run alone starts from them, as it does
    from the command line (a pack's tasks draw nothing from them: why_not_functional)."""
    from lrscan.pipeline.train.loop import train
    from lrscan.pipeline.train.tracking import this_process_launch

    why = why_not_functional(tasks) if len(tasks) > 1 else "one seed"
    if why:
        if len(tasks) > 1:
            print(f"{who}: the {len(tasks)} {what} train one after another, not packed: {why}", flush=True)
        summaries = []
        for cfg, task, o, rng in zip(cfgs, tasks, on_steps, made):
            rngstate.restore(rng)
            summaries.append(train(cfg, task=task, on_steps=o))
        return summaries
    torch.set_num_threads(cfgs[0].num_threads)
    checkpoint.make_dir(cfgs[0].ckpt_dir)
    launch = this_process_launch()
    members = []
    for cfg, o in zip(cfgs, on_steps):
        members.append(PackMember(Point(run_id=cfg.run_id, args=launch.args, cfg=cfg), None))
        members[-1].on_steps = o
    runs = [TaskRun(task) for task in tasks]
    summaries = run_members(members, launch.program, lambda ms: _train(ms, runs))
    return [summaries[cfg.run_id] for cfg in cfgs]


def train_task_pack(points: list[Point], *, program: str) -> dict[str, dict]:
    """A pack of task points (checked by the caller to share a key): each member to its end; summaries by run id."""
    cfg0 = points[0].cfg
    torch.set_num_threads(cfg0.num_threads)
    try:
        tasks = load_tasks(points)
    except LrscanError as e:
        raise LrscanError(f"point {points[0].run_id} trains its own task ({cfg0.task}): a pack stacks the makemore "
                          f"MLP or a task torch.func can step; this one cannot be built: {e}") from None
    why = why_not_functional(tasks)
    if why:
        raise LrscanError(f"point {points[0].run_id} trains its own task ({cfg0.task}): a pack stacks the makemore "
                          f"MLP or a task torch.func can step; this one cannot: {why}. Run it with --pack=1")
    checkpoint.make_dir(cfg0.ckpt_dir)
    members, summaries = resume_members(points, task=True)
    task_of = {p.run_id: t for p, t in zip(points, tasks)}
    runs = [TaskRun(task_of[m.run_id]) for m in members]
    for m, run in zip(members, runs):
        if m.state is not None:
            run.load(m.state, m.run_id)  # its model, optimizer, batch position and random states
    if members:
        summaries.update(run_members(members, program, lambda ms: _train(ms, runs)))
    return summaries


def _train(members: list[PackMember], runs: list[TaskRun]) -> dict[str, dict]:
    stepper = FunctionalRun(runs)
    print(f"pack of {len(members)} run(s) of {members[0].cfg.task}: {members[0].cfg.schedule} schedule, "
          f"{members[0].cfg.steps} steps, {runs[0].describe()}, stepped with torch.func on "
          f"{torch.get_num_threads()} intra-op thread(s)", flush=True)
    return train_members(members, stepper)


class FunctionalRun:
    """K members of a task as the loop's stepper (pipeline/train/stepper.py): their copies stepped together
    (`FunctionalStep`); member k's own TaskRun evaluates, checkpoints and reports it, once its weights and
    optimizer state are written back into its own model and optimizer."""

    def __init__(self, runs: list[TaskRun], fstep: FunctionalStep | None = None):
        self.runs = runs
        self.fstep = fstep or FunctionalStep([r.task for r in runs], scales=runs[0].lr_scales)
        self.n_params = runs[0].n_params
        self._next = [r.batches.drawn for r in runs]  # each member's next step: batch(i) asks this i next
        self._start = None
        self._chunk: tuple[list[int], np.ndarray] | None = None

    def train_chunk(self, starts: list[int], lrs: np.ndarray, rewindable: bool) -> np.ndarray:
        # as the single run sets them on its optimizer (generic.py); each group's scale: the stacked update's
        lrs = np.minimum(lrs, MAX_APPLIED_LR)
        self._start = self.fstep.snapshot() if rewindable else None
        self._chunk = (starts, lrs)
        self._next = [s + len(lrs) for s in starts]
        return _steps(self.fstep, starts, lrs)

    def replay(self, kept: dict[int, int]) -> None:
        # the stopped members rewound to the chunk's start and trained again, alone in a small step, up to their
        # stop steps; their rows of fstep then hold their weights at their stop steps
        rows = sorted(kept)
        starts, lrs = self._chunk
        sub = FunctionalStep([self.fstep.tasks[k] for k in rows], self.fstep.stepped, self.fstep.scales)
        sub.restore(self.fstep.rows(self._start, rows))
        for j in range(max(kept.values())):
            _steps(sub, [starts[k] + j for k in rows], lrs[j:j + 1, rows])
            for i, k in enumerate(rows):
                if kept[k] == j + 1:
                    self.fstep.copy_row(k, sub, i)
                    self._next[k] = starts[k] + j + 1

    def keep(self, rows: list[int]) -> FunctionalRun:
        kept = FunctionalRun([self.runs[k] for k in rows], self.fstep.keep(rows))
        kept._next = [self._next[k] for k in rows]
        return kept

    def evaluate(self, k: int) -> dict[str, float]:
        self.fstep.write_back(k)
        evaluated = self.runs[k].evaluate()
        self.fstep.read_buffers(k)  # an evaluate in training mode moves BatchNorm's statistics alone too
        return evaluated

    def final_losses(self, ks: list[int]) -> dict[int, dict[str, float]]:
        return {k: self.evaluate(k) for k in ks}

    def state(self, k: int) -> dict:
        # the single task run's checkpoint (pipeline/train/generic.py): it resumes alone or in a pack
        self.fstep.write_back(k)
        self.runs[k].batches.drawn = self._next[k]
        return self.runs[k].state()

    def report(self, k: int, run_id: str, summary: dict, tail: str, samples: bool = True) -> None:
        self.runs[k].report(0, run_id, summary, tail, samples)


def _steps(fstep: FunctionalStep, starts: list[int], lrs: np.ndarray) -> np.ndarray:
    # members resumed from different checkpoints are at different steps: each asks its own batch(step)
    out = [fstep.step([s + j for s in starts], lrs[j].tolist()) for j in range(len(lrs))]
    return torch.stack(out).double().cpu().numpy()  # (n, K)
