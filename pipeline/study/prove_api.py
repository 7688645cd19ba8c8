"""`prove`: train candidate lrs against each other on your own model, from Python, at the run's horizon and schedule.

    from lrscan.pipeline import prove, range_test
    result = range_test(make, seeds=[1, 2, 3, 4, 5], lre_min=-4, lre_max=-1)
    proof = result.prove(horizon=2000, seeds=[1, 2, 3])                   # the suggestions, constant lr, 2000 steps
    proof = result.prove(horizon=12000, schedule=[(9000, 0.1)])           # the run you will make: lr x 0.1 at 9000
    proof = prove(make, [1e-3, 3e-3, 1e-2], horizon=2000, seeds=[1, 2, 3])   # or your own lrs, exactly these
    proof.table        # analysis.judge's table: per candidate its losses per seed, mean, status against the pick
    proof.best_lr, proof.verdict.opening(), print(proof), proof.plot(), proof.to_dict()

The proof answers "which lr trains best for the run I am about to make": each candidate x seed is
one real training run of that length (`horizon`, steps) with that schedule (pipeline/study/horizon.py:
constant, or step decays as factors of the candidate's peak lr), every step logged to W&B in one
group, built afresh by `make(seed)`: the same seed gives the same init and batches at every lr, so the
seeds pair. The K x S runs train in packs (pipeline/pack/functional.py: one vmapped step for all
members, each at its own lr) wherever the task packs, else one after another, saying why once; the
numbers are the same either way. A run is judged by its final held-out loss (`evaluate(model)
["dev_loss"]`), or, for a task without `evaluate`, by its mean training loss over the last 10% of
steps (`proof.judged_by`), one criterion for every run. The verdict is the judge's (pipeline/study/judging.py).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from lrscan.pipeline import keys
from lrscan.pipeline.config import TrainConfig, field_names
from lrscan.pipeline.errors import LrscanError
from lrscan.pipeline.pack.functional import train_seeds
from lrscan.pipeline.study.horizon import StepDecay, check_horizon, check_schedule
from lrscan.pipeline.study.judging import Judgement, final_losses, grid_candidates, judge
from lrscan.pipeline.study.own_task import (
    check_lrs,
    check_seeds,
    device_of,
    make_seeded,
    restored_globals,
    task_label,
)
from lrscan.pipeline.study.prove_stage import run_name
from lrscan.pipeline.train import rngstate
from lrscan.pipeline.train.loop import new_run_id
from lrscan.pipeline.train.task import Task

if TYPE_CHECKING:
    from matplotlib.axes import Axes

WHERE = "prove"
NOT_KEYWORDS = ("lr", "seed", "task", "resume", "run_id", "decay_steps", "decay_lrs")
# the range test's own settings, which a result's prove does not inherit: its eval cadence (every step when it
# picked on dev_loss), its range and its stops belong to the range test, not to the runs being proven
RANGE_ONLY = ("eval_every_steps", "lre_min", "lre_max", "step_mode", "stop_on_climb", "climb_factor",
              "climb_burn_in_steps", "smooth_beta", "schedule", "steps")


@dataclass
class Proof:
    """What `prove` trained and decided: the table (best first), the verdict, the per-run losses."""

    table: pd.DataFrame
    verdict: Judgement
    runs: pd.DataFrame = field(repr=False)   # run_id, name, lr, seed, loss, diverged, criterion
    horizon: int
    schedule: StepDecay
    group: str
    seconds: float
    notes: list[str] = field(default_factory=list)  # what the task said (Task.notes: a scheduler not stepped, ...)

    @property
    def steps(self) -> int:
        """Each run's length: the horizon."""
        return self.horizon

    @property
    def decision(self) -> Judgement:
        """The verdict under its earlier name (`proof.decision.verdict()` prints the opening sentence)."""
        return self.verdict

    @property
    def best_lr(self) -> float:
        return self.verdict.chosen_lr

    @property
    def best(self) -> str:
        return self.verdict.chosen

    @property
    def judged_by(self) -> str:
        return self.verdict.criterion if self.verdict.criterion == keys.DEV_LOSS else self.verdict.criterion_text()

    def apply(self, target: Any) -> float:
        """Set the proven lr (`best_lr`) where you set yours; returns the lr set (`pipeline.train.apply.apply_lr`).

        target: a torch optimizer (every param group, keeping their ratios and a scheduler's `initial_lr`,
        as `RangeTestResult.apply` does), a LightningModule (its hparams' lr), an HF `TrainingArguments`
        or `Trainer`."""
        from lrscan.pipeline.train.apply import apply_lr

        return apply_lr(self.best_lr, target)

    def plot(self, ax: Axes | None = None) -> Axes:
        """analysis.plots' prove figure: judged loss after the horizon against lr, each seed and the mean."""
        from lrscan.analysis.plots import plot_prove

        return plot_prove(self.table, steps=self.horizon, judged_by=self.verdict.criterion_label(),
                          chosen=self.verdict.chosen, ax=ax)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: the verdict's words, numbers and table (analysis.judge), the horizon and schedule."""
        return {**self.verdict.to_dict(), "horizon": self.horizon, "schedule": self.schedule.to_dict(),
                "judged_by": self.judged_by, "group": self.group, "seconds": round(self.seconds, 1)}

    def __str__(self) -> str:
        return "\n".join([f"prove: {self.horizon} steps ({self.schedule.text()}), W&B group {self.group}, "
                          f"{self.seconds:.1f} s", str(self.verdict), *[f"note: {n}" for n in self.notes]])


