"""A pack of a user task's points: K copies of its model stepped at once with torch.func, each its own run.

    train_task_pack([Point.parse("t-0", ["--task=net.py:make", "--seed=1"]), ...])

Every member builds its own Task (make(its seed, **task_args)): its model, optimizer and batch(step)
function are its own, so its init and batches do not depend on its packmates. One training step
stacks the K parameter sets, asks each member's batch(step), and runs `vmap(grad(loss))` over them
through `functional_call`; the update is torch.optim.SGD's, written out with each member's own lr
and per-member momentum buffers. So a task packs only when that update and that vmap are exactly
what its single run does (`why_not_functional` says why not otherwise): SGD in one param group
(no maximize), accumulation_steps == 1, no GradScaler, batch(step) (not an iterable), no buffers
(BatchNorm's running statistics change in forward), no randomness in forward (dropout), batches of
tensors of the same shapes for every member.

Checkpoints: the stacked weights and momentum buffers are written back into each member's own model
and optimizer before its eval, checkpoint or end, and the member's checkpoint is the single task
run's (pipeline/train/loop.py with TaskRun.state()), so it resumes alone (`python -m pipeline.train
--task=... --resume`) or in a pack, at the same steps as alone (ckpt_every_steps, SIGTERM, the end).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.func import functional_call, grad_and_value, vmap
from torch.utils._pytree import tree_flatten, tree_map

from pipeline.config import TrainConfig
from pipeline.errors import LrscanError
from pipeline.pack.members import PackMember, Point, resume_members
from pipeline.train import checkpoint, rngstate
from pipeline.train.generic import MAX_APPLIED_LR, TaskRun
from pipeline.train.loop import train_members
from pipeline.train.task import Task, load_task


def why_not_functional(tasks: list[Task]) -> str:
    """Why these members' tasks cannot be stepped together with torch.func ('' when they can)."""
    task = tasks[0]
    opt = task.optimizer
    if type(opt) is not torch.optim.SGD:
        return f"its optimizer is {type(opt).__name__}; a pack steps plain torch.optim.SGD (with or without momentum)"
    if len(opt.param_groups) != 1:
        return f"its SGD has {len(opt.param_groups)} param groups; a pack steps one"
    group = opt.param_groups[0]
    if group.get("maximize"):
        return "its SGD maximizes; a pack steps a minimizing SGD"
    if task.accumulation_steps != 1:
        return f"it accumulates {task.accumulation_steps} micro-batches per step; a pack steps one batch per step"
    if task.scaler is not None:
        return "it has a GradScaler; a pack steps without one"
    if task.batch_fn is None:
        return "its batches are an iterable; a pack asks each member's batch(step)"
    buffers = [name for name, _ in task.model.named_buffers()]
    if buffers:
        return (f"its model has buffers ({', '.join(buffers[:3])}{', ...' if len(buffers) > 3 else ''}; e.g. "
                f"BatchNorm's running statistics), which a vmapped forward cannot update per member")
    if {id(p) for p in group["params"]} != {id(p) for p in task.model.parameters()}:
        return "its SGD is not over all of the model's parameters"
    if not all(p.requires_grad for p in task.model.parameters()):
        return "some of its model's parameters are frozen (requires_grad=False); a pack steps every parameter"
    for t in tasks[1:]:
        if [(n, p.shape, p.dtype, p.device) for n, p in t.model.named_parameters()] != \
                [(n, p.shape, p.dtype, p.device) for n, p in task.model.named_parameters()]:
            return "its members' models differ in parameter names, shapes, dtypes or devices"
        g = t.optimizer.param_groups
        if type(t.optimizer) is not torch.optim.SGD or len(g) != 1 or \
                any(g[0][k] != group[k] for k in ("momentum", "dampening", "weight_decay", "nesterov")):
            return "its members' optimizers differ"
    rng = rngstate.capture()  # the dry step leaves no trace, like check_task's
    try:
        batches = [t.batch_fn(0) for t in tasks]
        leaves = [tree_flatten(b) for b in batches]
        if any(not isinstance(x, torch.Tensor) for x in leaves[0][0]):
            return "its batch(step) gives something other than tensors; a pack stacks the members' batches"
        if any(spec != leaves[0][1] or [x.shape for x in xs] != [x.shape for x in leaves[0][0]]
               for xs, spec in leaves):
            return "its members' batches differ in structure or shapes"
        step = FunctionalStep(tasks)
        step.losses_and_grads(step.stacked_batch([0] * len(tasks)))
    except Exception as e:  # vmap refuses randomness (dropout) and ops it cannot batch
        return f"its loss cannot be vmapped over members ({type(e).__name__}: {str(e).strip().splitlines()[0]})"
    finally:
        rngstate.restore(rng)
    return ""


