"""`prove`: train candidate lrs against each other on your own model, from Python, and let the held-out loss decide.

    from lrscan.pipeline import prove, range_test
    result = range_test(make, seeds=[1, 2, 3, 4, 5], lre_min=-4, lre_max=-1)
    proof = result.prove(steps=2000, seeds=[1, 2, 3])      # the range test's suggestions as candidates
    proof = prove(make, [1e-3, 3e-3, 1e-2], steps=2000, seeds=[1, 2, 3])   # or your own lrs
    proof.table        # name, suggested_by, lr, lre, losses (per seed), seeds, mean, diff_to_best, diff_ci
    proof.best_lr, proof.decision.verdict(), proof.plot()

Each candidate x seed is one real training run of `pipeline.train.loop.train` at a constant lr
(every step logged to W&B, one group for all of them), built afresh by `make(seed)`: the same seed
gives the same init and batches at every lr, so the seeds pair. A run is judged by
`evaluate(model)["dev_loss"]` at its end, or, for a task without `evaluate`, by its mean training
loss over the last 10% of steps (`proof.judged_by` says which). The table and decision are
`analysis.prove`'s, the same as the study's prove stage and `python -m analysis` on an lr grid.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from lrscan.analysis.prove import TAIL_FRAC, TRAIN_TAIL, ProveDecision, grid_candidates, prove_decision, prove_table
from lrscan.pipeline import keys
from lrscan.pipeline.config import TrainConfig, field_names
from lrscan.pipeline.errors import LrscanError
from lrscan.pipeline.study.inputs import learning_rates, whole_number
from lrscan.pipeline.study.prove import run_name
from lrscan.pipeline.train.loop import new_run_id, train
from lrscan.pipeline.train.task import Task, apply_lr

if TYPE_CHECKING:
    from matplotlib.axes import Axes

NOT_KEYWORDS = ("schedule", "lr", "steps", "seed", "task", "resume", "run_id")


@dataclass
class Proof:
    """What `prove` trained and decided: the table (best first), the decision, the per-run losses."""

    table: pd.DataFrame
    decision: ProveDecision
    runs: pd.DataFrame = field(repr=False)   # run_id, name, lr, seed, loss, judged_by
    steps: int
    group: str
    seconds: float

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

    def apply(self, optimizer: torch.optim.Optimizer) -> float:
        """Set the proven lr (`best_lr`) on every param group of `optimizer`, keeping the groups' ratios as
        `RangeTestResult.apply` does (`pipeline.train.task.apply_lr`); returns the lr set."""
        return apply_lr(optimizer, self.best_lr, where="Proof.apply")

    def plot(self, ax: Axes | None = None) -> Axes:
        """analysis.plots' prove figure: judged loss after the budget against lr, each seed and the mean."""
        from lrscan.analysis.plots import plot_prove

        return plot_prove(self.table, steps=self.steps, judged_by=self.judged_by, ax=ax)

    def __str__(self) -> str:
        d = self.decision
        rows = [f"  {r['name']:<16} lr {r['lr']:<10.4g} mean {r['mean']:.4f}  diff {r['diff_to_best']:+.4f}"
                for _, r in self.table.iterrows()]
        return "\n".join([f"prove: {len(self.table)} candidates x {d.n_seeds} seeds, {self.steps} steps, judged by "
                          f"{self.judged_by} (W&B group {self.group}, {self.seconds:.1f} s)",
                          f"proven: {d.winner} lr {d.lr:.4g}. {d.verdict()}", *rows])