def prove(task: Callable[..., Task] | str, lrs: Sequence[float] | np.ndarray | pd.DataFrame, *,
          steps: int | None = None, seeds: Sequence[int] = (1, 2, 3), horizon: int | None = None,
          schedule: Any = None, pack: int | None = None, **fields: Any) -> Proof:
    """Train each lr in `lrs` for `horizon` steps with `schedule` on each seed; the lowest mean judged loss wins.

    Parameters
    ----------
    task : function or str
        `make(seed, **task_args) -> Task`, or "path/to/file.py:make". A `Task` object is one model
        with one init: it cannot be re-built per candidate and seed, so it is refused in one line.
    lrs : list, numpy array, or a candidates frame
        The (peak) lrs, trained exactly as given; or a candidates frame (name, suggested_by, lr, lre),
        as `RangeTestResult.prove` passes it.
    horizon : int
        The length of the run you are about to make, in steps: each candidate trains that long.
        `steps=` is the same number under its earlier name.
    schedule : "constant" (default), StepDecay, {"at": [...], "factors": [...]} or [(step, factor), ...]
        The schedule you will train with; a step decay's lrs are each candidate's lr times the factors.
    seeds : list of int
        The paired seeds (the same init and batches at every lr).
    pack : int or None
        Runs trained together in one vmapped pack at most (default: all K x S; 1: one after another).
    **fields
        TrainConfig fields: wandb_mode, wandb_project, wandb_group (default "prove-<id>"), task_args,
        eval_every_steps, device, ...
    """
    t0 = time.monotonic()
    if isinstance(task, Task):
        raise LrscanError(f"{WHERE}: a Task object is one model; proving trains a fresh one per candidate and seed: "
                          "pass the function make(seed) -> Task that built it (or 'path/file.py:make')")
    bad = sorted(set(fields) - set(field_names())) + sorted(set(fields) & set(NOT_KEYWORDS))
    if bad:
        raise LrscanError(f"{WHERE}: {', '.join(map(repr, bad))} not a keyword here (lrs, horizon, schedule and seeds "
                          f"say what each run trains; other keywords are TrainConfig fields)")
    if steps is not None and horizon is not None and steps != horizon:
        raise LrscanError(f"{WHERE}: steps={steps!r} and horizon={horizon!r}: one length (horizon; steps is its "
                          f"earlier name)")
    if steps is None and horizon is None:
        raise LrscanError(f"{WHERE}: give horizon= (the length in steps of the run you will train; the best lr "
                          f"depends on it)")
    horizon = check_horizon(horizon if horizon is not None else steps, where=WHERE)
    plan = check_schedule(fields.pop("schedule", None) if schedule is None else schedule, horizon=horizon,
                          where=WHERE)
    if pack is not None and (isinstance(pack, bool) or not isinstance(pack, (int, np.integer)) or pack < 1):
        raise LrscanError(f"{WHERE}: pack={pack!r}: the most runs trained together, a whole number >= 1")
    candidates = lrs.reset_index(drop=True) if isinstance(lrs, pd.DataFrame) else _exact(check_lrs(lrs, where=WHERE))
    seeds = check_seeds(task, seeds, {}, where=WHERE)
    task_args = dict(fields.pop("task_args", None) or {})
    own_ckpt = "ckpt_dir" not in fields
    base = TrainConfig(**{"num_threads": torch.get_num_threads(), "ckpt_every_steps": 0, "samples": 0, **fields},
                       steps=horizon, task=task_label(task), task_args=task_args, **plan.fields(1.0))
    group = base.wandb_group or f"prove-{new_run_id()}"
    base = base.replace(wandb_group=group)

    wanted = [(c, seed) for _, c in candidates.iterrows() for seed in seeds]
    size = len(wanted) if pack is None else int(pack)
    steps_rows, run_rows, notes = [], [], {}
    with restored_globals(), (tempfile.TemporaryDirectory(prefix="lrscan-prove-") if own_ckpt else nullcontext()
                              ) as tmp:
        if own_ckpt:
            base = base.replace(ckpt_dir=tmp)
        for start in range(0, len(wanted), size):
            chunk = wanted[start:start + size]
            tasks, made, cfgs, losses = [], [], [], []
            for c, seed in chunk:  # each run's task, and the random states its make left (its run starts there)
                tasks.append(make_seeded(task, seed, task_args, where=WHERE))
                notes.update(dict.fromkeys(tasks[-1].notes))
                made.append(rngstate.capture())
                lr = float(c["lr"])
                cfgs.append(base.replace(run_id=new_run_id(), seed=seed, lr=lr, **plan.fields(lr),
                                         wandb_name=run_name(str(c["name"]), lr),
                                         device=device_of(tasks[-1].model, fields.get("device"), where=WHERE),
                                         wandb_tags=("prove", *[s.strip() for s in str(c["suggested_by"]).split(",")])))
                losses.append([])
            on_steps = [lambda s, cols, out=out: out.append(np.array(cols[keys.LOSS])) for out in losses]
            summaries = train_seeds(cfgs, tasks, on_steps, made, who=WHERE, what="runs")
            for (c, seed), cfg, summary, seen in zip(chunk, cfgs, summaries, losses):
                trained = np.concatenate(seen) if seen else np.zeros(0)
                steps_rows.append(pd.DataFrame({"run_id": cfg.run_id, keys.STEP_COLUMN: np.arange(len(trained)),
                                                keys.LR: cfg.lr, keys.LOSS: trained}))
                run_rows.append({"run_id": cfg.run_id, "name": c["name"], "seed": float(seed),
                                 keys.DEV_LOSS: summary.get(keys.DEV_LOSS),
                                 keys.DIVERGED_AT_STEP: summary.get(keys.DIVERGED_AT_STEP)})
    # judged as `python -m analysis` judges the same runs read back from W&B: one criterion for every run
    runs = pd.DataFrame(run_rows)
    finals = final_losses(pd.concat(steps_rows, ignore_index=True), runs)
    runs = runs[["run_id", "name", "seed"]].merge(finals.drop(columns="seed"), on="run_id")
    verdict = judge(finals, candidates, steps=horizon, group=group)
    return Proof(table=verdict.table, verdict=verdict, runs=runs, horizon=horizon, schedule=plan, group=group,
                 seconds=time.monotonic() - t0, notes=list(notes))


def _exact(lrs: list[float]) -> pd.DataFrame:
    """The user's own lrs as candidates, each trained exactly at its value."""
    repeated = sorted({lr for lr in lrs if lrs.count(lr) > 1})
    if repeated:
        raise LrscanError(f"{WHERE}: lrs={lrs!r}: {repeated[0]!r} repeated (a candidate is one lr)")
    return grid_candidates(lrs)
