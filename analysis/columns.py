"""From what a run logged to the analysis' columns: the keys of loss, lr and step, what is derived, the alignment.

lrscan's trainer logs `lr`, `lre`, `loss` and `log10_loss` at every step. Other training code logs
other names, fewer keys, and on other steps; the analysis reads them all the same way:

    choice = choose_keys(logged_keys(history))        # or choose_keys(..., loss_key="train/loss")
    frame = canonical_frame(pd.DataFrame(history), choice)

Names tried, in this order (the first one a run logged wins; `--loss-key` / `--lr-key` name another):

    loss   loss, log10_loss (lrscan's), train/loss (HF Trainer), train_loss, training_loss, loss_step
    lr     lr, lre (lrscan's), learning_rate, train/learning_rate (HF Trainer), lr-<Optimizer> as
           Lightning's LearningRateMonitor writes it (lr-SGD, lr-AdamW; lr-Adam/pg1, lr-Adam/pg2 for
           param groups: the first, in name order)
    step   trainer/global_step (Lightning's WandbLogger), train/global_step (HF Trainer), else W&B's _step

Derived when missing: lre = log10(lr), lr = 10**lre, log10_loss = log10(loss), loss = 10**log10_loss.

Alignment: one row per step at which the loss was logged, and its lr is "the lr in force at that
step": the last lr logged at or before it (`commit=False` patterns, lr logged before the loss on
step k and the loss on step k+1, an lr logged once per epoch). Rows where only the lr was logged
carry no loss and are left out (their lr lives on in the rows after them). A loss logged as NaN
is a row with a NaN loss (the history frame's `LOSS_LOGGED` column marks the rows that logged
the loss, NaN or not; the readers fill it), as wandb's own reader gives it; an infinite loss is kept.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline import keys as K

WANDB_STEP = "_step"
LOSS_NAMES = (K.LOSS, K.LOG10_LOSS, "train/loss", "train_loss", "training_loss", "loss_step")
LR_NAMES = (K.LR, K.LRE, "learning_rate", "train/learning_rate")
STEP_NAMES = ("trainer/global_step", "train/global_step")
LOSS_LOGGED = "_loss_logged"  # history column: 1.0 where the row logged the loss (even as NaN), else NaN
LIGHTNING_LR = "lr-<Optimizer>"
# Lightning: "lr-" + optimizer class, "-N" for a second optimizer of the class, "/pgN" or "/<group name>"
# for param groups; it also logs "<that>-momentum" and "<that>-weight_decay", which are not lrs
_LIGHTNING_LR = re.compile(r"^lr-[A-Za-z_][\w.]*(-\d+)?(/[^/]+)?$")
_NOT_LR_SUFFIXES = ("-momentum", "-weight_decay")
# the minimum share of gaps equal to the most common one for a run to have a cadence at all
REGULAR_SHARE = 0.5


@dataclass(frozen=True)
class KeyChoice:
    """The logged keys a run's loss, lr and step come from (None: the run logged none of the names tried)."""

    loss: str | None
    lr: str | None
    step: str = WANDB_STEP
    other_lrs: tuple[str, ...] = ()   # further lr-<Optimizer> keys the run logged, not used

    def as_dict(self) -> dict[str, str | None]:
        return {"loss_key": self.loss, "lr_key": self.lr, "step_key": self.step}


def is_lightning_lr(name: str) -> bool:
    return bool(_LIGHTNING_LR.match(name)) and not name.endswith(_NOT_LR_SUFFIXES)


def logged_keys(history: Mapping[str, np.ndarray]) -> list[str]:
    """The keys of a history (as `pipeline.runlog` reads it) with at least one value that is not NaN."""
    return [k for k, v in history.items() if k != K.STEP_COLUMN and len(v) and not np.all(np.isnan(v))]


def choose_keys(logged: Iterable[str], *, loss_key: str | None = None, lr_key: str | None = None) -> KeyChoice:
    """The keys to read a run's loss, lr and step from, out of the keys it logged (see the module's table)."""
    logged = list(logged)
    have = set(logged)
    loss = loss_key if loss_key is not None else next((k for k in LOSS_NAMES if k in have), None)
    lightning = sorted((k for k in logged if is_lightning_lr(k)), key=_natural)
    if lr_key is not None:
        lr = lr_key
    else:
        lr = next((k for k in LR_NAMES if k in have), lightning[0] if lightning else None)
    step = next((k for k in STEP_NAMES if k in have), WANDB_STEP)
    if loss is not None and loss not in have:
        loss = None
    if lr is not None and lr not in have:
        lr = None
    return KeyChoice(loss=loss, lr=lr, step=step, other_lrs=tuple(k for k in lightning if k != lr))


def keys_to_read(choice: KeyChoice, carried: Sequence[str] = ()) -> list[str]:
    """The history keys `canonical_frame` needs for `choice` (lrscan's pairs both, for exact values)."""
    out = []
    if choice.lr is not None:
        out += [K.LR, K.LRE] if choice.lr in (K.LR, K.LRE) else [choice.lr]
    if choice.loss is not None:
        out += [K.LOSS, K.LOG10_LOSS] if choice.loss in (K.LOSS, K.LOG10_LOSS) else [choice.loss]
    if choice.step != WANDB_STEP:
        out.append(choice.step)
    return list(dict.fromkeys([*out, *carried]))


