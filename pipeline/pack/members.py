"""One member of a pack: its point, lr schedule, stop rules, checkpoint and W&B run, as the single trainer keeps them.

A member is a sweep point trained inside a pack. Everything that makes it a run of its own lives
here, with the single trainer's rules (pipeline/train/loop.py): the lrs of its schedule, the climb and
non-finite stops on its own losses, its checkpoint (the single trainer's format, so a member resumes
alone with `python -m pipeline.train ... --resume` or in a pack), its history rows and its summary.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from pipeline import keys
from pipeline.config import TrainConfig, parse_args
from pipeline.errors import LrscanError
from pipeline.fsutil import atomic_write_text
from pipeline.train import checkpoint
from pipeline.train.data import Splits
from pipeline.train.loop import chunk_end, compatible, same_data
from pipeline.train.model import MLP, NonFiniteModel
from pipeline.train.schedule import ClimbStop, schedule_lrs
from pipeline.train.tracking import InitArgs, Launch, RunInfo

# how a member's run ended, as its end file says (the sweep runner reads it for the point's state)
FINISHED, FAILED, KILLED = "finished", "failed", "killed"


@dataclass(frozen=True)
class Point:
    """A sweep point to train in a pack: the trainer's arguments, its run id, where to say how it ended."""

    run_id: str
    args: tuple[str, ...]
    cfg: TrainConfig
    end_file: str = ""  # a JSON line {"state", "exit_code", "reason"} written when its run ends

    @classmethod
    def parse(cls, run_id: str, args: list[str], end_file: str = "") -> Point:
        cfg = parse_args(args)
        if cfg.run_id and run_id and cfg.run_id != run_id:
            raise LrscanError(f"point {run_id}: its arguments say --run_id={cfg.run_id}")
        run_id = run_id or cfg.run_id
        if not run_id:
            raise LrscanError(f"a point without a run id ({' '.join(args)}): a pack member must be resumable by its id")
        return cls(run_id=run_id, args=tuple(args), cfg=cfg.replace(run_id=run_id), end_file=end_file)


def write_end(point: Point, state: str, exit_code: int, reason: str = "") -> None:
    """Say how a member's run ended, for the runner that keeps its point's state."""
    if point.end_file:
        atomic_write_text(point.end_file, json.dumps({"run_id": point.run_id, "state": state, "exit_code": exit_code,
                                                      "reason": reason}) + "\n")


def load_resume_state(point: Point, *, data_sha256: str = "", vocab: tuple[str, ...] = (),
                      task: bool = False) -> dict | None:
    """The member's checkpoint when it has one (a pack always continues its members), checked as the
    single trainer checks a resume; None for a new run. `task`: the pack trains a task of the user's
    own (its data is the task's: named by the config); else the makemore MLP on `data_sha256`'s words."""
    path = checkpoint.ckpt_path(point.cfg.ckpt_dir, point.run_id)
    if not path.exists():
        return None
    state = checkpoint.load(path)
    if ("flat" in state) == task:
        of, trains = ("the makemore MLP", "a task") if task else ("a task", "the makemore MLP")
        raise LrscanError(f"cannot resume run {point.run_id}: its checkpoint {str(path)!r} is of {of}, this pack "
                          f"trains {trains}")
    diff = compatible(state["config"], point.cfg)
    if diff:
        raise LrscanError(f"cannot resume run {point.run_id}: {', '.join(diff)} differ from its checkpoint "
                          f"{str(path)!r}")
    if not task and not same_data(state, data_sha256, vocab):
        raise LrscanError(f"cannot resume run {point.run_id}: {point.cfg.data!r} is not the word list it was "
                          f"trained on")
    return state