class FunctionalStep:
    """K members' parameters stacked (name -> (K, ...)), one vmapped SGD step at a time."""

    def __init__(self, tasks: list[Task]):
        self.tasks = tasks
        self.template = _LossOf(tasks[0].model, tasks[0].loss_fn)
        self.names = [n for n, _ in tasks[0].model.named_parameters()]
        group = tasks[0].optimizer.param_groups[0]
        self.momentum, self.dampening = float(group["momentum"]), float(group["dampening"])
        self.weight_decay, self.nesterov = float(group["weight_decay"]), bool(group["nesterov"])
        self.params = {n: torch.stack([dict(t.model.named_parameters())[n].detach() for t in tasks]).clone()
                       for n in self.names}
        # momentum buffers: a member's first step (no buffer yet) takes the gradient itself, as torch's SGD does
        self.bufs = {n: torch.zeros_like(p) for n, p in self.params.items()}
        self.started = torch.zeros(len(tasks), dtype=torch.bool, device=self.params[self.names[0]].device)
        for k, t in enumerate(tasks):
            state = [t.optimizer.state.get(p, {}).get("momentum_buffer") for p in t.model.parameters()]
            if self.momentum and all(b is not None for b in state):
                for n, b in zip(self.names, state):
                    self.bufs[n][k] = b
                self.started[k] = True

        def loss_one(params, batch):
            return functional_call(self.template, {"model." + n: p for n, p in params.items()}, (batch,)).reshape(())

        self._grad = vmap(grad_and_value(loss_one))

    def stacked_batch(self, steps: list[int]):
        """Member k's batch(steps[k]), stacked: a leading (K,) dimension on every tensor."""
        return tree_map(lambda *xs: torch.stack(xs), *[t.batch_fn(s) for t, s in zip(self.tasks, steps)])

    def losses_and_grads(self, batch):
        # randomness in forward (dropout): vmap refuses it (randomness="error"), the dry run in
        # why_not_functional finds it before any run exists
        grads, losses = self._grad(self.params, batch)
        return losses, grads

    def step(self, steps: list[int], lrs: list[float]) -> torch.Tensor:
        """One SGD step for every member, at its own step (its batch) and lr; the members' losses (K,)."""
        losses, grads = self.losses_and_grads(self.stacked_batch(steps))
        with torch.no_grad():
            for n in self.names:
                p, g = self.params[n], grads[n]
                if self.weight_decay:
                    g = g.add(p, alpha=self.weight_decay)
                if self.momentum:
                    started = self.started.view(-1, *[1] * (p.dim() - 1))
                    self.bufs[n] = torch.where(started, self.bufs[n] * self.momentum + g * (1 - self.dampening), g)
                    g = g.add(self.bufs[n], alpha=self.momentum) if self.nesterov else self.bufs[n]
                # member by member, torch's SGD update to the rounding (add_ with alpha=-lr): a fused (K,)-lr
                # multiply rounds differently, and high-lr steps amplify one ulp into another history
                for k, lr in enumerate(lrs):
                    p[k].add_(g[k], alpha=-lr)
            self.started.fill_(True)
        return losses.detach()

    def snapshot(self) -> tuple[dict, dict, torch.Tensor]:
        return ({n: p.clone() for n, p in self.params.items()}, {n: b.clone() for n, b in self.bufs.items()},
                self.started.clone())

    def restore(self, snap) -> None:
        params, bufs, started = snap
        self.params = {n: p.clone() for n, p in params.items()}
        self.bufs = {n: b.clone() for n, b in bufs.items()}
        self.started = started.clone()

    def rows(self, snap, rows: list[int]):
        """A snapshot of the members `rows` only."""
        params, bufs, started = snap
        return {n: p[rows] for n, p in params.items()}, {n: b[rows] for n, b in bufs.items()}, started[rows]

    def copy_row(self, k: int, other: FunctionalStep, i: int) -> None:
        """Member k's weights and momentum buffers from member i of `other` (a replay's result)."""
        for n in self.names:
            self.params[n][k] = other.params[n][i]
            self.bufs[n][k] = other.bufs[n][i]
        self.started[k] = other.started[i]

    def write_back(self, k: int) -> None:
        """Member k's weights and momentum buffers into its own model and optimizer (its eval, checkpoint, end)."""
        t = self.tasks[k]
        with torch.no_grad():
            for n, p in t.model.named_parameters():
                p.copy_(self.params[n][k])
                if self.momentum and bool(self.started[k]):
                    t.optimizer.state[p]["momentum_buffer"] = self.bufs[n][k].clone()

    def keep(self, rows: list[int]) -> FunctionalStep:
        """The members `rows` only, as they are now."""
        for k in range(len(self.tasks)):
            self.write_back(k)
        return FunctionalStep([self.tasks[k] for k in rows])


