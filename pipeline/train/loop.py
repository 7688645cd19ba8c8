"""Train the seed's character-level MLP with one lr schedule, logging every step to wandb.

    python -m pipeline.train --schedule=range --lre_min=-3 --lre_max=0 --steps=1000
    python -m pipeline.train --schedule=step --n_embd=10 --n_hidden=200 --steps=200000 --lr=0.1 \\
        --decay_steps=[100000] --decay_lrs=[0.01]
    python -m pipeline.train --help

Every step logs lr, lre (log10 of the lr used), loss and log10_loss at step = the training step.
Offline by default: the run lands in ./wandb (or $WANDB_DIR/wandb) and `wandb sync` uploads it later.
"""

from __future__ import annotations

import math
import os
import secrets
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pipeline import keys
from pipeline.config import OPERATIONAL, TrainConfig, fields_of_kind
from pipeline.errors import LrscanError
from pipeline.train import checkpoint
from pipeline.train.data import Splits, load_splits, sha256_of
from pipeline.train.model import MLP, NonFiniteModel, SGDStep, param_shapes
from pipeline.train.schedule import ClimbStop, schedule_lrs
from pipeline.train.tracking import InitArgs, Launch, finish_after_error, open_logger, this_process_launch

# fields that change the data the model sees: a sweep-locked change of one of these reloads the data
DATA_FIELDS = ("data", "block_size", "split_seed")
SAMPLING_BLOCK_STEPS = 1024  # minibatch indices are drawn per block of steps from a generator seeded by (seed, block)
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


def batch_indices(seed: int, start_step: int, n_steps: int, n_train: int, batch_size: int,
                  block_steps: int = SAMPLING_BLOCK_STEPS) -> torch.Tensor:
    """Minibatch row indices for steps [start_step, start_step + n_steps): (n_steps, batch_size) int64.

    Each block of `block_steps` steps has its own generator seeded from (seed, block), so the batches of
    a step do not depend on where the run started: a resumed run sees exactly the batches it would have.
    """
    out = []
    step, end = start_step, start_step + n_steps
    while step < end:
        block = step // block_steps
        g = torch.Generator().manual_seed((seed * 1_000_003 + block) % (2**63 - 1))
        ix = torch.randint(0, n_train, (block_steps, batch_size), generator=g)  # (block_steps, B)
        lo = step - block * block_steps
        hi = min(end - block * block_steps, block_steps)
        out.append(ix[lo:hi])
        step += hi - lo
    return torch.cat(out)


def _check_model_fits(cfg: TrainConfig, vocab_size: int) -> None:
    # parameters and gradients, float32: a size that cannot fit fails here, before any run exists
    n_params = sum(math.prod(s) for s in param_shapes(vocab_size, cfg.block_size, cfg.n_embd, cfg.n_hidden).values())
    need = 2 * 4 * n_params
    have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if need > have:
        raise LrscanError(f"n_embd={cfg.n_embd}, n_hidden={cfg.n_hidden}: {n_params:.3g} parameters need "
                          f"{need / 2**30:.3g} GiB, more than this machine's memory ({have / 2**30:.3g} GiB)")


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


