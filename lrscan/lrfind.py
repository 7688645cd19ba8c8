"""`lrscan.find`: one call from a model to a proven lr (range test over seeds, then the proof), and its result.

    import lrscan
    found = lrscan.find(make, horizon=2000)   # make(seed) -> lrscan.Task; 2000: the steps you will train
    print(found)                              # the range test, the candidates' table, the decision
    found.plot()                              # the range curve with the candidates | the proof
    found.apply(optimizer)                    # the proven lr on every param group, keeping their ratios

It chains what `range_test` and `RangeTestResult.prove` do, with their defaults: the range's ends by
the optimizer's family, its suggestions (min-loss, fastai's minimum, steepest, valley, the CI's ends)
trained against each other for `horizon` steps on paired seeds, the lowest held-out loss wins. With
`extend=True` a range that does not hold its minimum and its turn is run again where
`suggest_range()` says, before anything is proven. Given a Task (one model) instead of `make`, the
range test runs once and nothing is proven: the result says so.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lrscan.pipeline.errors import LrscanError
from lrscan.pipeline.study.horizon import check_horizon, check_schedule
from lrscan.pipeline.study.own_task import check_lrs, check_seeds
from lrscan.pipeline.study.prove_api import Proof
from lrscan.pipeline.study.range_test import RangeTestResult, range_test
from lrscan.pipeline.train.apply import apply_lr
from lrscan.pipeline.train.task import Task

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DEFAULT_SEEDS = (1, 2, 3)
MAX_EXTENSIONS = 2  # extend=True: at most this many further ranges
ONE_TASK = ("a Task is one model with one seed: the range test ran once, with no CI across seeds, and its "
            "suggestions were not trained against each other; pass make(seed) -> Task to prove them")


@dataclass
class FindResult:
    """What `lrscan.find` measured and decided: the range test(s), the proof, the lr to train with.

    range_test: the last range test (`RangeTestResult`); ranges: every range test run, first to last
    (more than one with extend=True); proof: the `Proof` (None when nothing was proven, `not_proven`
    says why).
    """

    range_test: RangeTestResult
    proof: Proof | None
    ranges: list[RangeTestResult] = field(repr=False)
    not_proven: str = ""
    seconds: float = 0.0

    @property
    def proven(self) -> bool:
        """True when the lr was proven by training the candidates against each other."""
        return self.proof is not None

    @property
    def best_lr(self) -> float:
        """The proven lr; without a proof, the range test's min-loss pick."""
        return self.proof.best_lr if self.proof is not None else self.range_test.best_lr

    @property
    def table(self):
        """The proof's table (analysis.judge: name, suggested_by, lr, seeds, losses, mean, diff, ..., status), best
        first; without a proof, the range test's suggestions (name, lr)."""
        import pandas as pd

        if self.proof is not None:
            return self.proof.table
        suggestions = self.range_test.suggestions
        return pd.DataFrame({"name": list(suggestions), "lr": list(suggestions.values())})

    def apply(self, target: Any) -> float:
        """Set `best_lr` where you set yours; returns the lr set (`lrscan.apply_lr`).

        target: a torch optimizer (every param group, keeping the ratios they were built with, and a
        scheduler's `initial_lr`, as `RangeTestResult.apply` and `Proof.apply` do), a LightningModule
        (its hparams' lr), an HF `TrainingArguments` or `Trainer`."""
        return apply_lr(self.best_lr, target)

    def suggest_range(self) -> dict[str, Any] | None:
        """The range to run next when the last range did not hold the minimum and the turn (else None)."""
        return self.range_test.suggest_range()

    def plot(self) -> Figure:
        """One figure, two panels: the range curve against lr with the candidates marked (the proven one
        highlighted), and the proof (judged loss against lr, each seed and the mean)."""
        import matplotlib.pyplot as plt

        from lrscan.analysis.plots import plot_range_candidates

        if self.proof is None:
            fig, ax = plt.subplots(figsize=(9, 4.5), layout="constrained")
            self.range_test.plot(ax=ax, x="lr")
            ax.set_title(f"Range test (not proven): pick lr {self.best_lr:.3g}")
            return fig
        fig, (left, right) = plt.subplots(1, 2, figsize=(15, 5), layout="constrained")
        plot_range_candidates(self.range_test.pick, self.proof.table, winner=self.proof.best, ax=left)
        self.proof.plot(ax=right)
        return fig

    def __str__(self) -> str:
        lines = [f"lrscan.find: lr {self.best_lr:.4g} ({'proven' if self.proven else 'NOT proven'}, "
                 f"{self.seconds:.1f} s)"]
        for k, one in enumerate(self.ranges):
            if len(self.ranges) > 1:
                lines.append(f"-- range test {k + 1} of {len(self.ranges)}")
            lines.append(str(one))
        lines.append(str(self.proof) if self.proof is not None else f"not proven: {self.not_proven}")
        return "\n".join(lines)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # IPython and Jupyter print the table
        printer.text(str(self))


