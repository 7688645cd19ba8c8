"""A run as the loop trains it: its schedule's lrs, its stops, its history rows, its checkpoint and its summary.

The loop (pipeline/train/loop.py) drives K >= 1 members at once; a single run is one member, a pack's
point is one member each. Everything that makes a member a run of its own lives here, the same for
both: the lrs of its schedule, the climb and non-finite stops on its own losses, the steps it logs
(not again what a resumed run's history holds), its eval and checkpoint steps, its checkpoint (one
format: a member resumes alone with `python -m pipeline.train ... --resume` or in a pack), and its
summary. What the member's weights are and how they are stepped is the stepper's (`stepper.py`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from lrscan.pipeline import keys
from lrscan.pipeline.config import TrainConfig
from lrscan.pipeline.train import checkpoint
from lrscan.pipeline.train.schedule import ClimbStop, schedule_lrs
from lrscan.pipeline.train.tracking import InitArgs, Launch


def until_step(cfg: TrainConfig) -> int:
    """Where the run ends this time: its last step, or the step it pauses at (pause_at_step), whichever comes first."""
    return min(cfg.steps, cfg.pause_at_step) if cfg.pause_at_step else cfg.steps


def chunk_end(step: int, cfg: TrainConfig) -> int:
    """Where the chunk starting at `step` ends: chunks end on eval and checkpoint steps so both see the
    exact state of that step (a pack's members follow the same rule, each at its own step)."""
    end = min(step + cfg.log_chunk_steps, until_step(cfg))
    for every in (cfg.eval_every_steps, cfg.ckpt_every_steps):
        if every:
            end = min(end, (step // every + 1) * every)
    return end


def init_args(cfg: TrainConfig, *, resume: bool, resume_step: int, launch: Launch | None,
              overlapped: bool = False) -> InitArgs:
    """What the logging process' wandb.init gets for the run `cfg` describes (`cfg.run_id`): a single run's and
    a pack member's alike."""
    return InitArgs(
        run_id=cfg.run_id, mode=cfg.wandb_mode, project=cfg.wandb_project, entity=cfg.wandb_entity,
        group=cfg.wandb_group, name=cfg.wandb_name, tags=cfg.wandb_tags, job_type=cfg.wandb_job_type,
        config=cfg.to_dict(), resume=resume, define_lre_axis=cfg.schedule == "range",
        lock_path=str(checkpoint.ckpt_path(cfg.ckpt_dir, cfg.run_id).with_suffix(".lock")),
        resume_step=resume_step, launch=launch, overlapped=overlapped,
    )


def with_evaluated(rows: np.ndarray, columns: dict[str, np.ndarray], extra: dict[int, dict]) -> dict[str, np.ndarray]:
    """The chunk's columns plus what its eval step logged (dev_loss, ...), NaN on the rows without it."""
    out = dict(columns)
    for at, values in extra.items():
        for name, value in values.items():
            column = out.setdefault(name, np.full(len(rows), np.nan))
            column[rows == at] = value
    return out


class Member:
    """A run being trained: what its single run holds between chunks (`cfg.run_id` names it).

    state: its checkpoint when it resumes (the stepper loads the weights from it, this the rest).
    on_steps(steps, columns): called with exactly the rows handed to the logger, in order: lr, lre, loss,
    log10_loss (and smooth_loss in a range test), plus what an eval step logged (dev_loss, test_loss, ...), NaN on
    the rows without it (`with_evaluated`).
    """

    def __init__(self, cfg: TrainConfig, state: dict | None, data_sha256: str = "", vocab: tuple[str, ...] = (),
                 on_steps: Callable[[np.ndarray, dict[str, np.ndarray]], None] | None = None):
        self.cfg, self.state = cfg, state
        self.data_sha256, self.vocab = data_sha256, tuple(vocab)
        self.on_steps = on_steps
        self.climb = ClimbStop(beta=cfg.smooth_beta, factor=cfg.climb_factor, burn_in_steps=cfg.climb_burn_in_steps)
        self.is_range = cfg.schedule == "range"
        self.can_stop = cfg.stop_on_nonfinite or (self.is_range and cfg.stop_on_climb)
        self.step, self.elapsed_s = 0, 0.0  # step: the next step to train
        self.stop_step: int | None = None
        self.stop_reason: str | None = None
        self.diverged_at: int | None = None
        if state is not None:
            self.climb.load(state["climb"])
            self.step, self.elapsed_s = state["step"], state["elapsed_s"]
            self.diverged_at = state.get("diverged_at")
        self.lrs, self.lres = schedule_lrs(cfg.schedule, cfg.steps, lre_min=cfg.lre_min, lre_max=cfg.lre_max, lr=cfg.lr,
                                           decay_steps=cfg.decay_steps, decay_lrs=cfg.decay_lrs,
                                           step_mode=cfg.step_mode)
        self.ckpt_file = checkpoint.ckpt_path(cfg.ckpt_dir, cfg.run_id)
        self._logged_through = -1
        self._logger = None
        self._open_runs: Callable[[], None] | None = None  # a pack's: waits for its runs, attaches every member
        self.ended = False  # its run was told to finish

    @property
    def run_id(self) -> str:
        return self.cfg.run_id

    # -- its W&B run --------------------------------------------------------------------------------------

    def use(self, logger, logged_through: int) -> None:
        """The member's open run: its logger handle and the last step its history already holds (-1: none)."""
        self._logger, self._logged_through = logger, logged_through

    def attach_when_used(self, open_runs: Callable[[], None]) -> None:
        """A pack's runs open (wandb.init, seconds for K runs) while the first chunk trains; the first use of
        the member's run waits for them (bounded) and attaches every member: `open_runs()`."""
        self._open_runs = open_runs

    @property
    def logger(self):
        if self._logger is None and self._open_runs is not None:
            self._open_runs()
        return self._logger

    @property
    def logged_through(self) -> int:
        """The last step its run's history already holds (a resumed run), -1 for none."""
        self.logger  # noqa: B018 (known once its run is open)
        return self._logged_through

    def logger_finish(self, exit_code: int) -> None:
        """End the member's run (once)."""
        if not self.ended:
            self.ended = True
            if self.logger is not None:
                self.logger.finish(exit_code)

    # -- the loop's questions --------------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self.stop_step is not None or self.step >= until_step(self.cfg)

    @property
    def paused(self) -> bool:
        """Ended at its pause_at_step before its last step: its checkpoint continues it."""
        return self.stop_step is None and self.step < self.cfg.steps

    def chunk_end(self) -> int:
        """The end of this member's next chunk alone, by the single trainer's rule."""
        return chunk_end(self.step, self.cfg)

    def scan(self, loss: np.ndarray) -> tuple[int, np.ndarray]:
        """The stop rules over this chunk's losses in order: how many steps the member keeps, and their
        smoothed losses. A stop inside the chunk cuts it there (the stop step included)."""
        cfg, n = self.cfg, len(loss)
        smooth = np.full(n, np.nan)
        for k in range(n):
            s = self.step + k
            if not math.isfinite(loss[k]) and self.diverged_at is None:
                self.diverged_at = s
                if cfg.stop_on_nonfinite:
                    self.stop_step, self.stop_reason = s, keys.STOP_NON_FINITE
                    return k + 1, smooth
            if self.is_range:
                smooth[k], climbed = self.climb.update(s, float(loss[k]))
                if climbed and cfg.stop_on_climb:
                    self.stop_step, self.stop_reason = s, keys.STOP_CLIMB
                    return k + 1, smooth
        return n, smooth

    def eval_due(self, n: int) -> bool:
        """Whether the chunk's n kept steps end on an eval step (a member that stopped is evaluated at its end)."""
        every = self.cfg.eval_every_steps
        return bool(every) and (self.step + n) % every == 0 and self.stop_step is None

    def checkpoint_due(self, stopping: bool) -> bool:
        every = self.cfg.ckpt_every_steps
        return stopping or (bool(every) and self.step % every == 0 and self.step < self.cfg.steps)

    def log(self, n: int, loss: np.ndarray, smooth: np.ndarray, extra: dict[int, dict]) -> None:
        """Hand the chunk's kept steps to the run; a resumed run does not log again what its history has."""
        first = max(0, self.logged_through + 1 - self.step)
        if first >= n:
            return
        lo, hi = self.step, self.step + n
        columns = {keys.LR: self.lrs[lo:hi], keys.LRE: self.lres[lo:hi], keys.LOSS: loss[:n],
                   keys.LOG10_LOSS: np.log10(loss[:n])}
        if self.is_range:
            columns[keys.SMOOTH_LOSS] = smooth[:n]
        rows, columns = np.arange(lo, hi)[first:], {k: v[first:] for k, v in columns.items()}
        self.logger.log_steps(rows, columns, extra)
        if self.on_steps is not None:
            self.on_steps(rows, with_evaluated(rows, columns, extra))

    # -- its checkpoint and its end ----------------------------------------------------------------------------

    def save_checkpoint(self, weights: dict, finished: bool, summary: dict | None = None) -> None:
        """One format for a single run and a pack's member; `weights`: the stepper's state of this member."""
        checkpoint.save(self.ckpt_file, {
            "config": self.cfg.to_dict(), "run_id": self.run_id, "step": self.step, "finished": finished,
            **weights, "climb": self.climb.state(), "vocab": list(self.vocab), "data_sha256": self.data_sha256,
            "diverged_at": self.diverged_at, "elapsed_s": self.elapsed_s, "summary": summary or {},
        })

    def end_summary(self, n_params: int, losses: dict) -> dict:
        """The run's summary keys, around the final losses its model gave."""
        summary = {
            keys.FINAL_STEP: self.step - 1,
            keys.STEPS_PER_SECOND: self.step / self.elapsed_s if self.elapsed_s > 0 else 0.0,  # across resumes
            "n_params": n_params,
            **losses,
        }
        if self.stop_step is not None:
            summary[keys.STOP_STEP], summary[keys.STOP_REASON] = self.stop_step, self.stop_reason
        if self.diverged_at is not None:
            summary[keys.DIVERGED_AT_STEP] = self.diverged_at
        if self.is_range and math.isfinite(self.climb.best):
            summary[keys.BEST_SMOOTH_LOSS] = self.climb.best
        if self.paused:
            summary[keys.PAUSED_AT_STEP] = self.step
        elif self.state is not None:
            summary[keys.PAUSED_AT_STEP] = None  # a continued run is not paused any more (W&B keeps summary keys)
        return summary

    def end(self, summary: dict, weights: dict) -> None:
        """The member leaves the loop: its summary, its finished checkpoint (unfinished when it paused), its run ended
        with exit code 0."""
        self.logger.summary(summary)
        self.save_checkpoint(weights, finished=not self.paused, summary=summary)
        self.logger_finish(0)

    def tail(self, summary: dict) -> str:
        """The end of its report line: its speed, and why it stopped."""
        why = f", stopped at step {self.stop_step} ({self.stop_reason})" if self.stop_step is not None else ""
        if not self.cfg.final_eval and not self.paused:
            why += ", no held-out pass at the end (final_eval off)"
        return f"{summary[keys.STEPS_PER_SECOND]:.0f} steps/s{why}"
