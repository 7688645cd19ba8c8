"""One training run, read top to bottom: config, what is trained, resume, logger, the loop with its stops, summary.

    python -m pipeline.train --schedule=range --lre_min=-3 --lre_max=0 --steps=1000
    python -m pipeline.train --schedule=step --n_embd=10 --n_hidden=200 --steps=200000 --lr=0.1 \\
        --decay_steps=[100000] --decay_lrs=[0.01]
    python -m pipeline.train --task=path/to/file.py:make --task_args="{'width': 64}"
    python -m pipeline.train --help

What is trained: the makemore MLP with its hand-written fast step (pipeline/train/makemore.py, the
default), or any PyTorch model and optimizer given as a Task (pipeline/train/task.py), trained with
autograd (pipeline/train/generic.py). Both go through the same loop: the same schedules, stops,
logging, checkpoints and resume.

Every step logs lr, lre (log10 of the lr used), loss and log10_loss at step = the training step.
Offline by default: the run lands in ./wandb (or $WANDB_DIR/wandb) and `wandb sync` uploads it later.
"""

from __future__ import annotations

import math
import secrets
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from pipeline import keys
from pipeline.config import OPERATIONAL, TrainConfig, fields_of_kind
from pipeline.errors import LrscanError
from pipeline.train import checkpoint
from pipeline.train.data import SAMPLING_BLOCK_STEPS, batch_indices, load_splits, sha256_of  # noqa: F401 (re-export)
from pipeline.train.generic import TaskRun
from pipeline.train.makemore import MakemoreRun, check_model_fits
from pipeline.train.schedule import ClimbStop, schedule_lrs
from pipeline.train.task import Task, check_task, load_task
from pipeline.train.tracking import InitArgs, Launch, finish_after_error, open_logger, this_process_launch

# fields that change the data the model sees: a sweep-locked change of one of these reloads the data
DATA_FIELDS = ("data", "block_size", "split_seed")
# fields that change what a task's make builds: a sweep-locked change of one of these builds the task again
TASK_FIELDS = ("task", "task_args", "seed")
RESUME_VALUES = ("allow", "must", "auto")  # the values of WANDB_RESUME that ask for a resume
LISTED_CHECKPOINTS = 8  # an error about the checkpoints in a folder names this many, then counts the rest


class StopRequested(Exception):
    """SIGTERM or Ctrl-C: finish the current chunk, save a checkpoint, close the run."""

    def __init__(self, run_id: str, signum: int, step: int):
        super().__init__(f"run {run_id}: signal {signum} at step {step}")
        self.run_id = run_id


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


def compatible(saved: dict, cfg: TrainConfig) -> list[str]:
    """The fields of `cfg` that differ from a checkpoint's config where a resume must keep them: every
    field but the operational ones (pipeline.config says which)."""
    now, free = cfg.to_dict(), set(fields_of_kind(OPERATIONAL))
    return sorted(k for k, v in saved.items() if k not in free and now.get(k) != v)


def same_data(state: dict, data_sha256: str, vocab: tuple[str, ...]) -> bool:
    # the data path may move between machines; its content may not
    return state.get("data_sha256", data_sha256) == data_sha256 and tuple(state["vocab"]) == tuple(vocab)


