"""Any task's training: autograd and the task's own optimizer, driven by the loop like the makemore MLP.

Per training step: the schedule's lr is set on every param group keeping the ratios the groups were
built with (`task.lr_scales`: a scheduler's `initial_lr`, else the lr at the start; a group built at 0
stays at 0; the lr logged is that of the first group built non-zero, group 0 unless frozen), the gradients are
zeroed, `accumulation_steps` micro-batches each add loss / k to them, and the optimizer steps once.
With a GradScaler, a step whose gradients overflow is skipped by the scaler and tried again with
the next micro-batches at the same lr: it does not advance the schedule and is not a measured point
(a non-finite loss is: it is the divergence the stop rule looks for).

Losses stay on the device, stacked once per chunk: no `.item()` per step, so logging costs nothing
here. A stop inside a chunk rewinds to the chunk's start (model, optimizer, scaler, random states and
batch position saved there) and trains up to the stop step again: the run ends with the model of its
stop step, bit for bit on the CPU. For an iterable, while a stop is possible, the chunk's batches are
kept for that replay with the random states each draw left (`log_chunk_steps` x `accumulation_steps`
of them: lower --log_chunk_steps for very large batches); a function batch(i) is simply asked again.

Exact resume: the checkpoint holds the model, optimizer and scaler states, the global random states
and the batch position. batch(i) is asked for the next i. An iterable is iterated again with iter()
under the global random states its interrupted pass started with, and fast-forwarded past the batches
that pass had given: exact when the pass depends on nothing else (a list; a DataLoader, shuffled or
not, any num_workers); not when the iterable keeps state of its own across passes.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch

from lrscan.pipeline import keys
from lrscan.pipeline.errors import LrscanError
from lrscan.pipeline.train import rngstate
from lrscan.pipeline.train.stepper import report_line
from lrscan.pipeline.train.task import Task, lr_scales, set_lr

# an lr past this, far beyond any divergence, is applied as this: torch's optimizers turn lr-derived scalars into
# float32 (Adam's lr / bias correction) and fail on one that overflows, where the run should diverge instead
MAX_APPLIED_LR = 1e30
MAX_SCALER_RETRIES = 64  # a step the GradScaler skips this often in a row (finite loss) is counted anyway
OWN_KEYS = (*keys.STEP_KEYS, keys.SMOOTH_LOSS, keys.FINAL_STEP, keys.STEPS_PER_SECOND, keys.STOP_STEP,
            keys.STOP_REASON, keys.DIVERGED_AT_STEP, keys.BEST_SMOOTH_LOSS, keys.PAUSED_AT_STEP, "n_params")


class Batches:
    """A task's micro-batches in order, with a position a checkpoint can hold and a replay of the last chunk."""

    def __init__(self, batches: Any):
        self.fn = batches if callable(batches) else None
        self.iterable = None if self.fn is not None else batches
        self.one_shot = isinstance(batches, Iterator)  # a generator: cannot be iterated again
        self.drawn = 0        # micro-batches handed out so far: the i of batch(i)
        self.passes = 0       # iterable: passes started
        self.in_pass = 0      # iterable: batches given in the current pass
        self.pass_rng: dict | None = None  # global random states when the current pass called iter()
        self._it: Iterator | None = None
        self._recorded: list | None = None  # the batches of the chunk being recorded (iterables)
        self._replay: Iterator | None = None

    def next(self) -> Any:
        if self._replay is not None:
            # the batch, and the random states as drawing it left them (a DataLoader draws its shuffle's seed)
            batch, rng = next(self._replay)
            rngstate.restore(rng)
        elif self.fn is not None:
            batch = self.fn(self.drawn)
        else:
            batch = self._next_from_iterable()
            if self._recorded is not None:
                self._recorded.append((batch, rngstate.capture()))
        self.drawn += 1
        return batch

    def _next_from_iterable(self) -> Any:
        if self._it is None:
            self._start_pass()
        try:
            batch = next(self._it)
        except StopIteration:
            if self.one_shot:
                raise LrscanError(f"Task.batches (a one-shot iterator) ran out after {self.in_pass} batches: give "
                                  f"an iterable that can be iterated again (a list, a DataLoader) or batch(step)") \
                    from None
            self._start_pass()
            try:
                batch = next(self._it)
            except StopIteration:
                raise LrscanError(f"Task.batches yielded no batch on pass {self.passes}") from None
        self.in_pass += 1
        return batch

    def _start_pass(self) -> None:
        self.pass_rng = rngstate.capture()
        self._it = iter(self.iterable)
        self.passes += 1
        self.in_pass = 0

    # -- a replay of the last chunk (a stop inside it) ----------------------------------------------

    def mark(self, record: bool) -> int:
        """Start of a chunk; record: it may be replayed (`replay_from` the position returned)."""
        self._recorded = [] if record and self.fn is None else None
        self._replay = None
        return self.drawn

    def replay_from(self, mark: int) -> None:
        """Hand out the batches from `mark` on again, the same ones in the same order."""
        self.drawn = mark
        if self.fn is None:
            self._replay = iter(self._recorded or [])

    # -- checkpoints -----------------------------------------------------------------------------------

    def state(self, k: int = 0) -> dict:
        return {"drawn": self.drawn, "passes": self.passes, "in_pass": self.in_pass,
                "pass_rng": rngstate.for_checkpoint(self.pass_rng) if self.pass_rng is not None else None}

    def load(self, state: dict) -> None:
        """Continue where `state` was: batch(i) from its i on; an iterable's interrupted pass re-created with the
        random states it started with and fast-forwarded. Changes the global random states: restore them after."""
        self.drawn = int(state["drawn"])
        if self.fn is not None or not state["passes"]:
            return
        rngstate.restore(state["pass_rng"])
        self.pass_rng = state["pass_rng"]
        self._it = iter(self.iterable)
        self.passes, self.in_pass = int(state["passes"]), 0
        for _ in range(int(state["in_pass"])):
            try:
                next(self._it)
            except StopIteration:
                raise LrscanError(f"cannot resume: Task.batches now yields {self.in_pass} batches on its pass "
                                  f"{self.passes}, the checkpoint is at batch {state['in_pass']} of it (an iterable "
                                  f"must give the same batches again for a resume; batch(step) always does)") from None
            self.in_pass += 1


