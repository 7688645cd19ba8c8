"""From what a run logged to the analysis' columns: the keys of loss, lr and step, what is derived, the alignment.

lrscan's trainer logs `lr`, `lre`, `loss` and `log10_loss` at every step. Other training code logs
other names, fewer keys, and on other steps; the analysis reads them all the same way:

    choice = choose_keys(logged_keys(history))        # or choose_keys(..., loss_key="train/loss")
    frame = canonical_frame(pd.DataFrame(history), choice)

Names tried, in this order (the first one a run logged wins; `--loss-key` / `--lr-key` name another):

    loss   loss, log10_loss (lrscan's), train/loss (HF Trainer), raw_loss (fastai's batch loss: its
           train_loss is smoothed), train_loss, training_loss; then each with Lightning's _step suffix
           (`self.log("train_loss", on_step=True, on_epoch=True)` logs train_loss_step, a per-step
           loss, and train_loss_epoch, which never is one)
    lr     lr, lre (lrscan's), learning_rate, train/learning_rate (HF Trainer), lr_0 (fastai: param
           group 0 of lr_0, lr_1, ...), lr-<Optimizer> as Lightning's LearningRateMonitor writes it
           (lr-SGD, lr-AdamW; lr-Adam/pg1, lr-Adam/pg2 for param groups: the first, in name order)
    step   trainer/global_step (Lightning's WandbLogger), train/global_step (HF Trainer), else W&B's _step

When a run logged more than one of the names (a `loss` and a `train/loss`, fastai's raw_loss and
train_loss, two param groups' lrs), the choice is said in a note (`key_notes`).

Derived when missing: lre = log10(lr), lr = 10**lre, log10_loss = log10(loss), loss = 10**log10_loss.

Alignment: one row per step at which the loss was logged, and its lr is "the lr in force at that
step": the last lr logged at or before it (`commit=False` patterns, lr logged before the loss on
step k and the loss on step k+1, an lr logged once per epoch). Rows where only the lr was logged
carry no loss and are left out (their lr lives on in the rows after them). A loss logged as NaN
is a row with a NaN loss (the history frame's `LOSS_LOGGED` column marks the rows that logged
the loss, NaN or not; the readers fill it), as wandb's own reader gives it; an infinite loss is kept.

A step counter (Lightning's, HF's) numbers the rows by training step: a W&B row without it (a
`wandb.log` of the user's own) takes the counter in force at its W&B `_step` (the last one logged
before it; before the first, the first), so no row is dropped. Loss rows sharing one counter value
(a user's per-step `wandb.log` beside a logger that logs every 50 steps) are the steps after it, in
W&B's order, while they fit before the next counter value; where they don't (the loss logged
several times a step), the rows are numbered by W&B's `_step` instead. A note says which.
The schedule is read from the lr as logged (`Columns.lr_step`, `lr_logged`), not the lr carried forward.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from lrscan.pipeline import keys as K

WANDB_STEP = "_step"
LIGHTNING_STEP_SUFFIX = "_step"  # self.log(..., on_step=True, on_epoch=True): <name>_step and <name>_epoch
_LOSS_BASES = (K.LOSS, "train/loss", "raw_loss", "train_loss", "training_loss")
LOSS_NAMES = (K.LOSS, K.LOG10_LOSS, "train/loss", "raw_loss", "train_loss", "training_loss",
              *(name + LIGHTNING_STEP_SUFFIX for name in _LOSS_BASES))
FASTAI_LR = "lr_0"
LR_NAMES = (K.LR, K.LRE, "learning_rate", "train/learning_rate", FASTAI_LR)
# what a key means where its name alone doesn't say it (the runs table shows it beside the key)
KEY_MEANINGS = {
    "raw_loss": "fastai's loss of each batch, not its smoothed train_loss",
    FASTAI_LR: "fastai's lr of param group 0",
}
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
    other_lrs: tuple[str, ...] = ()     # further lr keys the run logged (param groups, optimizers), not used
    other_losses: tuple[str, ...] = ()  # further loss names it logged, not used

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
    # lrscan's pairs (loss and log10_loss, lr and lre) are one quantity, not a choice
    pair = {K.LOSS: K.LOG10_LOSS, K.LOG10_LOSS: K.LOSS}.get(loss or "")
    other_losses = tuple(k for k in LOSS_NAMES if k in have and k not in (loss, pair))
    # fastai's lr_1, lr_2, ... are not named: the offline reader reads keys by name and doesn't see them, and
    # the runs table already says lr_0 is group 0
    other_lrs = tuple(k for k in lightning if k != lr)
    return KeyChoice(loss=loss, lr=lr, step=step, other_lrs=other_lrs, other_losses=other_losses)


def key_notes(choice: KeyChoice, named_loss: bool = False, named_lr: bool = False) -> list[str]:
    """What a person should know of `choice`: the key used where the run logged several candidates.

    named_loss / named_lr: the key was named (--loss-key / --lr-key), so there was nothing to choose.
    """
    notes = []
    if choice.loss is not None and choice.other_losses and not named_loss:
        others = [f"{k} (fastai's smoothed loss)" if k == "train_loss" and choice.loss == "raw_loss" else k
                  for k in choice.other_losses]
        notes.append(f"loss read from {_with_meaning(choice.loss)}; it also logged {', '.join(others)} "
                     f"(--loss-key picks another)")
    if choice.lr is not None and choice.other_lrs and not named_lr:
        notes.append(f"lr read from {_with_meaning(choice.lr)}; it also logged {', '.join(choice.other_lrs)} "
                     f"(--lr-key picks another)")
    return notes


def _with_meaning(key: str) -> str:
    meaning = KEY_MEANINGS.get(key)
    return f"{key} ({meaning})" if meaning else key


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


@dataclass(frozen=True)
class Columns:
    """A run's history as the analysis reads it (`read_columns`)."""

    frame: pd.DataFrame     # step, lr, lre, loss, log10_loss and the carried keys: one row per loss logged
    choice: KeyChoice       # the keys used; `step` the one its rows are numbered by
    lr_step: np.ndarray     # the lr as logged: the steps it was logged at ...
    lr_logged: np.ndarray   # ... and its values there (what a schedule is read from)
    notes: tuple[str, ...] = ()  # what a person should know of the keys and the alignment


