"""The training loop, once, for K >= 1 members (a single run is a pack of one), and `train`: one run from its config.

    python -m pipeline.train --schedule=range --lre_min=-3 --lre_max=0 --steps=1000
    python -m pipeline.train --schedule=step --n_embd=10 --n_hidden=200 --steps=200000 --lr=0.1 \\
        --decay_steps=[100000] --decay_lrs=[0.01]
    python -m pipeline.train --task=path/to/file.py:make --task_args="{'width': 64}"
    python -m pipeline.train --help

What is trained sits behind a stepper (pipeline/train/stepper.py): for one run, the makemore MLP with
its hand-written fast step (pipeline/train/makemore.py, the default), or any PyTorch model and
optimizer given as a Task (pipeline/train/task.py), trained with autograd (pipeline/train/generic.py);
for a pack (pipeline/pack), K of either stepped at once. All go through `train_members`: the same
schedules, stops, replays, logging, evals, checkpoints, signals and resume (pipeline/train/member.py).

Every step logs lr, lre (log10 of the lr used), loss and log10_loss at step = the training step.
Offline by default: the run lands in ./wandb (or $WANDB_DIR/wandb) and `wandb sync` uploads it later.
"""

from __future__ import annotations

import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable

import numpy as np
import torch

from lrscan.pipeline.config import TrainConfig
from lrscan.pipeline.errors import LrscanError
from lrscan.pipeline.train import checkpoint
from lrscan.pipeline.train.data import SAMPLING_BLOCK_STEPS, batch_indices, load_splits, sha256_of  # noqa: F401 (re-export)
from lrscan.pipeline.train.generic import TaskRun
from lrscan.pipeline.train.makemore import MakemoreRun, check_model_fits
from lrscan.pipeline.train.member import Member, chunk_end, init_args  # noqa: F401 (re-export)
from lrscan.pipeline.train.resume import (  # noqa: F401 (re-export)
    checked_state,
    compatible,
    only_resumable_checkpoint,
    same_data,
    say_resume,
)
from lrscan.pipeline.train.stepper import Stepper
from lrscan.pipeline.train.task import Task, check_task, load_task
from lrscan.pipeline.train.tracking import (
    Launch,
    SpawnedLogger,
    finish_after_error,
    open_logger,
    this_process_launch,
)

# fields that change the data the model sees: a sweep-locked change of one of these reloads the data
DATA_FIELDS = ("data", "block_size", "split_seed")
# fields that change what a task's make builds: a sweep-locked change of one of these builds the task again
TASK_FIELDS = ("task", "task_args", "seed")
RESUME_VALUES = ("allow", "must", "auto")  # the values of WANDB_RESUME that ask for a resume


PREEMPT_SIGNAL = signal.SIGUSR1  # a scheduler's warning (Slurm's `--signal`): stop, and let the sweep requeue the run


class StopRequested(Exception):
    """SIGTERM or Ctrl-C: the chunk ended, every member still training has a checkpoint; their runs end with 130.

    `preempted`: the signal was PREEMPT_SIGNAL (SIGUSR1), a scheduler's notice that the job is about to be
    preempted or to reach its time limit: the run is marked preempting in W&B (`run.mark_preempting()`),
    so a W&B sweep requeues it, and ends with 128 + SIGUSR1 (138)."""

    def __init__(self, run_ids: list[str], signum: int, step: int):
        what = f"run {run_ids[0]}" if len(run_ids) == 1 else f"pack of {len(run_ids)} run(s)"
        super().__init__(f"{what}: signal {signum} at step {step}")
        self.run_ids, self.run_id, self.signum = run_ids, run_ids[0], signum
        self.preempted = signum == PREEMPT_SIGNAL
        self.exit_code = 128 + signum if self.preempted else 130


def exit_code_of(error: BaseException) -> int:
    """The exit code a run ends with after `error` (a single run's and a pack member's alike): a stop's own (130
    for SIGTERM or Ctrl-C, 138 for a preemption notice: its checkpoint continues it), 1 for a failure."""
    if isinstance(error, StopRequested):
        return error.exit_code
    return 130 if isinstance(error, KeyboardInterrupt) else 1


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise LrscanError(f"device={name!r}: CUDA is not available on this machine (use --device=cpu or auto)")
    return torch.device(name)


def new_run_id() -> str:
    # the shape of wandb's own ids: 8 characters of [a-z0-9]
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    return "".join(secrets.choice(alphabet) for _ in range(8))


