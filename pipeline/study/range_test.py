"""`range_test`: the study's lr range test on your own model, from Python, leaving the model as it was.

    from lrscan.pipeline import Task, range_test
    result = range_test(make, seeds=[1, 2, 3, 4, 5], lre_min=-4, lre_max=-1)   # make(seed) -> Task
    result = range_test(make, seeds=[1, 2, 3], start_lr=1e-4, end_lr=0.1)     # the same, in lr units
    result.best_lr, result.ci, result.steepest_lr, result.valley_lr
    result.steps          # one row per measured step: run_id, seed, step, lr, lre, loss, log10_loss, smooth_loss
                          # (+ dev_loss ... on eval steps when the task has evaluate)
    result.plot()         # analysis.plots' range-test figure, every suggester marked
    result.apply(optimizer)   # the picked lr on every param group, keeping their ratios

Each range test is one real training run of `pipeline.train.loop.train`: the same schedule
(lr = 10**linspace(lre_min, lre_max, steps), both ends; step_mode="linear": lr evenly spaced instead),
the same climb and non-finite stops, every
step logged to W&B by the same logger process (offline by default). The pick, its suggesters and
its CI across seeds come from `analysis.pick.pick_exponent`, run on the frames `analysis.load_runs`
would read back from those runs, so a result here and a report on the same runs cannot disagree.

Afterwards the model, the optimizer, the GradScaler and the global random states (python, numpy,
torch CPU and CUDA) are as they were, bit for bit, also when training raises. torch-lr-finder
needs a manual reset(); fastai restores the weights but not the RNG.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from lrscan.analysis.pick import ExponentPick, ci_description, pick_exponent
from lrscan.pipeline import keys
from lrscan.pipeline.config import SCHEDULES, TrainConfig, field_names
from lrscan.pipeline.errors import LrscanError
from lrscan.pipeline.pack.functional import train_seeds
from lrscan.pipeline.study.inputs import real_number, whole_number
from lrscan.pipeline.study.own_task import check_seeds, device_of, make_seeded, restored_globals, task_label
from lrscan.pipeline.study.ranges import SGD_RANGE, Range, RangeCheck, check_range, fill_range, next_range_arguments
from lrscan.pipeline.train import rngstate
from lrscan.pipeline.train.adapters import set_optimizer_lr
from lrscan.pipeline.train.loop import new_run_id
from lrscan.pipeline.train.task import Task

if TYPE_CHECKING:
    from matplotlib.axes import Axes

# range_test's own keywords; every other keyword is a TrainConfig field
OWN_KEYWORDS = ("lre_min", "lre_max", "start_lr", "end_lr", "steps", "seeds", "pick_on", "pick_args")
# fields range_test sets itself: the schedule is the range test's, the seed comes from `seeds`
NOT_KEYWORDS = {"schedule": "range_test always runs schedule='range'",
                "task": "pass the task itself (a Task, a function make(seed) -> Task, or 'path/file.py:make')",
                "resume": "a range test on a live model starts from the model as it is; it is not resumed",
                "run_id": "each range test run gets its own id (see result.run_ids)"}
SEED_COLUMN = "seed"
PICK_COLUMN = "column"  # pick_exponent's argument naming the column it reads
# what every step logs; any other pick_on is a value of the task's evaluate, logged on eval steps only
STEP_COLUMNS = (keys.LOSS, keys.LOG10_LOSS, keys.SMOOTH_LOSS)


@dataclass
class RangeTestResult:
    """What `range_test` measured and what the analysis picked from it.

    steps: one row per measured step (run_id, seed, step, lr, lre, loss, log10_loss, smooth_loss, and what
           the task's evaluate returned (dev_loss, ...) on eval steps, NaN on the others);
    runs: one row per run (run_id, seed and its summary: stop_step, stop_reason, dev_loss, ...);
    pick: `analysis.pick.ExponentPick`: min_loss (the pick), fastai_minimum, steepest, valley, the CI.
    """

    pick: ExponentPick
    steps: pd.DataFrame = field(repr=False)
    runs: pd.DataFrame = field(repr=False)
    run_ids: list[str]
    seeds: list[int]
    group: str
    wandb_mode: str
    seconds: float
    pick_args: dict[str, Any] = field(default_factory=dict, repr=False)
    # what built the runs, for `prove`: the task (make or spec), its args, the TrainConfig fields given
    task: Any = field(default=None, repr=False)
    task_args: dict[str, Any] = field(default_factory=dict, repr=False)
    fields: dict[str, Any] = field(default_factory=dict, repr=False)
    task_notes: list[str] = field(default_factory=list, repr=False)  # what the task's maker said (Task.notes)
    range: Range | None = field(default=None, repr=False)  # the ends run, and why (given, or the optimizer's default)
    n_steps: int = field(default=0, repr=False)  # the steps each run was scheduled for

    # the pick (min_loss): the exponent of lowest mean loss, the seed study's "look where the loss is lowest"
    @property
    def best_lre(self) -> float:
        return float(self.pick.best_lre)

    @property
    def best_lr(self) -> float:
        return float(self.pick.best_lr)

    @property
    def ci(self) -> tuple[float, float] | None:
        """The pick's confidence interval in lre across seeds; None with fewer than 2 seeds (see `notes`)."""
        low, high = self.pick.best_lre_ci
        return (float(low), float(high)) if math.isfinite(low) and math.isfinite(high) else None

    @property
    def ci_lr(self) -> tuple[float, float] | None:
        """`ci` as learning rates."""
        return None if self.ci is None else (10.0 ** self.ci[0], 10.0 ** self.ci[1])

    @property
    def ci_method(self) -> str:
        """How `ci` was made, in words (or why there is none)."""
        return ci_description(self.pick.ci_method)

    # the other suggesters, read from the same curve
    @property
    def steepest_lre(self) -> float:
        return float(self.pick.steepest_lre)

    @property
    def steepest_lr(self) -> float:
        return float(self.pick.steepest_lr)

    @property
    def valley_lre(self) -> float:
        return float(self.pick.valley_lre)

    @property
    def valley_lr(self) -> float:
        return float(self.pick.valley_lr)

    @property
    def suggestions(self) -> dict[str, float]:
        """Suggester name -> lr: min_loss (the pick), fastai_minimum (min_loss / 10), steepest, valley;
        `suggestions["minimum"]`, min_loss's old name, still reads."""
        return self.pick.suggestions.map(lambda lre: 10.0 ** lre)

    def apply(self, optimizer: torch.optim.Optimizer, suggester: str = "min_loss") -> float:
        """Set the suggested lr (default the pick) on every param group of `optimizer`, keeping the groups'
        ratios by the trainer's rule (`pipeline.train.task.lr_scales`: a scheduler's initial_lr, else the
        lr; a group at 0 stays 0); `initial_lr` too where a scheduler keeps one, so a scheduler built
        afterwards starts from it. Returns the lr set (on the first group built with a non-zero lr)."""
        if suggester not in self.pick.suggestions:
            raise LrscanError(f"apply(suggester={suggester!r}): expected one of {', '.join(self.pick.suggestions)}")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise LrscanError(f"apply: {type(optimizer).__name__} is not a torch.optim.Optimizer")
        return set_optimizer_lr(self.suggestions[suggester], optimizer)

    @property
    def notes(self) -> list[str]:
        """What the analysis said about the pick (too few seeds for a CI, ...), then what the task said (Task.notes:
        an adapter's scheduler that was not stepped, ...)."""
        return list(self.pick.notes) + list(self.task_notes)

    @property
    def range_check(self) -> RangeCheck:
        """Whether the range held the loss minimum (not on its first lrs) and the turn where the loss climbs,
        with a one-line `message` and the `next_range` when it did not (`pipeline.study.ranges.check_range`)."""
        low, high = (self.range.lre_min, self.range.lre_max) if self.range is not None else (
            float(self.steps["lre_min"].iloc[0]), float(self.steps["lre_max"].iloc[0]))
        return check_range(self.pick, self.runs, lre_min=low, lre_max=high)

    def suggest_range(self) -> dict[str, Any] | None:
        """The range to run next when this one does not hold the minimum and the turn, as range_test's keywords
        (`range_test(make, **result.suggest_range())`): lre_min, lre_max, and steps at the same steps per
        decade. None when the range holds both."""
        return next_range_arguments(self.range_check, self.n_steps or int(self.steps[keys.STEP_COLUMN].max()) + 1)

    def plot(self, ax: Axes | None = None, *, x: str = keys.LRE) -> Axes:
        """The range-test figure (analysis.plots): mean loss per lre bin, each run, the suggesters, the CI.

        x: "lre" (the lecture's axis) or "lr" (log axis, as fastai and Lightning draw it).
        """
        from lrscan.analysis.plots import plot_loss_vs_lr, plot_loss_vs_lre

        if x not in (keys.LRE, keys.LR):
            raise LrscanError(f"plot(x={x!r}): expected 'lre' or 'lr'")
        return (plot_loss_vs_lre if x == keys.LRE else plot_loss_vs_lr)(self.pick, ax=ax)

    def repick(self, **pick_args: Any) -> RangeTestResult:
        """The same runs picked again with other `analysis.pick.pick_exponent` settings (n_bins, column, ...)."""
        args = {**self.pick_args, **pick_args}
        return dataclasses.replace(self, pick=_pick(self.steps, self.runs, args), pick_args=args)

    def prove(self, *, horizon: int | None = None, schedule: Any = None, seeds: Sequence[int] = (1, 2, 3),
              lrs: Sequence[float] = (), steps: int | None = None, **fields: Any):
        """Train the range test's suggestions (and `lrs`, exactly) against each other for the run you will make:
        `horizon` steps with `schedule` (`pipeline.study.prove_api.prove`; `steps` is horizon's earlier name).

        Candidates: the suggesters' lrs (min_loss, fastai_minimum, steepest, valley, the CI's ends, merged
        within 0.1 decade) and your `lrs` as given. The range test's own settings (its eval cadence, its
        range, its stops) are not inherited. Returns a `Proof` (table, best_lr, plot()).
        """
        from lrscan.pipeline.study.judging import candidates_of
        from lrscan.pipeline.study.own_task import check_lrs
        from lrscan.pipeline.study.prove_api import RANGE_ONLY, prove

        if isinstance(self.task, Task):
            raise LrscanError("prove: this range test ran on a Task object, one model: proving trains a fresh "
                              "one per candidate and seed; run range_test(make, ...) with the function that builds it")
        user = check_lrs(lrs, where="prove") if len(lrs) else []
        kept = {k: v for k, v in self.fields.items() if k != "seed" and k not in RANGE_ONLY}
        given = {**kept, "task_args": self.task_args, **fields}
        return prove(self.task, candidates_of(self.pick, user), horizon=horizon, steps=steps, schedule=schedule,
                     seeds=seeds, **given)

    def __str__(self) -> str:
        ci = f"[{self.ci[0]:.3f}, {self.ci[1]:.3f}]" if self.ci is not None else "none"
        lines = [
            f"range test: {len(self.run_ids)} run(s), seeds {self.seeds}, {len(self.steps)} measured steps, "
            f"{self.seconds:.1f} s (W&B {self.wandb_mode}, group {self.group})",
            f"pick (min_loss of {self.pick.column}): lre {self.best_lre:.3f} -> lr {self.best_lr:.4g}; 95% CI {ci} "
            f"({self.ci_method})",
            f"steepest: lre {self.steepest_lre:.3f} -> lr {self.steepest_lr:.4g}; "
            f"valley: lre {self.valley_lre:.3f} -> lr {self.valley_lr:.4g}",
        ]
        if self.range is not None:
            lines.insert(1, f"range: lr {self.range} ({self.range.why}), {self.n_steps} steps")
        check = self.range_check.message
        return "\n".join(lines + [f"note: {n}" for n in self.notes] + ([f"range: {check}"] if check else []))


def range_test(task: Task | Callable[..., Task] | str, *, lre_min: float | None = None, lre_max: float | None = None,
               start_lr: float | None = None, end_lr: float | None = None, steps: int = 1000,
               seeds: Sequence[int] | None = None, pick_on: str | None = None,
               pick_args: Mapping[str, Any] | None = None, **fields: Any) -> RangeTestResult:
    """Run the lr range test on `task` (once per seed) and pick the exponent.

    Parameters
    ----------
    task : Task, function or str
        A `pipeline.Task`; or a function `make(seed, **task_args) -> Task`, called once per seed; or
        a spec "path/to/file.py:make" / "package.module:make" (as `--task` takes it).
    lre_min, lre_max, steps : float, float, int
        lr = 10**linspace(lre_min, lre_max, steps), one training step per lr. Default ends by the
        optimizer's family (`pipeline.study.ranges.default_range`): SGD-like -3, 0 (the lecture's
        1e-3..1), Adam-like (Adam, AdamW, RMSprop, Lion, ...) -5, -1. `result.range_check` says
        whether the curve held its minimum and its turn, `result.suggest_range()` what to run next.
    start_lr, end_lr : float, optional
        The same ends in lr units (torch-lr-finder's and fastai's words): lre_min = log10(start_lr).
        Give each end one way: lre_min or start_lr, lre_max or end_lr.
    seeds : list of int, optional
        One range test per seed (needs a function or spec: a Task is one model, it has one seed),
        and the pick's bootstrap CI across them. Default: one run (`seed=` or TrainConfig's seed).
        python, numpy and torch are seeded with the seed before each make (as `--task` does), so a
        seed's curve depends neither on the route nor on the seeds before it.
    pick_on : str, optional
        The column the pick reads: "loss" (default), "smooth_loss", "log10_loss", or a value of the
        task's evaluate, e.g. "dev_loss" (torch-lr-finder's val_loader mode): then evaluate runs every
        step unless eval_every_steps says otherwise, and only eval steps are picked on.
    pick_args : mapping, optional
        Settings of `analysis.pick.pick_exponent` (n_bins, bin_width, column, skip_start_frac,
        skip_end_frac, n_boot, ci_level, seed); `result.repick(...)` changes them without training.
    **fields
        TrainConfig's fields by name: step_mode ("exp", the default, or "linear": lr evenly spaced from
        the first lr to the last; the pick still reads lre), eval_every_steps, wandb_mode (offline unless
        $WANDB_MODE says otherwise), wandb_project, wandb_group (default a new "range-test-<id>",
        `python -m analysis wandb --group ...` reads it),
        stop_on_climb, climb_factor, smooth_beta, device, num_threads, task_args, final_eval (off by
        default here: no held-out pass when a run ends, its last model trained at the range's top lr),
        ... Checkpoints go to a temporary folder unless ckpt_dir is given.

    Returns
    -------
    RangeTestResult

    Raises
    ------
    LrscanError
        An unknown keyword (naming the valid ones), a bad value, a Task with several seeds, a task
        that is not one: before any run exists.
    """
    t0 = time.monotonic()
    steps = whole_number(steps, "steps", where="range_test", minimum=2)
    unknown = sorted(set(fields) - set(field_names()))
    if unknown:
        valid = [*OWN_KEYWORDS, *(n for n in field_names() if n not in NOT_KEYWORDS and n not in OWN_KEYWORDS)]
        raise LrscanError(f"range_test: unknown keyword(s) {', '.join(map(repr, unknown))}. Valid keywords: "
                          f"{', '.join(valid)}")
    for name, why in NOT_KEYWORDS.items():
        if name in fields and not (name == "schedule" and fields[name] == SCHEDULES[0]):
            raise LrscanError(f"range_test: {name}={fields[name]!r} is not a keyword here: {why}")
    fields.pop("schedule", None)
    seeds = check_seeds(task, seeds, fields, where="range_test")
    task_args = dict(fields.pop("task_args", None) or {})
    if task_args and isinstance(task, Task):
        raise LrscanError("range_test: task_args go to a function make(seed, **task_args); a Task is already made")
    pick_args = dict(pick_args or {})
    _check_pick_args(pick_args)
    lre_min, lre_max = _lre_range(lre_min, lre_max, start_lr, end_lr)  # None: the optimizer family's default
    column = _pick_column(pick_on, pick_args)
    pick_args[PICK_COLUMN] = column
    on_eval_steps = column not in STEP_COLUMNS
    if on_eval_steps:
        if fields.get("eval_every_steps", 1) < 1:
            raise LrscanError(f"range_test: pick_on={column!r} is logged on eval steps only, and "
                              f"eval_every_steps={fields['eval_every_steps']!r} makes none: give eval_every_steps >= 1")
        fields.setdefault("eval_every_steps", 1)  # torch-lr-finder's val_loader mode: every step

    label = task_label(task)
    own_ckpt = "ckpt_dir" not in fields
    # the range's ends are known once the first task shows its optimizer; checked with the lecture's until then
    ends = Range(*SGD_RANGE, "") if lre_min is None or lre_max is None else Range(lre_min, lre_max, "given")
    # no held-out pass at the end (final_eval): the last model trained at the range's top lr, nothing judges it
    base = TrainConfig(**{"num_threads": torch.get_num_threads(), "ckpt_every_steps": 0, "samples": 0,
                          "final_eval": False, **fields},
                       schedule="range", lre_min=ends.lre_min if lre_min is None else lre_min,
                       lre_max=ends.lre_max if lre_max is None else lre_max, steps=steps, task=label,
                       task_args=task_args)
    group = base.wandb_group or f"range-test-{new_run_id()}"
    base = base.replace(wandb_group=group)
    seeds = seeds or [base.seed]

    collected: list[pd.DataFrame] = []
    runs: list[dict[str, Any]] = []
    with restored_globals(), (tempfile.TemporaryDirectory(prefix="lrscan-range-test-") if own_ckpt
                               else nullcontext()) as tmp:
        if own_ckpt:
            base = base.replace(ckpt_dir=tmp)
        tasks, made = [], []  # each seed's task, and the global random states its make left (its run starts there)
        for seed in seeds:
            tasks.append(make_seeded(task, seed, task_args, where="range_test"))
            made.append(rngstate.capture())
        ends = fill_range(lre_min, lre_max, tasks[0].optimizer)
        if ends.lre_min >= ends.lre_max:
            raise LrscanError(f"range_test: the range's ends lre_min={ends.lre_min:g}, lre_max={ends.lre_max:g} "
                              f"({ends.why}): lre_min must be below lre_max")
        base = base.replace(lre_min=ends.lre_min, lre_max=ends.lre_max)
        if on_eval_steps and any(one.evaluate is None for one in tasks):
            raise LrscanError(f"range_test: pick_on={column!r} needs a task with evaluate(model) -> "
                              f"{{{column!r}: ...}}; this task has none")
        cfgs = [base.replace(run_id=new_run_id(), seed=seed,
                             device=device_of(one.model, fields.get("device"), where="range_test"))
                for seed, one in zip(seeds, tasks)]
        chunks: list[list[tuple[np.ndarray, dict[str, np.ndarray]]]] = [[] for _ in seeds]

        def on_steps(k: int):
            def collect(step: np.ndarray, columns: dict[str, np.ndarray]) -> None:
                chunks[k].append((np.array(step, dtype=np.int64), {key: np.array(v) for key, v in columns.items()}))
            return collect

        # the seeds as one pack where their tasks can pack, else one after another (pipeline/pack/functional.py)
        with ExitStack() as restoring:
            for one in tasks:
                restoring.enter_context(_restored(one))
            summaries = train_seeds(cfgs, tasks, [on_steps(k) for k in range(len(seeds))], made)
        for cfg, rows, summary in zip(cfgs, chunks, summaries):
            collected.append(_steps_frame(cfg, rows))
            runs.append({"run_id": cfg.run_id, SEED_COLUMN: cfg.seed, **summary})
            if column not in collected[-1].columns:
                logged = [c for c in collected[-1].columns if c not in ("run_id", SEED_COLUMN, keys.STEP_COLUMN)]
                raise LrscanError(f"range_test: pick_on={column!r}, but run {cfg.run_id} logged no {column!r} "
                                  f"(its columns: {', '.join(logged)}); evaluate(model) must return it")

    steps_frame = pd.concat(collected, ignore_index=True)
    runs_frame = pd.DataFrame(runs)
    try:
        pick = _pick(steps_frame, runs_frame, pick_args)
    except LrscanError as e:  # the runs are kept: say where they are
        where = f"W&B group {group!r}" if base.wandb_mode != "disabled" else "wandb_mode='disabled': not kept"
        raise LrscanError(f"range_test: no pick from runs {', '.join(r['run_id'] for r in runs)} ({where}): {e}") \
            from None
    return RangeTestResult(
        pick=pick, steps=steps_frame, runs=runs_frame,
        run_ids=[r["run_id"] for r in runs], seeds=[int(r[SEED_COLUMN]) for r in runs], group=group,
        wandb_mode=base.wandb_mode, seconds=time.monotonic() - t0, pick_args=pick_args,
        task=task, task_args=task_args, fields={k: v for k, v in fields.items() if k != "wandb_group"},
        task_notes=list(dict.fromkeys(n for one in tasks for n in one.notes)), range=ends, n_steps=steps,
    )


# -- the task, its seeds, its label -----------------------------------------------------------------


# -- leaving no trace ---------------------------------------------------------------------------------


@contextmanager
def _restored(task: Task) -> Iterator[None]:
    """The task's model (parameters, gradients, buffers, train/eval modes), optimizer and scaler as they were.

    Parameters and buffers are copied back in place, so the optimizer keeps pointing at them and
    anything else holding them (an EMA copy, a hook) sees the old values.
    """
    model, optimizer, scaler = task.model, task.optimizer, task.scaler
    tensors = [t for t in (*model.parameters(), *model.buffers())]
    saved = [t.detach().clone() for t in tensors]
    grads = [None if p.grad is None else p.grad.detach().clone() for p in model.parameters()]
    modes = [m.training for m in model.modules()]
    optimizer_state = copy.deepcopy(optimizer.state_dict())
    scaler_state = copy.deepcopy(scaler.state_dict()) if scaler is not None else None
    # a scaler that has not scaled yet has no scale tensor, and one between steps no per-optimizer state
    scaler_fresh = scaler is not None and getattr(scaler, "_scale", None) is None
    scaler_idle = scaler is not None and not getattr(scaler, "_per_optimizer_states", None)
    try:
        yield
    finally:
        with torch.no_grad():
            for t, value in zip(tensors, saved):
                t.copy_(value)
        for p, g in zip(model.parameters(), grads):
            p.grad = g
        for m, mode in zip(model.modules(), modes):
            m.training = mode
        optimizer.load_state_dict(optimizer_state)
        if scaler is not None:
            scaler.load_state_dict(scaler_state)
            if scaler_fresh:
                scaler._scale = scaler._growth_tracker = None
            if scaler_idle:
                scaler._per_optimizer_states.clear()


# -- frames and the pick ------------------------------------------------------------------------------


def _steps_frame(cfg: TrainConfig, chunks: list[tuple[np.ndarray, dict[str, np.ndarray]]]) -> pd.DataFrame:
    """One run's rows as `analysis.load_runs` gives them: ids, the config the pick reads, the logged keys."""
    if not chunks:
        raise LrscanError(f"run {cfg.run_id}: the range test logged no step")
    step = np.concatenate([s for s, _ in chunks])
    names = list(dict.fromkeys(k for _, columns in chunks for k in columns))
    values = {k: np.concatenate([c.get(k, np.full(len(s), np.nan)) for s, c in chunks]) for k in names}
    return pd.DataFrame({
        "run_id": pd.array([cfg.run_id] * len(step), dtype="string"),
        SEED_COLUMN: np.full(len(step), cfg.seed, dtype=np.int64),
        "schedule": cfg.schedule, "lre_min": cfg.lre_min, "lre_max": cfg.lre_max,
        keys.STEP_COLUMN: step, **values,
    })


def _lre_range(lre_min: float | None, lre_max: float | None, start_lr: float | None,
               end_lr: float | None) -> tuple[float | None, float | None]:
    """The range's ends as exponents, each given as an exponent or as an lr (not both); None: not given."""
    ends: list[float | None] = []
    for exponent, lr, (lre_name, lr_name) in ((lre_min, start_lr, ("lre_min", "start_lr")),
                                              (lre_max, end_lr, ("lre_max", "end_lr"))):
        if exponent is not None and lr is not None:
            raise LrscanError(f"range_test: {lre_name}={exponent!r} and {lr_name}={lr!r} name the same end of the "
                              f"range: give one ({lre_name} = log10({lr_name}))")
        if lr is None:
            ends.append(None if exponent is None else real_number(exponent, lre_name, where="range_test"))
            continue
        ends.append(math.log10(real_number(lr, lr_name, where="range_test", positive=True,
                                           what="a learning rate > 0, e.g. 1e-5")))
    return ends[0], ends[1]


def _pick_column(pick_on: str | None, pick_args: Mapping[str, Any]) -> str:
    """The column the pick reads: pick_on, or pick_args' column (not two different ones), default the loss."""
    given = pick_args.get(PICK_COLUMN)
    if pick_on is not None and given is not None and pick_on != given:
        raise LrscanError(f"range_test: pick_on={pick_on!r} and pick_args={{'column': {given!r}}}: give one")
    column = pick_on if pick_on is not None else given if given is not None else keys.LOSS
    if not isinstance(column, str) or not column:
        raise LrscanError(f"range_test: pick_on={column!r}: expected a column name, e.g. 'loss' or 'dev_loss'")
    return column


def _check_pick_args(pick_args: Mapping[str, Any]) -> None:
    import inspect

    valid = [p for p in inspect.signature(pick_exponent).parameters if p not in ("steps", "runs")]
    unknown = sorted(set(pick_args) - set(valid))
    if unknown:
        raise LrscanError(f"range_test: pick_args has unknown key(s) {', '.join(map(repr, unknown))}. "
                          f"Valid keys: {', '.join(valid)}")


def _pick(steps: pd.DataFrame, runs: pd.DataFrame, pick_args: Mapping[str, Any]) -> ExponentPick:
    _check_pick_args(pick_args)
    column = pick_args.get(PICK_COLUMN, keys.LOSS)
    if column not in STEP_COLUMNS and column in steps.columns:
        # an evaluate value exists on eval steps only: the other rows are not measured, not a divergence
        # (a run that diverged says so in runs' diverged_at_step, which the pick cuts at)
        steps = steps.loc[steps[column].notna()]
    return pick_exponent(steps, runs, **pick_args)