class Member:
    """A point being trained in a pack: what its single run would hold between chunks."""

    def __init__(self, point: Point, state: dict | None, data_sha256: str, vocab: tuple[str, ...]):
        self.point = point
        self.cfg = point.cfg
        self.state = state
        self.data_sha256 = data_sha256
        self.vocab = vocab
        cfg = self.cfg
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
        self.ckpt_file = checkpoint.ckpt_path(cfg.ckpt_dir, point.run_id)
        self._logged_through = -1
        self._logger = None
        self._open_runs: Callable[[], None] | None = None  # waits for the pack's runs, attaches every member
        self.ended = False  # its run was told to finish
        self.on_steps: Callable[[np.ndarray, dict[str, np.ndarray]], None] | None = None

    def attach_when_used(self, open_runs: Callable[[], None]) -> None:
        """The pack's runs open (wandb.init, seconds for K runs) while the first chunk trains; the first use of
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

    @property
    def run_id(self) -> str:
        return self.point.run_id

    @property
    def done(self) -> bool:
        return self.stop_step is not None or self.step >= self.cfg.steps

    def init_args(self, launch: Launch) -> InitArgs:
        cfg = self.cfg
        return InitArgs(
            run_id=self.run_id, mode=cfg.wandb_mode, project=cfg.wandb_project, entity=cfg.wandb_entity,
            group=cfg.wandb_group, name=cfg.wandb_name, tags=cfg.wandb_tags, job_type=cfg.wandb_job_type,
            config=cfg.to_dict(), resume=True,  # a pack continues a member whose run exists, as a sweep retry does
            define_lre_axis=self.is_range, lock_path=str(self.ckpt_file.with_suffix(".lock")),
            resume_step=self.step, launch=launch,
        )

    def attach(self, logger, info: RunInfo) -> None:
        """The member's open run: its logger handle and how far its history already goes."""
        # a sweep's locked config would win in a single run; a pack cannot follow it (its members share the step)
        merged = TrainConfig.from_mapping(info.config, base=self.cfg)
        if merged != self.cfg:
            changed = sorted(k for k, v in merged.to_dict().items() if self.cfg.to_dict()[k] != v)
            raise LrscanError(f"run {self.run_id}: W&B's config changes {', '.join(changed)}; a packed run takes its "
                              f"config from its arguments only (run it alone with python -m pipeline.train)")
        self._logger = logger
        self._logged_through = info.logged_through_step

    def initial_weights(self, vocab_size: int, device: torch.device) -> torch.Tensor:
        """The member's flat parameters to start from: its init, or its checkpoint's weights."""
        cfg = self.cfg
        model = MLP.create(vocab_size, cfg.block_size, cfg.n_embd, cfg.n_hidden, seed=cfg.seed, init=cfg.init,
                           device=device)
        if self.state is not None:
            model.flat.copy_(self.state["flat"].to(device))
        return model.flat

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
        if self.on_steps is not None:  # range_test's rows, as the single trainer's on_steps gets them
            self.on_steps(rows, columns)

    def eval_due(self) -> bool:
        every = self.cfg.eval_every_steps
        return bool(every) and self.step % every == 0 and self.stop_step is None

    def checkpoint_due(self, stopping: bool) -> bool:
        every = self.cfg.ckpt_every_steps
        return stopping or (bool(every) and self.step % every == 0 and self.step < self.cfg.steps)

    def save_checkpoint(self, flat: torch.Tensor, finished: bool, summary: dict | None = None) -> None:
        # the single trainer's format: this member resumes alone (pipeline.train --resume) or in a pack
        checkpoint.save(self.ckpt_file, {
            "config": self.cfg.to_dict(), "run_id": self.run_id, "step": self.step, "finished": finished,
            "flat": flat.detach().cpu().clone(), "climb": self.climb.state(), "vocab": list(self.vocab),
            "data_sha256": self.data_sha256, "diverged_at": self.diverged_at, "elapsed_s": self.elapsed_s,
            "summary": summary or {},
        })

    def summarize(self, model: MLP, splits: Splits, device: torch.device) -> dict:
        """The run's summary, with the single trainer's keys and values."""
        losses = {key: model.loss(X.to(device), Y.to(device))
                  for key, (X, Y) in ((keys.TRAIN_LOSS, splits.train), (keys.DEV_LOSS, splits.dev),
                                      (keys.TEST_LOSS, splits.test))}
        return self.end_summary(model.n_params, losses)

    def end_summary(self, n_params: int, losses: dict) -> dict:
        """The single trainer's summary keys, around the final losses a member's model gave."""
        summary = {
            keys.FINAL_STEP: self.step - 1,
            keys.STEPS_PER_SECOND: self.step / self.elapsed_s if self.elapsed_s > 0 else 0.0,
            "n_params": n_params,
            **losses,
        }
        if self.stop_step is not None:
            summary[keys.STOP_STEP], summary[keys.STOP_REASON] = self.stop_step, self.stop_reason
        if self.diverged_at is not None:
            summary[keys.DIVERGED_AT_STEP] = self.diverged_at
        if self.is_range and math.isfinite(self.climb.best):
            summary[keys.BEST_SMOOTH_LOSS] = self.climb.best
        return summary

    def report(self, summary: dict, model: MLP, vocab_itos: tuple[str, ...]) -> None:
        why = f", stopped at step {self.stop_step} ({self.stop_reason})" if self.stop_step is not None else ""
        print(f"run {self.run_id}: train {summary[keys.TRAIN_LOSS]:.4f}  dev {summary[keys.DEV_LOSS]:.4f}  "
              f"test {summary[keys.TEST_LOSS]:.4f}  ({summary[keys.STEPS_PER_SECOND]:.0f} steps/s{why})", flush=True)
        if self.cfg.samples:
            g = torch.Generator().manual_seed(self.cfg.seed + 10)
            try:
                names = ["".join(vocab_itos[i] for i in w) for w in model.sample(self.cfg.samples, g)]
                print(f"run {self.run_id} samples: " + ", ".join(names), flush=True)
            except NonFiniteModel as e:
                print(f"run {self.run_id} samples: none, the model diverged ({e})", flush=True)