def train(cfg: TrainConfig, *, task: Task | None = None,
          on_steps: Callable[[np.ndarray, dict[str, np.ndarray]], None] | None = None,
          env_run_id: str = "", env_resume: str = "", launch: Launch | None = None,
          config_from_wandb: bool = False, spawned_logger: SpawnedLogger | None = None) -> dict:
    """Run one training run end to end; returns the run summary.

    task: a Task to train (in-process); else cfg.task's make builds one; else the makemore MLP.
    on_steps(steps, columns): called with exactly the rows handed to the logger, in order (also with
    wandb_mode="disabled"): int64 training steps and their lr, lre, loss, log10_loss (+ smooth_loss), and
    what an eval step logged (dev_loss, ...) as columns that are NaN on the other rows.
    env_run_id, env_resume: WANDB_RUN_ID and WANDB_RESUME as the command line found them (wandb agent
    and pipeline.sweep name a run, and ask for its resumption, that way); --run_id and --resume win.
    launch: the program and arguments W&B records for the run (default: this process's).
    config_from_wandb: the run's config may come from wandb.init (`wandb agent` sets WANDB_SWEEP_ID): training
    waits for it. Otherwise, and when not resuming, the first steps train while the logger starts.
    spawned_logger: the run's logging process, started ahead by the caller (`tracking.spawn_run_logger`); the
    caller closes it (`close()`) if the run ends before it was taken.
    """
    # system inits
    torch.set_num_threads(cfg.num_threads)

    # what is trained, checked before any run exists: a task (its make, model, optimizer, batches and
    # loss, one dry batch), or the makemore MLP and its word list
    given = task is not None  # an in-process Task is trained as it is; cfg.task then only labels it
    generic = given or bool(cfg.task)
    splits = device = None
    if generic:
        task = check_task(task) if given else load_task(cfg.task, cfg.seed, cfg.task_args)
        data_sha256, vocab = "", ()  # a task's data is its own: the config (task, task_args, seed) names it
    else:
        device = resolve_device(cfg.device)
        splits = load_splits(cfg.data, cfg.block_size, cfg.split_seed)  # bad data fails before any run exists
        check_model_fits(cfg, len(splits.vocab))
        data_sha256, vocab = sha256_of(cfg.data), splits.vocab.itos
    checkpoint.make_dir(cfg.ckpt_dir)

    # resume: which run, from which step (without a run id, only a checkpoint that cannot be another run's)
    run_id = cfg.run_id or env_run_id
    asked_by = "--resume" if cfg.resume else f"WANDB_RESUME={env_resume}" if env_resume in RESUME_VALUES else ""
    state = None
    if asked_by:
        if run_id:
            path = checkpoint.ckpt_path(cfg.ckpt_dir, run_id)
        else:
            path = only_resumable_checkpoint(cfg, data_sha256, vocab, asked_by)
        if path is not None and path.exists():
            state = checked_state(checkpoint.load(path), path, cfg, task=generic, data_sha256=data_sha256, vocab=vocab)
            run_id = state["run_id"]
            say_resume(run_id, state, path)
            if state["finished"]:
                return state.get("summary", {})
        else:
            print(f"no checkpoint for {'run ' + run_id if run_id else 'any run'} in {cfg.ckpt_dir}: starting a new run")
    run_id = run_id or new_run_id()

    # init logging (wandb lives in its own process); a new run does not wait for it: its first steps train while
    # the logger and its wandb service come up, their rows buffered (tracking.py). A resumed run needs the
    # history its run holds, a sweep agent's the config wandb.init hands out: they wait.
    wait = config_from_wandb or state is not None or bool(asked_by)
    logger = open_logger(init_args(cfg.replace(run_id=run_id), resume=state is not None or bool(asked_by),
                                   resume_step=state["step"] if state is not None else 0,
                                   launch=launch or this_process_launch(), overlapped=not wait),
                         spawned=spawned_logger)
    info = logger.start(wait=wait)
    try:
        # a sweep run's parameters arrive both as flags and as wandb's locked config: the config wins
        merged = TrainConfig.from_mapping(info.config, base=cfg)
        if generic:
            if not given and any(getattr(merged, k) != getattr(cfg, k) for k in TASK_FIELDS):
                task = load_task(merged.task, merged.seed, merged.task_args)
            runner = TaskRun(task)
        else:
            if any(getattr(merged, k) != getattr(cfg, k) for k in DATA_FIELDS):
                splits = load_splits(merged.data, merged.block_size, merged.split_seed)
            runner = MakemoreRun(merged, splits, device)
        cfg = merged.replace(run_id=run_id)
        # a single run is a pack of one: one member, its runner the stepper
        member = Member(cfg, state, data_sha256, vocab, on_steps)
        member.use(logger, info.logged_through_step)
        if state is not None:
            runner.load(state, run_id)  # last: a task's random states are restored here
        print(f"run {run_id}: {cfg.schedule} schedule, {cfg.steps} steps, {runner.describe()}")
        summary = train_members([member], runner)[run_id]
    except BaseException as error:
        # the training error is the one to report; a run that also fails to finish is mentioned with it
        preempted = isinstance(error, StopRequested) and error.preempted
        finish_after_error(logger, exit_code_of(error), error, preempting=preempted)
        raise
    logger.finish(0)
    return summary