class TaskRun:
    """A Task trained with autograd and its optimizer, one chunk of steps at a time."""

    def __init__(self, task: Task):
        self.task = task
        self.model, self.optimizer, self.scaler = task.model, task.optimizer, task.scaler
        self.loss_fn, self.k = task.loss_fn, task.accumulation_steps
        self.batches = Batches(task.batches)
        self.n_params = sum(p.numel() for p in self.model.parameters())
        # the groups' ratios, from the lrs the task built the optimizer with (before any step of ours)
        self.lr_scales = lr_scales(self.optimizer)
        self._snapshot: dict | None = None
        self._chunk: tuple[int, np.ndarray] | None = None
        self.scaler_gave_up: list[int] = []  # steps counted after MAX_SCALER_RETRIES skips

    def describe(self) -> str:
        groups = len(self.optimizer.param_groups)
        device = next(self.model.parameters()).device
        return (f"{type(self.model).__name__} with {self.n_params} parameters, {type(self.optimizer).__name__}"
                f"{f' ({groups} param groups)' if groups > 1 else ''}"
                f"{f', {self.k} micro-batches per step' if self.k > 1 else ''}"
                f"{', GradScaler' if self.scaler is not None else ''}, device {device}")

    # -- training ----------------------------------------------------------------------------------------

    def _set_lr(self, lr: float) -> None:
        # the optimizer's groups, not a list kept from before: load_state_dict (a resume, a rewind) replaces them
        set_lr(self.optimizer, min(lr, MAX_APPLIED_LR), self.lr_scales)

    def _attempt(self, lr: float) -> torch.Tensor:
        """One optimizer step at `lr` over k micro-batches; the mean micro-batch loss, on the device."""
        self._set_lr(lr)
        self.optimizer.zero_grad(set_to_none=True)
        total = None
        for _ in range(self.k):
            loss = self.loss_fn(self.model, self.batches.next()).reshape(())
            if self.k > 1:
                loss = loss / self.k
            (loss if self.scaler is None else self.scaler.scale(loss)).backward()
            total = loss.detach() if total is None else total + loss.detach()
        if self.scaler is None:
            self.optimizer.step()
        else:
            self.scaler.step(self.optimizer)
        return total

    def _scaled_step(self, step: int, lr: float) -> torch.Tensor:
        # the scaler decides on the host anyway (GradScaler.step reads found_inf), so asking costs no extra sync
        for _ in range(MAX_SCALER_RETRIES):
            scale = self.scaler.get_scale()
            loss = self._attempt(lr)
            self.scaler.update()
            if self.scaler.get_scale() >= scale or not math.isfinite(loss.item()):
                return loss  # stepped, or a non-finite loss: a measured point either way
        self.scaler_gave_up.append(step)
        return loss

    def train_chunk(self, starts: list[int], lrs: np.ndarray, rewindable: bool) -> np.ndarray:
        """Train steps [starts[0], starts[0] + n) with lrs (n, 1); their losses (n, 1) float64. rewindable: keep
        what `replay` needs (pipeline/train/stepper.py)."""
        self._snapshot = self._take_snapshot() if rewindable else None
        if not rewindable:
            self.batches.mark(record=False)
        self._chunk = (starts[0], lrs[:, 0])
        return self._train(starts[0], lrs[:, 0])[:, None]

    def _train(self, step: int, lrs: np.ndarray) -> np.ndarray:
        if self.scaler is None:
            losses = [self._attempt(lr) for lr in lrs.tolist()]
        else:
            losses = [self._scaled_step(s, lr) for s, lr in zip(range(step, step + len(lrs)), lrs.tolist())]
        try:
            stacked = torch.stack(losses)
        except RuntimeError:  # losses of mixed dtypes (autocast in some steps only)
            stacked = torch.stack([loss.float() for loss in losses])
        return stacked.double().cpu().numpy()

    def replay(self, kept: dict[int, int]) -> None:
        """Back to the start of the last chunk, then its first kept[0] steps again (same batches, lrs, random draws)."""
        snap, (step, lrs) = self._snapshot, self._chunk
        self.model.load_state_dict(snap["model"])
        self.optimizer.load_state_dict(snap["optimizer"])
        if self.scaler is not None:
            self.scaler.load_state_dict(snap["scaler"])
        rngstate.restore(snap["rng"])
        self.batches.replay_from(snap["batches"])
        del self.scaler_gave_up[len(snap["gave_up"]):]
        self._train(step, lrs[:kept[0]])

    def keep(self, rows: list[int]) -> TaskRun:
        return self  # one member: it goes on, or the loop ends

    def _take_snapshot(self) -> dict:
        return {
            "model": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": rngstate.capture(),
            "batches": self.batches.mark(record=True),
            "gave_up": list(self.scaler_gave_up),
        }

    # -- evaluation ---------------------------------------------------------------------------------------

    def evaluate(self, k: int = 0) -> dict[str, float]:
        """Task.evaluate(model), under no_grad, with every submodule's train/eval mode (a BatchNorm the user
        froze in eval stays in eval) and the random states put back after: an eval step leaves no trace in
        training (eval_every_steps may change on resume)."""
        if self.task.evaluate is None:
            return {}
        rng, modes = rngstate.capture(), [(m, m.training) for m in self.model.modules()]
        try:
            with torch.no_grad():
                out = self.task.evaluate(self.model)
        finally:
            for module, training in modes:
                module.training = training
            rngstate.restore(rng)
        if not isinstance(out, Mapping):
            raise LrscanError(f"Task.evaluate(model) returned a {type(out).__name__}, not a mapping of names to "
                              f"numbers like {{'dev_loss': 2.1}}")
        values = {}
        for name, value in out.items():
            if not isinstance(name, str) or name in OWN_KEYS:
                raise LrscanError(f"Task.evaluate(model) returned the key {name!r}: lrscan logs that name itself "
                                  f"(use e.g. 'dev_loss', 'dev_accuracy')")
            try:
                values[name] = float(value)
            except (TypeError, ValueError, RuntimeError):
                raise LrscanError(f"Task.evaluate(model) returned {name}={value!r}, not a number") from None
        return values

    def final_losses(self, ks: list[int]) -> dict[int, dict[str, float]]:
        return {k: self.evaluate() for k in ks}

    # -- checkpoints ----------------------------------------------------------------------------------------

    def state(self, k: int = 0) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "batches": self.batches.state(),
            "rng": rngstate.for_checkpoint(rngstate.capture()),
        }

    def load(self, state: dict, run_id: str) -> None:
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise LrscanError(f"cannot resume run {run_id}: the task's model or optimizer does not match its "
                              f"checkpoint ({str(e).strip().splitlines()[0]})") from None
        if (state["scaler"] is None) != (self.scaler is None):
            raise LrscanError(f"cannot resume run {run_id}: the checkpoint was trained "
                              f"{'without' if state['scaler'] is None else 'with'} a GradScaler, the task now "
                              f"{'has one' if self.scaler is not None else 'has none'}")
        if self.scaler is not None:
            self.scaler.load_state_dict(state["scaler"])
        self.batches.load(state["batches"])
        rngstate.restore(state["rng"])  # last: the fast-forward of an iterable moved them

    def report(self, k: int, run_id: str, summary: dict, tail: str, samples: bool = True) -> None:
        shown = "  ".join(f"{k} {v:.4f}" for k, v in summary.items() if k not in OWN_KEYS)
        print(report_line(run_id, shown or ("" if self.task.evaluate is not None else "no evaluate() in the task"),
                          tail))
        if self.scaler_gave_up:
            print(f"note: the GradScaler skipped step(s) {self.scaler_gave_up[:5]} {MAX_SCALER_RETRIES} times in a row "
                  f"(gradients not finite at any scale); each was counted without an update")