def read_columns(history: pd.DataFrame, choice: KeyChoice, carried: Sequence[str] = (), *,
                 named_loss: bool = False, named_lr: bool = False) -> Columns:
    """`canonical_frame`, the lr as logged, and notes on the keys and on how the rows were numbered.

    `history` holds ``step`` (W&B's _step) and the logged keys, NaN where a row lacks one.
    """
    notes = key_notes(choice, named_loss=named_loss, named_lr=named_lr)
    if choice.step != WANDB_STEP and choice.loss is not None:
        frame = history.sort_values(K.STEP_COLUMN, kind="stable")
        steps = counter_steps(frame, choice.step, choice.loss)
        shared = _shared_counter(frame, choice.step, choice.loss)
        if steps is None:
            notes.append(f"{choice.loss} logged more often than {choice.step} counts steps ({shared} of its rows "
                         f"share one): its rows are numbered by W&B's _step instead, so none is lost")
            choice = replace(choice, step=WANDB_STEP)
        elif shared:
            notes.append(f"{shared} row(s) of {choice.loss} share a {choice.step} with an earlier one (logged "
                         f"without it: a wandb.log of your own): each is the step after the one before it")
    frame = _on_step(history, choice.step, choice.loss)
    lr, _ = _pair(frame, choice.lr, K.LR, K.LRE)
    step = frame[K.STEP_COLUMN].to_numpy(dtype=np.int64)
    logged = ~np.isnan(lr)
    return Columns(_canonical(frame, choice, carried), choice, step[logged], lr[logged], tuple(notes))


def canonical_frame(history: pd.DataFrame, choice: KeyChoice, carried: Sequence[str] = ()) -> pd.DataFrame:
    """``step, lr, lre, loss, log10_loss`` and the `carried` columns, one row per step the loss was logged at.

    `history` holds ``step`` (W&B's _step) and the logged keys, NaN where a row lacks one. The step
    comes from `choice.step` when that is not _step (see `on_step_key`); the lr is the lr in force
    at each step.
    """
    return _canonical(_on_step(history, choice.step, choice.loss), choice, carried)


def _canonical(frame: pd.DataFrame, choice: KeyChoice, carried: Sequence[str]) -> pd.DataFrame:
    """`canonical_frame` of a history already in step order and numbered (`_on_step`)."""
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
    return out if measured.all() else out.loc[measured].reset_index(drop=True)  # most runs: no copy


def _on_step(history: pd.DataFrame, step_key: str, loss_key: str | None) -> pd.DataFrame:
    """The history in step order, numbered by `step_key` (W&B's _step: as it is)."""
    if step_key == WANDB_STEP:
        return history.sort_values(K.STEP_COLUMN, kind="stable")
    return on_step_key(history, step_key, loss_key)