def train_members(members: list[Member], stepper: Stepper) -> dict[str, dict]:
    """Train K >= 1 members to their ends, one chunk of steps at a time; each member's summary by run id.

    Every member keeps its own rules (pipeline/train/member.py): its stops on its own losses, its eval and
    checkpoint steps, its history rows; members may be at different steps (resumed from different
    checkpoints). A member that stops inside a chunk is replayed up to its stop step (its model is the
    one of that step, never trained past it), leaves and ends its run; the others go on. SIGTERM,
    Ctrl-C or SIGUSR1 (a preemption notice): the chunk ends, every member still training is
    checkpointed, StopRequested is raised.
    """
    summaries: dict[str, dict] = {}
    with _StopSignals() as signals, _progress_bar(members) as bar:
        while True:
            # the members that are done leave: each ends its run with its summary, the others go on
            # (before the first chunk too: a checkpoint can be at a run's last step)
            leaving = [k for k, m in enumerate(members) if m.done]
            if leaving:
                # side by side where the stepper can; a run paused at a step (a search's rung) ends with what its eval
                # step logs, its held-out loss (the makemore MLP's pass over the training split is most of a rung's
                # end), the full losses at its last step
                ending = [k for k in leaving if not members[k].paused and members[k].cfg.final_eval]
                losses = {k: {} for k in leaving}
                losses.update(stepper.final_losses(ending) if ending else {})
                losses.update({k: stepper.evaluate(k) for k in leaving if members[k].paused})
                for k in leaving:
                    m = members[k]
                    summary = m.end_summary(stepper.n_params, losses[k])
                    m.end(summary, stepper.state(k))
                    # a run paused at a rung samples no names: they come when it ends
                    stepper.report(k, m.run_id, summary, m.tail(summary), samples=not m.paused)
                    summaries[m.run_id] = summary
                rows = [k for k in range(len(members)) if k not in leaving]
                members = [members[k] for k in rows]
                if not members:
                    break
                stepper = stepper.keep(rows)
            if signals.received is not None:
                raise StopRequested([m.run_id for m in members], signals.received, min(m.step for m in members))

            # one chunk, as long as the shortest of the members' own chunks, so that every member's eval and
            # checkpoint steps fall on a chunk's end; its losses come back at once and go to the logger at
            # once, so the per-step work is the training step only
            n = min(m.chunk_end() - m.step for m in members)
            t0 = time.perf_counter()
            lrs = np.stack([m.lrs[m.step:m.step + n] for m in members], 1)  # (n, K)
            loss = stepper.train_chunk([m.step for m in members], lrs,
                                       rewindable=any(m.can_stop for m in members))  # (n, K) float64
            chunk_s = time.perf_counter() - t0

            # early stops: each member looks at its own losses in order and keeps the steps up to its stop;
            # one that stopped inside the chunk is replayed to its stop step, bit for bit on the CPU
            kept = [m.scan(loss[:, k]) for k, m in enumerate(members)]
            stopped = {k: n_k for k, (n_k, _) in enumerate(kept) if n_k < n}
            if stopped:
                stepper.replay(stopped)

            # logging, with the eval of the members whose chunk ends on an eval step
            for k, m in enumerate(members):
                n_k, smooth = kept[k]
                m.elapsed_s += chunk_s * n_k / n  # the time of the steps this member kept
                evaluated = stepper.evaluate(k) if m.eval_due(n_k) else {}
                m.log(n_k, loss[:, k], smooth, {m.step + n_k - 1: evaluated} if evaluated else {})
                m.step += n_k
            bar.update(min(m.step for m in members) - bar.n)
            if len(members) == 1:
                bar.set_postfix(loss=f"{loss[kept[0][0] - 1, 0]:.4f}", lr=f"{lrs[kept[0][0] - 1, 0]:.3g}",
                                refresh=False)

            # checkpoints, once the logger has the steps before them (a resumed run must find them there);
            # a member that stopped or finished is saved as it ends instead
            for k, m in enumerate(members):
                if not m.done and m.checkpoint_due(signals.received is not None):
                    m.logger.flush()
                    m.save_checkpoint(stepper.state(k), finished=False)
    return summaries


class _StopSignals:
    """SIGTERM (a sweep runner or `wandb agent` stopping us, a scheduler's kill), Ctrl-C and SIGUSR1 (a
    scheduler's preemption or time-limit notice), noted for the loop to stop at the chunk's end. A
    preemption notice, once received, stays the reason: the TERM that follows it (an agent told to stop
    taking runs forwards its TERM too) does not turn a preempted run into a stopped one. Python installs
    signal handlers in the main thread only: called from another thread (a notebook kernel's worker,
    Ray, Gradio) the loop leaves the process's handlers as they are."""

    def __enter__(self) -> _StopSignals:
        self.received: int | None = None
        self._previous = {}
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._note) for s in (signal.SIGTERM, signal.SIGINT, PREEMPT_SIGNAL)}
        return self

    def _note(self, signum, frame) -> None:
        if self.received != PREEMPT_SIGNAL:
            self.received = signum

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)


def _progress_bar(members: list[Member]):
    # the slowest member's step, shown on a terminal only
    from tqdm import tqdm

    cfg = members[0].cfg
    return tqdm(total=cfg.steps, initial=min(m.step for m in members), unit="step", dynamic_ncols=True,
                disable=not sys.stderr.isatty(), miniters=cfg.progress_every_steps, mininterval=0.2)