def train(cfg: TrainConfig, *, env_run_id: str = "", env_resume: str = "", launch: Launch | None = None) -> dict:
    """Run one training run end to end; returns the run summary.

    env_run_id, env_resume: WANDB_RUN_ID and WANDB_RESUME as the command line found them (wandb agent
    and pipeline.sweep name a run, and ask for its resumption, that way); --run_id and --resume win.
    launch: the program and arguments W&B records for the run (default: this process's).
    """
    # system inits
    torch.set_num_threads(cfg.num_threads)
    device = resolve_device(cfg.device)
    splits = load_splits(cfg.data, cfg.block_size, cfg.split_seed)  # bad data fails before any run exists
    _check_model_fits(cfg, len(splits.vocab))
    try:
        Path(cfg.ckpt_dir).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise LrscanError(f"ckpt_dir={cfg.ckpt_dir!r}: cannot create it ({e.strerror})") from None
    if not os.access(cfg.ckpt_dir, os.W_OK):
        raise LrscanError(f"ckpt_dir={cfg.ckpt_dir!r}: not writable")
    data_sha256 = sha256_of(cfg.data)

    # resume: which run, from which step (without a run id, only a checkpoint that cannot be another run's)
    run_id = cfg.run_id or env_run_id
    asked_by = "--resume" if cfg.resume else f"WANDB_RESUME={env_resume}" if env_resume in RESUME_VALUES else ""
    state = None
    if asked_by:
        if run_id:
            path = checkpoint.ckpt_path(cfg.ckpt_dir, run_id)
        else:
            path = only_resumable_checkpoint(cfg, data_sha256, splits.vocab.itos, asked_by)
        if path is not None and path.exists():
            state = checkpoint.load(path)
            run_id = state["run_id"]
            diff = compatible(state["config"], cfg)
            if diff:
                raise LrscanError(f"cannot resume run {run_id}: {', '.join(diff)} differ from its checkpoint {str(path)!r}")
            if not same_data(state, data_sha256, splits.vocab.itos):
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
        if any(getattr(merged, k) != getattr(cfg, k) for k in DATA_FIELDS):
            splits = load_splits(merged.data, merged.block_size, merged.split_seed)
        cfg = merged.replace(run_id=run_id)
        summary = _run(cfg, splits, device, logger, state, info.logged_through_step, data_sha256)
    except BaseException as error:
        # the training error is the one to report; a run that also fails to finish is mentioned with it
        finish_after_error(logger, 130 if isinstance(error, (StopRequested, KeyboardInterrupt)) else 1, error)
        raise
    logger.finish(0)
    return summary