def only_resumable_checkpoint(cfg: TrainConfig, data_sha256: str, vocab: tuple[str, ...], asked_by: str) -> Path | None:
    """For a resume without a run id: the one unfinished checkpoint in ckpt_dir that this config and
    data could continue. None when the folder holds no checkpoint (a new run). Anything else, none
    that fits or several, is an LrscanError listing them: guessing could continue someone else's run."""
    found = checkpoint.load_all(cfg.ckpt_dir)
    if not found:
        return None
    fits, described = [], []
    for path, state in found:
        if isinstance(state, LrscanError):
            described.append(f"{path.name} (unreadable)")
            continue
        run = state.get("run_id", path.stem)
        diff = compatible(state["config"], cfg)
        if diff:
            described.append(f"{run} ({', '.join(diff)} differ)")
        elif not same_data(state, data_sha256, vocab):
            described.append(f"{run} (another word list)")
        elif state["finished"]:
            described.append(f"{run} (finished)")
        else:
            fits.append(path)
            described.append(f"{run} (at step {state['step']})")
    if len(fits) == 1:
        return fits[0]
    listed = ", ".join(described[:LISTED_CHECKPOINTS]) + (f" and {len(described) - LISTED_CHECKPOINTS} more"
                                                          if len(described) > LISTED_CHECKPOINTS else "")
    where = f"{len(found)} checkpoint(s) in {cfg.ckpt_dir!r}: {listed}"
    if fits:
        raise LrscanError(f"{asked_by} without a run id: {len(fits)} unfinished runs fit this config; choose one with "
                          f"--run_id=ID. {where}")
    raise LrscanError(f"{asked_by} without a run id: no unfinished run fits this config; continue one with "
                      f"--run_id=ID, or start a new run without {asked_by}. {where}")