def counter_in_force(history: pd.DataFrame, step_key: str) -> np.ndarray:
    """Per row (in W&B _step order), the step counter logged on it, else the last one logged before it.

    Rows before the first counter take the first one: they were logged before the first training step.
    (wandb's `step_sync`, which Lightning's and HF's loggers ask for, writes that same last counter
    into the rows of a user's own `wandb.log`.)
    """
    counter = history.sort_values(K.STEP_COLUMN, kind="stable")[step_key]
    return counter.ffill().bfill().round().to_numpy(dtype=np.int64)


def counter_steps(history: pd.DataFrame, step_key: str, loss_key: str | None) -> np.ndarray | None:
    """Per row (in W&B _step order), its training step by the counter; None where the counter can't number them.

    A logger that logs every k steps (Lightning's log_every_n_steps, HF's logging_steps) leaves its
    counter standing between its logs, so a user's own per-step `wandb.log` of the loss gives rows
    that share one counter value: they are the steps after it, in W&B's order (the i-th loss row
    logged at counter c is step c + i). That holds while they fit before the next counter value;
    when they don't (the loss logged several times per step), None: number by W&B's _step instead.
    """
    frame = history.sort_values(K.STEP_COLUMN, kind="stable")
    counter = counter_in_force(frame, step_key)
    if loss_key is None or loss_key not in frame.columns:
        return counter
    if np.any(np.diff(counter) < 0):
        return None  # a counter that goes back (a resumed run logging it again): no order to number by
    logged = _loss_rows(frame, loss_key)
    rank = pd.Series(np.where(logged, 1, 0)).groupby(counter).cumsum().to_numpy() - 1
    step = counter + np.where(logged, rank, 0)
    values = np.unique(counter)
    following = np.searchsorted(values, counter, side="right")
    last = np.iinfo(np.int64).max
    next_counter = np.where(following < len(values), values[np.minimum(following, len(values) - 1)], last)
    return None if np.any(step[logged] >= next_counter[logged]) else step


def on_step_key(history: pd.DataFrame, step_key: str, loss_key: str | None = None) -> pd.DataFrame:
    """The history re-indexed by a logged step counter (Lightning's and HF's global step).

    Those loggers call `wandb.log` several times per training step (the lr monitor, then the
    metrics), so several W&B rows share one global step: they merge into one row, and where two
    rows logged the same key, the later one wins. A row that did not log the counter (the user's own
    `wandb.log`) takes the counter in force at its W&B _step; rows of `loss_key` that share one are
    numbered as the steps after it (`counter_steps`), where they fit.
    """
    frame = history.sort_values(K.STEP_COLUMN, kind="stable")
    steps = counter_steps(frame, step_key, loss_key)
    frame = frame.drop(columns=[K.STEP_COLUMN, step_key])
    frame[K.STEP_COLUMN] = steps if steps is not None else counter_in_force(history, step_key)
    # GroupBy.last takes each column's last non-NaN value: the merge of the rows of one step
    return frame.groupby(K.STEP_COLUMN, sort=True).last().reset_index()


def _shared_counter(history: pd.DataFrame, step_key: str, loss_key: str) -> int:
    """How many of the loss's rows share a counter value with an earlier one (0: the counter tells them apart)."""
    counter = counter_in_force(history, step_key)
    logged = _loss_rows(history.sort_values(K.STEP_COLUMN, kind="stable"), loss_key)
    return int(logged.sum() - len(np.unique(counter[logged])))


def _loss_rows(frame: pd.DataFrame, loss_key: str) -> np.ndarray:
    """The rows that logged the loss: a value, or NaN where `LOSS_LOGGED` marks it."""
    logged = frame[loss_key].notna().to_numpy()
    if LOSS_LOGGED in frame.columns:
        logged |= frame[LOSS_LOGGED].notna().to_numpy()
    return logged


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
        # each filled from the other where missing; lrscan's runs log both at every step: nothing to fill
        missing, missing_log = np.isnan(logged), np.isnan(logged_log)
        value = np.where(missing, np.power(10.0, logged_log), logged) if missing.any() else logged
        value_log = np.where(missing_log, np.log10(logged), logged_log) if missing_log.any() else logged_log
    return value, value_log


def _natural(name: str) -> list:
    """Sort key that orders pg2 before pg10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]