def find(make: Callable[..., Task] | Task | str, *, horizon: int, seeds: Sequence[int] = DEFAULT_SEEDS,
         steps: int = 1000, lre_min: float | None = None, lre_max: float | None = None,
         start_lr: float | None = None, end_lr: float | None = None, lrs: Sequence[float] = (),
         prove_seeds: Sequence[int] | None = None, extend: bool = False, schedule: Any = None,
         **fields: Any) -> FindResult:
    """Find a good lr and prove it: the range test over `seeds`, then its suggestions trained against each other.

    Parameters
    ----------
    make : function, str or Task
        `make(seed, **task_args) -> lrscan.Task` (or "path/to/file.py:make"): built afresh for every
        seed and candidate, so the proof is paired over seeds. A `Task` object is one model: the range
        test runs once on it (one seed, no CI) and nothing is proven (`not_proven` says so).
    horizon : int
        The steps the run you are about to make will train: each candidate trains this long, since
        which lr wins depends on the length (a short budget favours large lrs).
    seeds : list of int
        The range test's seeds (its CI is a bootstrap across them); also the proof's unless
        `prove_seeds` is given. numpy arrays are accepted.
    steps, lre_min, lre_max, start_lr, end_lr
        The range test's length and ends, as `range_test` takes them; default ends by the optimizer's
        family (SGD-like 1e-3..1, Adam-like 1e-5..1e-1).
    lrs : list of float
        Your own lrs to prove beside the suggestions.
    extend : bool
        When the range does not hold the loss minimum and the turn where it climbs, run the range
        `suggest_range()` names (up to twice) before proving.
    schedule
        The schedule the run will train with: "constant" (default), a step decay as factors of the peak
        lr ({"at": [9000], "factors": [0.1]} or [(9000, 0.1)]), as `prove` takes it.
    **fields
        `range_test`'s and `prove`'s other keywords (TrainConfig fields): wandb_mode, wandb_project,
        task_args, device, ...

    Returns
    -------
    FindResult
    """
    t0 = time.monotonic()
    horizon = check_horizon(horizon, where="find")
    seeds = check_seeds(None, seeds, {}, where="find")
    prove_seeds = seeds if prove_seeds is None else check_seeds(None, prove_seeds, {}, where="find")
    lrs = check_lrs(lrs, where="find") if len(lrs) else []
    check_schedule(schedule, horizon=horizon, where="find")
    one_task = isinstance(make, Task)
    if one_task and len(seeds) > 1 and tuple(seeds) != DEFAULT_SEEDS:
        raise LrscanError(f"find: seeds={seeds}: a Task is one model, with one seed; pass make(seed) -> Task to run "
                          f"several")
    ranged = {"steps": steps, "lre_min": lre_min, "lre_max": lre_max, "start_lr": start_lr, "end_lr": end_lr}
    ranges = [_called("range_test", range_test, make, seeds=None if one_task else seeds, **ranged, **fields)]
    for _ in range(MAX_EXTENSIONS if extend else 0):
        nxt = ranges[-1].suggest_range()
        if nxt is None:
            break
        ranges.append(_called("range_test", range_test, make, seeds=None if one_task else seeds, **nxt, **fields))
    last = ranges[-1]
    if one_task:
        return FindResult(range_test=last, proof=None, ranges=ranges, not_proven=ONE_TASK,
                          seconds=time.monotonic() - t0)
    proof = _called("prove", last.prove, horizon=horizon, schedule=schedule, seeds=prove_seeds, lrs=lrs,
                    **{k: v for k, v in fields.items() if k != "wandb_group"})
    return FindResult(range_test=last, proof=proof, ranges=ranges, seconds=time.monotonic() - t0)


def _called(name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """`fn(...)`, its errors said as find's: "find: ..." names the function the user called."""
    try:
        return fn(*args, **kwargs)
    except LrscanError as e:
        text = str(e)
        for prefix in (f"{name}: ", "range_test: ", "prove: "):
            if text.startswith(prefix):
                text = text[len(prefix):]
                break
        raise LrscanError(f"find: {text}") from None