def train(cfg: TrainConfig, *, task: Task | None = None,
          on_steps: Callable[[np.ndarray, dict[str, np.ndarray]], None] | None = None,
          env_run_id: str = "", env_resume: str = "", launch: Launch | None = None) -> dict:
    """Run one training run end to end; returns the run summary.

    task: a Task to train (in-process); else cfg.task's make builds one; else the makemore MLP.
    on_steps(steps, columns): called with exactly the rows handed to the logger, in order (also with
    wandb_mode="disabled"): int64 training steps and their lr, lre, loss, log10_loss (+ smooth_loss), and
    what an eval step logged (dev_loss, ...) as columns that are NaN on the other rows.
    env_run_id, env_resume: WANDB_RUN_ID and WANDB_RESUME as the command line found them (wandb agent
    and pipeline.sweep name a run, and ask for its resumption, that way); --run_id and --resume win.
    launch: the program and arguments W&B records for the run (default: this process's).
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
            state = checkpoint.load(path)
            run_id = state["run_id"]
            diff = compatible(state["config"], cfg)
            if diff:
                raise LrscanError(f"cannot resume run {run_id}: {', '.join(diff)} differ from its checkpoint "
                                  f"{str(path)!r}")
            if ("flat" in state) == generic:
                raise LrscanError(f"cannot resume run {run_id}: its checkpoint {str(path)!r} is of "
                                  f"{'the makemore MLP' if 'flat' in state else 'a task'}, this run trains "
                                  f"{'a task' if generic else 'the makemore MLP'}")
            if not same_data(state, data_sha256, vocab):
                raise LrscanError(f"cannot resume run {run_id}: {cfg.data!r} is not the word list it was trained on")
            if state["finished"]:
                print(f"run {run_id} already finished at step {state['step'] - 1} ({path}); nothing to do")
                return state.get("summary", {})
            print(f"resuming run {run_id} at step {state['step']} from {path}")
        else:
            print(f"no checkpoint for {'run ' + run_id if run_id else 'any run'} in {cfg.ckpt_dir}: starting a new run")
    run_id = run_id or new_run_id()

    # init logging (wandb lives in its own process)
    logger = open_logger(InitArgs(
        run_id=run_id, mode=cfg.wandb_mode, project=cfg.wandb_project, entity=cfg.wandb_entity,
        group=cfg.wandb_group, name=cfg.wandb_name, tags=cfg.wandb_tags, job_type=cfg.wandb_job_type,
        config=cfg.replace(run_id=run_id).to_dict(), resume=state is not None or bool(asked_by),
        define_lre_axis=cfg.schedule == "range",
        lock_path=str(checkpoint.ckpt_path(cfg.ckpt_dir, run_id).with_suffix(".lock")),
        resume_step=state["step"] if state is not None else 0,
        launch=launch or this_process_launch(),
    ))
    info = logger.start()
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
        summary = _run(cfg, runner, logger, state, info.logged_through_step, data_sha256, vocab, on_steps)
    except BaseException as error:
        # the training error is the one to report; a run that also fails to finish is mentioned with it
        finish_after_error(logger, 130 if isinstance(error, (StopRequested, KeyboardInterrupt)) else 1, error)
        raise
    logger.finish(0)
    return summary


def _run(cfg: TrainConfig, runner: MakemoreRun | TaskRun, logger, state: dict | None, logged_through: int,
         data_sha256: str, vocab: tuple[str, ...], on_steps) -> dict:
    # init the stops, and the state of a resumed run
    climb = ClimbStop(beta=cfg.smooth_beta, factor=cfg.climb_factor, burn_in_steps=cfg.climb_burn_in_steps)
    can_stop = cfg.stop_on_nonfinite or (cfg.schedule == "range" and cfg.stop_on_climb)
    start_step, elapsed_s = 0, 0.0
    stop_step = stop_reason = diverged_at = None
    if state is not None:
        climb.load(state["climb"])
        start_step, elapsed_s = state["step"], state["elapsed_s"]
        diverged_at = state.get("diverged_at")
        runner.load(state, cfg.run_id)  # last: a task's random states are restored here
    lrs, lres = schedule_lrs(cfg.schedule, cfg.steps, lre_min=cfg.lre_min, lre_max=cfg.lre_max, lr=cfg.lr,
                             decay_steps=cfg.decay_steps, decay_lrs=cfg.decay_lrs, step_mode=cfg.step_mode)
    ckpt_file = checkpoint.ckpt_path(cfg.ckpt_dir, cfg.run_id)
    is_range = cfg.schedule == "range"
    print(f"run {cfg.run_id}: {cfg.schedule} schedule, {cfg.steps} steps, {runner.describe()}")

    def save_checkpoint(next_step: int, finished: bool, summary: dict | None = None) -> None:
        checkpoint.save(ckpt_file, {
            "config": cfg.to_dict(), "run_id": cfg.run_id, "step": next_step, "finished": finished,
            **runner.state(), "climb": climb.state(), "vocab": list(vocab), "data_sha256": data_sha256,
            "diverged_at": diverged_at, "elapsed_s": elapsed_s, "summary": summary or {},
        })

    # SIGTERM (a sweep runner stopping us, a scheduler's preemption) ends the run like Ctrl-C
    stop = {"signal": None}

    def on_signal(signum, frame):
        stop["signal"] = signum

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    bar = _progress_bar(cfg.steps, start_step, cfg.progress_every_steps)
    step = start_step
    try:
        # training loop, one chunk of steps at a time: the chunk's losses come back at once and are
        # handed to the logger at once, so the per-step work is the training step only
        while step < cfg.steps and stop_step is None:
            end = chunk_end(step, cfg)
            t0 = time.perf_counter()
            loss = runner.train_chunk(step, end, lrs, rewindable=can_stop)  # (end - step,) float64
            train_s = time.perf_counter() - t0

            # early stops: look at the chunk's losses in order, cut the chunk at the first stop
            n = end - step
            smooth = np.full(n, np.nan)
            for k in range(n):
                s = step + k
                if not math.isfinite(loss[k]) and diverged_at is None:
                    diverged_at = s
                    if cfg.stop_on_nonfinite:
                        stop_step, stop_reason, n = s, keys.STOP_NON_FINITE, k + 1
                        break
                if is_range:
                    smooth[k], climbed = climb.update(s, float(loss[k]))
                    if climbed and cfg.stop_on_climb:
                        stop_step, stop_reason, n = s, keys.STOP_CLIMB, k + 1
                        break
            if n < end - step:
                # the chunk trained past the stop: rewind to its start and train its first n steps again
                # (the same batches and lrs, in order), so that the weights, the final losses and the
                # checkpoint are those right after stop_step, bit for bit on the CPU; the time counted
                # is that of the steps kept
                t_replay = time.perf_counter()
                runner.rewind(n)
                train_s = time.perf_counter() - t_replay
            elapsed_s += train_s

            # logging
            extra = {}
            if cfg.eval_every_steps and (step + n) % cfg.eval_every_steps == 0 and stop_step is None:
                evaluated = runner.evaluate()
                if evaluated:
                    extra[step + n - 1] = evaluated
            # a resumed run re-trains, but does not re-log, what its history has
            first = max(0, logged_through + 1 - step)
            if first < n:
                columns = {keys.LR: lrs[step:step + n], keys.LRE: lres[step:step + n], keys.LOSS: loss[:n],
                           keys.LOG10_LOSS: np.log10(loss[:n])}
                if is_range:
                    columns[keys.SMOOTH_LOSS] = smooth[:n]
                rows, columns = np.arange(step, step + n)[first:], {k: v[first:] for k, v in columns.items()}
                logger.log_steps(rows, columns, extra)
                if on_steps is not None:
                    on_steps(rows, with_evaluated(rows, columns, extra))
            step += n
            bar.update(n)
            bar.set_postfix(loss=f"{loss[n - 1]:.4f}", lr=f"{lrs[step - 1]:.3g}", refresh=False)

            # checkpoint (once the logger has the steps before it: a resumed run must find them there)
            if stop_step is not None:
                continue  # an early stop ends the run normally, whatever signal came meanwhile
            due = cfg.ckpt_every_steps and step % cfg.ckpt_every_steps == 0 and step < cfg.steps
            if stop["signal"] is not None or due:
                logger.flush()
                save_checkpoint(step, finished=False)
            if stop["signal"] is not None:
                raise StopRequested(cfg.run_id, stop["signal"], step)
    finally:
        bar.close()
        for s, handler in previous.items():
            signal.signal(s, handler)

    # evaluate
    summary = {
        keys.FINAL_STEP: step - 1,
        keys.STEPS_PER_SECOND: step / elapsed_s if elapsed_s > 0 else 0.0,  # elapsed_s runs across resumes
        "n_params": runner.n_params,
        **runner.final_summary(),
    }
    if stop_step is not None:
        summary[keys.STOP_STEP], summary[keys.STOP_REASON] = stop_step, stop_reason
    if diverged_at is not None:
        summary[keys.DIVERGED_AT_STEP] = diverged_at
    if is_range and math.isfinite(climb.best):
        summary[keys.BEST_SMOOTH_LOSS] = climb.best
    logger.summary(summary)
    save_checkpoint(step, finished=True, summary=summary)

    # report
    why = f", stopped at step {stop_step} ({stop_reason})" if stop_step is not None else ""
    runner.report(cfg.run_id, summary, f"{summary[keys.STEPS_PER_SECOND]:.0f} steps/s{why}")
    return summary


def with_evaluated(rows: np.ndarray, columns: dict[str, np.ndarray], extra: dict[int, dict]) -> dict[str, np.ndarray]:
    """The chunk's columns plus what its eval step logged (dev_loss, ...), NaN on the rows without it."""
    out = dict(columns)
    for at, values in extra.items():
        for name, value in values.items():
            column = out.setdefault(name, np.full(len(rows), np.nan))
            column[rows == at] = value
    return out


def chunk_end(step: int, cfg: TrainConfig) -> int:
    """Where the chunk starting at `step` ends: chunks end on eval and checkpoint steps so both see the
    exact state of that step (a pack's members follow the same rule, each at its own step)."""
    end = min(step + cfg.log_chunk_steps, cfg.steps)
    for every in (cfg.eval_every_steps, cfg.ckpt_every_steps):
        if every:
            end = min(end, (step // every + 1) * every)
    return end


def _progress_bar(total: int, initial: int, every_steps: int):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, disable=not sys.stderr.isatty(),
                miniters=every_steps, mininterval=0.2)