def prove(task: Callable[..., Task] | str, lrs: Sequence[float] | pd.DataFrame, *, steps: int,
          seeds: Sequence[int] = (1, 2, 3), **fields: Any) -> Proof:
    """Train each lr in `lrs` at a constant lr for `steps` steps on each seed; the lowest mean judged loss wins.

    Parameters
    ----------
    task : function or str
        `make(seed, **task_args) -> Task`, or "path/to/file.py:make". A `Task` object is one model
        with one init: it cannot be re-built per candidate and seed, so it is refused in one line.
    lrs : list of float, or a candidates frame
        The lrs; or `analysis.prove.prove_candidates`' frame (name, suggested_by, lr, lre), as
        `RangeTestResult.prove` passes it.
    steps, seeds : int, list of int
        The budget of each run, and the paired seeds.
    **fields
        TrainConfig fields: wandb_mode, wandb_project, wandb_group (default "prove-<id>"), task_args,
        eval_every_steps, device, ...
    """
    from lrscan.pipeline.study.range_test import _device_of, _make, _nothing, _restored_globals, _seeds

    t0 = time.monotonic()
    if isinstance(task, Task):
        raise LrscanError("prove: a Task object is one model; proving trains a fresh one per candidate and seed: "
                          "pass the function make(seed) -> Task that built it (or 'path/file.py:make')")
    bad = sorted(set(fields) - set(field_names())) + sorted(set(fields) & set(NOT_KEYWORDS))
    if bad:
        raise LrscanError(f"prove: {', '.join(map(repr, bad))} not a keyword here (lrs, steps and seeds say what "
                          f"each run trains; other keywords are TrainConfig fields)")
    steps = whole_number(steps, "steps", where="prove", minimum=1)
    candidates = lrs.reset_index(drop=True) if isinstance(lrs, pd.DataFrame) else _lr_candidates(lrs)
    seeds = _seeds(task, seeds, {})
    task_args = dict(fields.pop("task_args", None) or {})
    own_ckpt = "ckpt_dir" not in fields
    base = TrainConfig(**{"num_threads": torch.get_num_threads(), "ckpt_every_steps": 0, "samples": 0, **fields},
                       schedule="constant", steps=int(steps), task=_label(task), task_args=task_args)
    group = base.wandb_group or f"prove-{new_run_id()}"
    base = base.replace(wandb_group=group)

    rows = []
    with _restored_globals(), (tempfile.TemporaryDirectory(prefix="lrscan-prove-") if own_ckpt else _nothing()) as tmp:
        if own_ckpt:
            base = base.replace(ckpt_dir=tmp)
        for _, c in candidates.iterrows():
            for seed in seeds:
                one = _make(task, seed, task_args)
                cfg = base.replace(run_id=new_run_id(), seed=seed, lr=float(c["lr"]),
                                   wandb_name=run_name(str(c["name"]), float(c["lr"])),
                                   wandb_tags=("prove", *[s.strip() for s in str(c["suggested_by"]).split(",")]))
                cfg = cfg.replace(device=_device_of(one.model, fields.get("device")))
                losses: list[np.ndarray] = []
                summary = train(cfg, task=one, on_steps=lambda s, cols, out=losses: out.append(np.array(cols["loss"])))
                rows.append({"run_id": cfg.run_id, "name": c["name"], "lr": cfg.lr, "seed": float(seed),
                             **_judged(summary, np.concatenate(losses) if losses else np.zeros(0))})
    runs = pd.DataFrame(rows)
    table = prove_table(runs, candidates)
    return Proof(table=table, decision=prove_decision(table), runs=runs, steps=int(steps), group=group,
                 seconds=time.monotonic() - t0)


def _lr_candidates(lrs: Any) -> pd.DataFrame:
    return grid_candidates(learning_rates(lrs, "lrs", where="prove"))


def _judged(summary: dict[str, Any], losses: np.ndarray) -> dict[str, Any]:
    """A run's judged loss: its final dev_loss, else its mean training loss over the last 10% of steps."""
    if summary.get(keys.DIVERGED_AT_STEP) is not None:
        return {"loss": math.inf, "judged_by": keys.DEV_LOSS if keys.DEV_LOSS in summary else TRAIN_TAIL}
    dev = summary.get(keys.DEV_LOSS)
    if dev is not None and math.isfinite(float(dev)):
        return {"loss": float(dev), "judged_by": keys.DEV_LOSS}
    tail = losses[-max(1, math.ceil(len(losses) * TAIL_FRAC)):]
    return {"loss": float(np.mean(tail)) if len(tail) else math.inf, "judged_by": TRAIN_TAIL}


def _label(task: Any) -> str:
    from lrscan.pipeline.study.range_test import _task_label

    return _task_label(task)