class _LossOf(torch.nn.Module):
    """loss_fn(model, batch) as a module, so functional_call can swap the model's parameters under it."""

    def __init__(self, model: torch.nn.Module, loss_fn):
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, batch):
        return self.loss_fn(self.model, batch)


def load_tasks(points: list[Point]) -> list[Task]:
    return [load_task(p.cfg.task, p.cfg.seed, p.cfg.task_args) for p in points]


def why_not_packed_task(cfg: TrainConfig) -> str:
    """For the sweep runner: why points of this task cannot share a pack ('' when they can); builds it once."""
    try:
        tasks = [load_task(cfg.task, cfg.seed, cfg.task_args)]
    except LrscanError as e:
        return f"its task cannot be built here ({e})"
    return why_not_functional(tasks)


def train_task_pack(points: list[Point], *, program: str, run_members) -> dict[str, dict]:
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
          f"{members[0].cfg.steps} steps, {runs[0].describe()}, stepped with torch.func", flush=True)
    return train_members(members, stepper)


class FunctionalRun:
    """K members of a task as the loop's stepper (pipeline/train/stepper.py): their copies stepped together
    (`FunctionalStep`); member k's own TaskRun evaluates, checkpoints and reports it, once its weights and
    optimizer state are written back into its own model and optimizer."""

    def __init__(self, runs: list[TaskRun], fstep: FunctionalStep | None = None):
        self.runs = runs
        self.fstep = fstep or FunctionalStep([r.task for r in runs])
        self.n_params = runs[0].n_params
        self._next = [r.batches.drawn for r in runs]  # each member's next step: batch(i) asks this i next
        self._start = None
        self._chunk: tuple[list[int], np.ndarray] | None = None

    def train_chunk(self, starts: list[int], lrs: np.ndarray, rewindable: bool) -> np.ndarray:
        # as the single run sets them on its optimizer (generic.py): its one group's scale (task.lr_scales)
        lrs = np.minimum(lrs, MAX_APPLIED_LR) * np.array([r.lr_scales[0] for r in self.runs])
        self._start = self.fstep.snapshot() if rewindable else None
        self._chunk = (starts, lrs)
        self._next = [s + len(lrs) for s in starts]
        return _steps(self.fstep, starts, lrs)

    def replay(self, kept: dict[int, int]) -> None:
        # the stopped members rewound to the chunk's start and trained again, alone in a small step, up to their
        # stop steps; their rows of fstep then hold their weights at their stop steps
        rows = sorted(kept)
        starts, lrs = self._chunk
        sub = FunctionalStep([self.fstep.tasks[k] for k in rows])
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
        return self.runs[k].evaluate()

    def final_losses(self, ks: list[int]) -> dict[int, dict[str, float]]:
        return {k: self.evaluate(k) for k in ks}

    def state(self, k: int) -> dict:
        # the single task run's checkpoint (pipeline/train/generic.py): it resumes alone or in a pack
        self.fstep.write_back(k)
        self.runs[k].batches.drawn = self._next[k]
        return self.runs[k].state()

    def report(self, k: int, run_id: str, summary: dict, tail: str) -> None:
        self.runs[k].report(0, run_id, summary, tail)


def _steps(fstep: FunctionalStep, starts: list[int], lrs: np.ndarray) -> np.ndarray:
    # members resumed from different checkpoints are at different steps: each asks its own batch(step)
    out = [fstep.step([s + j for s in starts], lrs[j].tolist()) for j in range(len(lrs))]
    return torch.stack(out).double().cpu().numpy()  # (n, K)
