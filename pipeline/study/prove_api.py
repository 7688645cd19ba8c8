"""`prove`: train candidate lrs against each other on your own model, from Python, at the run's horizon and schedule.

    from lrscan.pipeline import prove, range_test
    result = range_test(make, seeds=[1, 2, 3, 4, 5], lre_min=-4, lre_max=-1)
    proof = result.prove(horizon=2000, seeds=[1, 2, 3])                   # the suggestions, constant lr, 2000 steps
    proof = result.prove(horizon=12000, schedule=[(9000, 0.1)])           # the run you will make: lr x 0.1 at 9000
    proof = prove(make, [1e-3, 3e-3, 1e-2], horizon=2000, seeds=[1, 2, 3])   # or your own lrs, exactly these
    proof.table        # name, suggested_by, lr, lre, losses (per seed), seeds, mean, diff_to_best, diff_ci
    proof.best_lr, proof.decision.verdict(), proof.plot(), proof.to_dict()

The proof answers "which lr trains best for the run I am about to make": each candidate x seed is
one real training run of that length (`horizon`, steps) with that schedule (pipeline/study/horizon.py:
constant, or step decays as factors of the candidate's peak lr), every step logged to W&B in one
group, built afresh by `make(seed)`: the same seed gives the same init and batches at every lr, so the
seeds pair. The K x S runs train in packs (pipeline/pack/functional.py: one vmapped step for all
members, each at its own lr) wherever the task packs, else one after another, saying why once; the
numbers are the same either way. A run is judged by its final held-out loss (`evaluate(model)
["dev_loss"]`), or, for a task without `evaluate`, by its mean training loss over the last 10% of
steps (`proof.judged_by`). The table and decision are the judge's (pipeline/study/judging.py).
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
from lrscan.pipeline.study.judging import TAIL_FRAC, ProveDecision, grid_candidates, judge, judged_loss
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
    """What `prove` trained and decided: the table (best first), the decision, the per-run losses."""

    table: pd.DataFrame
    decision: ProveDecision
    runs: pd.DataFrame = field(repr=False)   # run_id, name, lr, seed, loss, judged_by
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
    def best_lr(self) -> float:
        return self.decision.lr

    @property
    def best(self) -> str:
        return self.decision.winner

    @property
    def judged_by(self) -> str:
        kinds = sorted(self.runs["judged_by"].unique())
        return "dev_loss" if kinds == [keys.DEV_LOSS] else (
            f"mean training loss over the last {TAIL_FRAC:.0%} of steps (the task has no evaluate)")

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

        return plot_prove(self.table, steps=self.horizon, judged_by=self.judged_by, ax=ax)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: the chosen lr, the horizon and schedule, the decision and the table."""
        d = self.decision
        return {"chosen_lr": d.lr, "chosen_by": "prove", "winner": d.winner, "verdict": d.verdict(),
                "horizon": self.horizon, "schedule": self.schedule.to_dict(), "judged_by": self.judged_by,
                "n_seeds": d.n_seeds, "group": self.group, "seconds": round(self.seconds, 1),
                "table": [{k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in r.items()}
                          for r in self.table.to_dict("records")]}

    def __str__(self) -> str:
        d = self.decision
        rows = [f"  {r['name']:<16} lr {r['lr']:<10.4g} mean {r['mean']:.4f}  diff {r['diff_to_best']:+.4f}"
                for _, r in self.table.iterrows()]
        return "\n".join([f"prove: {len(self.table)} candidates x {d.n_seeds} seeds, {self.horizon} steps "
                          f"({self.schedule.text()}), judged by {self.judged_by} (W&B group {self.group}, "
                          f"{self.seconds:.1f} s)",
                          f"proven: {d.winner} lr {d.lr:.4g}. {d.verdict()}", *rows,
                          *[f"note: {n}" for n in self.notes]])


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
    rows, notes = [], {}
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
                rows.append({"run_id": cfg.run_id, "name": c["name"], "lr": cfg.lr, "seed": float(seed),
                             **judged_loss(summary, np.concatenate(seen) if seen else np.zeros(0), keys.DEV_LOSS)})
    runs = pd.DataFrame(rows)
    table, decision = judge(runs, candidates)
    return Proof(table=table, decision=decision, runs=runs, horizon=horizon, schedule=plan, group=group,
                 seconds=time.monotonic() - t0, notes=list(notes))


def _exact(lrs: list[float]) -> pd.DataFrame:
    """The user's own lrs as candidates, each trained exactly at its value."""
    repeated = sorted({lr for lr in lrs if lrs.count(lr) > 1})
    if repeated:
        raise LrscanError(f"{WHERE}: lrs={lrs!r}: {repeated[0]!r} repeated (a candidate is one lr)")
    return grid_candidates(lrs)