def _run(cfg: TrainConfig, splits: Splits, device: torch.device, logger, state: dict | None, logged_through: int,
         data_sha256: str) -> dict:
    # init model
    vocab_size = len(splits.vocab)
    try:
        model = MLP.create(vocab_size, cfg.block_size, cfg.n_embd, cfg.n_hidden, seed=cfg.seed, init=cfg.init, device=device)
    except RuntimeError as e:  # typically an allocation that cannot succeed
        raise LrscanError(f"cannot build the model (n_embd={cfg.n_embd}, n_hidden={cfg.n_hidden}): {str(e).splitlines()[0]}") from None
    climb = ClimbStop(beta=cfg.smooth_beta, factor=cfg.climb_factor, burn_in_steps=cfg.climb_burn_in_steps)
    can_stop = cfg.stop_on_nonfinite or (cfg.schedule == "range" and cfg.stop_on_climb)
    start_step, elapsed_s = 0, 0.0
    stop_step = stop_reason = diverged_at = None
    if state is not None:
        model.flat.copy_(state["flat"].to(device))
        climb.load(state["climb"])
        start_step, elapsed_s = state["step"], state["elapsed_s"]
        diverged_at = state.get("diverged_at")
    step_fn = SGDStep(model)
    Xtr, Ytr = (t.to(device) for t in splits.train)
    lrs, lres = schedule_lrs(cfg.schedule, cfg.steps, lre_min=cfg.lre_min, lre_max=cfg.lre_max, lr=cfg.lr,
                             decay_steps=cfg.decay_steps, decay_lrs=cfg.decay_lrs)
    ckpt_file = checkpoint.ckpt_path(cfg.ckpt_dir, cfg.run_id)
    is_range = cfg.schedule == "range"
    print(f"run {cfg.run_id}: {cfg.schedule} schedule, {cfg.steps} steps, {model.n_params} parameters, "
          f"{splits.n_words[0]}/{splits.n_words[1]}/{splits.n_words[2]} words train/dev/test, device {device}")

    def save_checkpoint(next_step: int, finished: bool, summary: dict | None = None) -> None:
        checkpoint.save(ckpt_file, {
            "config": cfg.to_dict(), "run_id": cfg.run_id, "step": next_step, "finished": finished,
            "flat": model.flat.detach().cpu(), "climb": climb.state(), "vocab": list(splits.vocab.itos),
            "data_sha256": data_sha256, "diverged_at": diverged_at, "elapsed_s": elapsed_s, "summary": summary or {},
        })

    # SIGTERM (a sweep runner stopping us, a scheduler's preemption) ends the run like Ctrl-C
    stop = {"signal": None}

    def on_signal(signum, frame):
        stop["signal"] = signum

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    bar = _progress_bar(cfg.steps, start_step, cfg.progress_every_steps)
    step = start_step
    try:
        # training loop, one chunk of steps at a time: the chunk's batches are drawn at once and its
        # losses are handed to the logger at once, so the per-step work is tensor ops only
        while step < cfg.steps and stop_step is None:
            end = _chunk_end(step, cfg)
            t0 = time.perf_counter()
            ix = batch_indices(cfg.seed, step, end - step, Xtr.shape[0], cfg.batch_size).to(device)  # (n, B)
            Xc, Yc = Xtr[ix], Ytr[ix]                                       # (n, B, block_size), (n, B)
            onehot = F.one_hot(Yc, vocab_size).to(model.flat.dtype)       # (n, B, vocab)
            # unbind: the per-step views in one call each, cheaper than indexing every step
            batches = list(zip(Xc.view(end - step, -1).unbind(0), Yc.unbind(0), onehot.unbind(0),
                               lrs[step:end].tolist()))
            t_batches = time.perf_counter()
            chunk_start = model.flat.clone() if can_stop else None  # an early stop inside the chunk rewinds to here
            loss = torch.stack([step_fn(*batch) for batch in batches]).double().cpu().numpy()  # (n,)
            train_s = time.perf_counter() - t_batches

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
            if n < len(batches):
                # the chunk trained past the stop: rewind to its start and train its first n steps again
                # (the same batches and lrs, in order), so that the weights, the final losses and the
                # checkpoint are those right after stop_step, bit for bit on the CPU; the time counted
                # is that of the steps kept
                t_replay = time.perf_counter()
                model.flat.copy_(chunk_start)
                torch.stack([step_fn(*batch) for batch in batches[:n]]).cpu()  # .cpu(): wait for the device
                train_s = time.perf_counter() - t_replay
            elapsed_s += (t_batches - t0) + train_s

            # logging
            extra = {}
            if cfg.eval_every_steps and (step + n) % cfg.eval_every_steps == 0 and stop_step is None:
                extra[step + n - 1] = {keys.DEV_LOSS: model.loss(*(t.to(device) for t in splits.dev))}
            first = max(0, logged_through + 1 - step)  # a resumed run re-trains, but does not re-log, what its history has
            if first < n:
                columns = {keys.LR: lrs[step:step + n], keys.LRE: lres[step:step + n], keys.LOSS: loss[:n],
                           keys.LOG10_LOSS: np.log10(loss[:n])}
                if is_range:
                    columns[keys.SMOOTH_LOSS] = smooth[:n]
                logger.log_steps(np.arange(step, step + n)[first:], {k: v[first:] for k, v in columns.items()}, extra)
            step += n
            bar.update(n)
            bar.set_postfix(loss=f"{loss[n - 1]:.4f}", lr=f"{lrs[step - 1]:.3g}", refresh=False)

            # checkpoint (once the logger has the steps before it: a resumed run must find them there)
            if stop_step is not None:
                continue  # an early stop ends the run normally, whatever signal came meanwhile
            if stop["signal"] is not None or (cfg.ckpt_every_steps and step % cfg.ckpt_every_steps == 0 and step < cfg.steps):
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
        "n_params": model.n_params,
    }
    for key, (X, Y) in ((keys.TRAIN_LOSS, splits.train), (keys.DEV_LOSS, splits.dev), (keys.TEST_LOSS, splits.test)):
        summary[key] = model.loss(X.to(device), Y.to(device))
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
    print(f"run {cfg.run_id}: train {summary[keys.TRAIN_LOSS]:.4f}  dev {summary[keys.DEV_LOSS]:.4f}  "
          f"test {summary[keys.TEST_LOSS]:.4f}  ({summary[keys.STEPS_PER_SECOND]:.0f} steps/s{why})")
    if cfg.samples:
        g = torch.Generator().manual_seed(cfg.seed + 10)
        try:
            names = ["".join(splits.vocab.itos[i] for i in w) for w in model.sample(cfg.samples, g)]
            print("samples: " + ", ".join(names))
        except NonFiniteModel as e:  # a diverged run is a normal outcome: its summary stands, it has no names
            print(f"samples: none, the model diverged ({e})")
    return summary


def _chunk_end(step: int, cfg: TrainConfig) -> int:
    # chunks end on eval and checkpoint steps so both see the exact state of that step
    end = min(step + cfg.log_chunk_steps, cfg.steps)
    for every in (cfg.eval_every_steps, cfg.ckpt_every_steps):
        if every:
            end = min(end, (step // every + 1) * every)
    return end


def _progress_bar(total: int, initial: int, every_steps: int):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, disable=not sys.stderr.isatty(),
                miniters=every_steps, mininterval=0.2)