def canonical_frame(history: pd.DataFrame, choice: KeyChoice, carried: Sequence[str] = ()) -> pd.DataFrame:
    """``step, lr, lre, loss, log10_loss`` and the `carried` columns, one row per step the loss was logged at.

    `history` holds ``step`` (W&B's _step) and the logged keys, NaN where a row lacks one. The step
    comes from `choice.step` when that is not _step (rows without it are left out; rows sharing one
    merge, the last value logged winning); the lr is the lr in force at each step.
    """
    frame = history if choice.step == WANDB_STEP else on_step_key(history, choice.step)
    frame = frame.sort_values(K.STEP_COLUMN, kind="stable")
    loss, log10_loss = _pair(frame, choice.loss, K.LOSS, K.LOG10_LOSS)
    lr, lre = _pair(frame, choice.lr, K.LR, K.LRE)
    step = frame[K.STEP_COLUMN].to_numpy(dtype=np.int64)
    out = pd.DataFrame({
        K.STEP_COLUMN: step,
        K.LR: lr_in_force(step, lr),
        K.LRE: lr_in_force(step, lre),
        K.LOSS: loss,
        K.LOG10_LOSS: log10_loss,
    })
    for key in carried:
        if key not in out.columns:
            out[key] = frame[key].to_numpy(dtype=np.float64) if key in frame.columns else np.nan
    measured = ~(np.isnan(loss) & np.isnan(log10_loss))
    if LOSS_LOGGED in frame.columns:
        measured |= frame[LOSS_LOGGED].notna().to_numpy()
    return out.loc[measured].reset_index(drop=True)


def on_step_key(history: pd.DataFrame, step_key: str) -> pd.DataFrame:
    """The history re-indexed by a logged step counter (Lightning's and HF's global step).

    Those loggers call `wandb.log` several times per training step (the lr monitor, then the
    metrics), so several W&B rows share one global step: they merge into one row, and where two
    rows logged the same key, the later one wins. Rows that did not log the counter are left out.
    """
    frame = history.loc[history[step_key].notna()]
    frame = frame.drop(columns=[K.STEP_COLUMN]).rename(columns={step_key: K.STEP_COLUMN})
    frame[K.STEP_COLUMN] = frame[K.STEP_COLUMN].round().astype(np.int64)
    # GroupBy.last takes each column's last non-NaN value: the merge of the rows of one step
    return frame.groupby(K.STEP_COLUMN, sort=True).last().reset_index()


def lr_in_force(step: np.ndarray, lr: np.ndarray) -> np.ndarray:
    """At each row, the last lr logged at or before its step (`step` sorted); NaN before the first one."""
    lr = np.asarray(lr, dtype=np.float64)
    logged = ~np.isnan(lr)
    if logged.all() or not logged.any():
        return lr
    last = np.maximum.accumulate(np.where(logged, np.arange(len(lr)), -1))
    return np.where(last >= 0, lr[np.maximum(last, 0)], np.nan)


def cadence(steps: np.ndarray) -> int:
    """How often a run logs: the most common gap between its logged steps (1: every step).

    1 as well when it has no regular gap (fewer than half the gaps alike: say steps 1, 2, 4, 8, ...).
    """
    return _regular_gap(_unique(steps)) or 1


def missing_steps(steps: np.ndarray) -> tuple[int, int | None, int]:
    """(steps missing inside the run's own cadence, the step after the first hole, the cadence).

    A run that logs every 10 steps misses nothing between its logged steps; one of its gaps of 20 is
    one missing step. An irregular logger (no cadence) is never said to miss steps.
    """
    unique = _unique(steps)
    every = _regular_gap(unique)
    if every is None:
        return 0, None, 1
    gaps = np.diff(unique)
    holes = np.flatnonzero(gaps > every)
    if not len(holes):
        return 0, None, every
    return int(((gaps[holes] - 1) // every).sum()), int(unique[holes[0]]), every


def _unique(steps: np.ndarray) -> np.ndarray:
    # return_index takes numpy's sorting path: plain np.unique (numpy 2.4) hashes, ~500x slower on 200k distinct steps
    return np.unique(np.asarray(steps, dtype=np.int64), return_index=True)[0]


def _regular_gap(unique_steps: np.ndarray) -> int | None:
    """The most common gap between sorted unique steps, if at least half the gaps are it (ties: the smallest)."""
    gaps = np.diff(unique_steps)
    if len(gaps) == 0:
        return None
    values, counts = np.unique(gaps, return_counts=True)
    best = int(np.argmax(counts))
    return int(values[best]) if counts[best] >= REGULAR_SHARE * len(gaps) else None


def _pair(frame: pd.DataFrame, source: str | None, plain: str, log10: str) -> tuple[np.ndarray, np.ndarray]:
    """(value, log10 value) from the logged key `source`, each filled from the other where missing."""
    n = len(frame)
    if source is None:
        return np.full(n, np.nan), np.full(n, np.nan)
    from_source = frame[source].to_numpy(dtype=np.float64)
    if source == log10:
        logged_log = from_source
        logged = frame[plain].to_numpy(dtype=np.float64) if plain in frame.columns else np.full(n, np.nan)
    else:
        logged = from_source
        own = source == plain and log10 in frame.columns
        logged_log = frame[log10].to_numpy(dtype=np.float64) if own else np.full(n, np.nan)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        value = np.where(np.isnan(logged), np.power(10.0, logged_log), logged)
        value_log = np.where(np.isnan(logged_log), np.log10(logged), logged_log)
    return value, value_log


def _natural(name: str) -> list:
    """Sort key that orders pg2 before pg10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]
