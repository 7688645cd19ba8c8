"""Train a pack: K sweep points of the makemore MLP stacked in one process, each its own W&B run (a user
task's points: pipeline/pack/functional.py, through torch.func).

    train_pack([Point.parse("lr_range-0000", ["--seed=1", "--lre_min=-3"]), ...])

The single trainer's recipe (pipeline/train/loop.py), one chunk of steps at a time, for K members at
once: each member draws its own batches from (its seed, block) with `batch_indices`, so its batches
and losses do not depend on its packmates; the K steps run as one batched step (`StackedSGDStep`).
After each chunk every member applies its own stop rules to its own losses, logs its own rows to its
own run, evaluates and checkpoints on its own steps. A member that stops inside a chunk is rewound
and replayed up to its stop step (its model is the one at its stop step, never trained past it),
leaves the pack and ends its run with its summary; the others go on. SIGTERM or Ctrl-C checkpoint
every member still training, end their runs as the single trainer does, and exit 130.

Unlike a single run, whose config may come back changed from a sweep's wandb.init, a pack takes its
members' configs from their arguments, so the K runs open in the logging process while the first
chunk trains (seconds saved per pack); the first use of a run waits for them, bounded.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from pipeline import keys
from pipeline.errors import LrscanError
from pipeline.pack.logger import open_pack_logger
from pipeline.pack.members import FAILED, FINISHED, KILLED, Member, Point, load_resume_state, write_end
from pipeline.pack.stacked_mlp import StackedMLP, StackedSGDStep, batch_mean
from pipeline.packing import key_difference
from pipeline.train import checkpoint
from pipeline.train.data import batch_indices, load_splits, sha256_of
from pipeline.train.loop import StopRequested, resolve_device
from pipeline.train.model import param_shapes
from pipeline.train.tracking import Launch, RunInfo

TRAINER_PROGRAM = "-m pipeline.train"  # what W&B records as each member's command: the run it stands for


class PackStopRequested(Exception):
    """SIGTERM or Ctrl-C reached a pack: every member still training has a checkpoint and an ended run."""

    def __init__(self, run_ids: list[str], signum: int):
        super().__init__(f"pack of {len(run_ids)} run(s): signal {signum}")
        self.run_ids = run_ids


def check_pack(points: list[Point]) -> None:
    """Points that cannot share a pack: one line naming the fields that differ."""
    if not points:
        raise LrscanError("a pack needs at least one point")
    ids = [p.run_id for p in points]
    twice = sorted({i for i in ids if ids.count(i) > 1})
    if twice:
        raise LrscanError(f"run id(s) {', '.join(twice)} given twice in one pack")
    for p in points[1:]:
        diff = key_difference(points[0].cfg, p.cfg)
        if diff:
            raise LrscanError(f"points {points[0].run_id} and {p.run_id} cannot share a pack: {', '.join(diff)} differ "
                              f"(packmates may differ only in seed, lre_min/lre_max, lr, decay steps and lrs)")


def train_pack(points: list[Point], *, program: str = TRAINER_PROGRAM) -> dict[str, dict]:
    """Train every point of the pack to its end; returns each run's summary by run id.

    program: what W&B records as each member's program (its arguments are the point's own).
    """
    check_pack(points)
    cfg0 = points[0].cfg
    if cfg0.task:
        # a task of the user's own: K copies of its model stepped with torch.func, when it allows that
        from pipeline.pack.functional import train_task_pack

        return train_task_pack(points, program=program, run_members=run_members)
    # system inits
    torch.set_num_threads(cfg0.num_threads)
    device = resolve_device(cfg0.device)
    splits = load_splits(cfg0.data, cfg0.block_size, cfg0.split_seed)
    _check_pack_fits(cfg0, len(splits.vocab), len(points))
    checkpoint.make_dir(cfg0.ckpt_dir)
    data_sha256 = sha256_of(cfg0.data)
    vocab = tuple(splits.vocab.itos)

    # resume: a member with a checkpoint continues from it; a finished one is done already
    summaries: dict[str, dict] = {}
    members: list[Member] = []
    for point in points:
        state = load_resume_state(point, data_sha256=data_sha256, vocab=vocab)
        if state is not None and state["finished"]:
            print(f"run {point.run_id} already finished at step {state['step'] - 1}; nothing to do")
            summaries[point.run_id] = state.get("summary", {})
            write_end(point, FINISHED, 0)
            continue
        members.append(Member(point, state, data_sha256, vocab))
        if state is not None:
            print(f"resuming run {point.run_id} at step {state['step']} from {members[-1].ckpt_file}")
    if not members:
        return summaries

    summaries.update(run_members(members, program, lambda ms: _train(ms, splits, device)))
    return summaries


def run_members(members: list[Member], program: str, train) -> dict[str, dict]:
    """Open every member's run, `train(members)` (-> summaries by run id), and end the runs as the single
    trainer does: a failure or a stop ends each member's run still open with its exit code and end file."""
    # init logging: one process, one wandb run per member
    logger = open_pack_logger([m.init_args(Launch(program=program, args=m.point.args)) for m in members])
    opening = {"done": False}

    def open_runs() -> None:
        # once, at the first use of any member's run: training starts while the logger process runs wandb.init
        if opening["done"]:
            return
        opening["done"] = True
        opened = logger.start()
        for k, (member, info) in enumerate(zip(members, opened)):
            if isinstance(info, RunInfo):
                member.attach(logger.member(k), info)
        failed = [(m, info) for m, info in zip(members, opened) if isinstance(info, str)]
        if failed:
            raise LrscanError(f"run {failed[0][0].run_id}: wandb.init failed: {failed[0][1]}")

    for member in members:
        member.attach_when_used(open_runs)
    try:
        summaries = train(members)
    except BaseException as error:
        stopped = isinstance(error, (PackStopRequested, StopRequested, KeyboardInterrupt))
        unfinished: list[str] = []
        for member in members:
            if not member.ended:
                try:
                    member.logger_finish(130 if stopped else 1)
                except Exception as e:  # the runs never opened (the logging process failed): say so, go on
                    unfinished.append(str(e))
                write_end(member.point, KILLED if stopped else FAILED, 130 if stopped else 1, _one_line(error))
        if unfinished and str(error) != unfinished[0]:
            error.add_note(f"also, the W&B runs could not be opened: {unfinished[0]}")
        try:
            logger.close(130 if stopped else 1)
        except Exception as e:
            error.add_note(f"also, the W&B runs could not be finished: {e}")
        raise
    logger.close(0)
    if logger.finish_errors:
        for k, why in logger.finish_errors.items():
            write_end(members[k].point, FAILED, 1, f"the W&B run could not be finished: {why}")
        raise LrscanError("; ".join(f"run {members[k].run_id}: the W&B run could not be finished: {why}"
                                    for k, why in logger.finish_errors.items()))
    return summaries


def _check_pack_fits(cfg, vocab_size: int, n_members: int) -> None:
    # every member's parameters and gradients, float32: a pack that cannot fit fails before any run exists
    n_params = sum(math.prod(s) for s in param_shapes(vocab_size, cfg.block_size, cfg.n_embd, cfg.n_hidden).values())
    need = 2 * 4 * n_params * n_members
    have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if need > have:
        raise LrscanError(f"a pack of {n_members} with n_embd={cfg.n_embd}, n_hidden={cfg.n_hidden}: "
                          f"{need / 2**30:.3g} GiB of parameters and gradients, more than this machine's memory "
                          f"({have / 2**30:.3g} GiB); use a smaller --pack")


def _train(members: list[Member], splits, device: torch.device) -> dict[str, dict]:
    # init the stack: row k is member k's flat parameters, exactly as its single run would hold them
    vocab_size = len(splits.vocab)
    cfg0 = members[0].cfg
    active = list(members)
    try:
        stack = StackedMLP.stack_rows([m.initial_weights(vocab_size, device) for m in active], vocab_size,
                                      cfg0.block_size, cfg0.n_embd, cfg0.n_hidden)
    except RuntimeError as e:  # typically an allocation that cannot succeed
        raise LrscanError(f"cannot build the pack's {len(active)} models (n_embd={cfg0.n_embd}, "
                          f"n_hidden={cfg0.n_hidden}): {str(e).splitlines()[0]}") from None
    step_fn = StackedSGDStep(stack)
    Xtr, Ytr = (t.to(device) for t in splits.train)
    lrs = [torch.tensor(m.lrs, device=device) for m in active]  # (steps,) per member, float64
    print(f"pack of {len(active)} run(s): {cfg0.schedule} schedule, {cfg0.steps} steps, "
          f"{stack.flat.shape[1]} parameters each, {splits.n_words[0]}/{splits.n_words[1]}/{splits.n_words[2]} words "
          f"train/dev/test, device {device}", flush=True)
    summaries: dict[str, dict] = {}

    stop = {"signal": None}

    def on_signal(signum, frame):
        stop["signal"] = signum

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    bar = _progress_bar(cfg0.steps, min(m.step for m in active), cfg0.progress_every_steps)
    final_rows: dict[int, torch.Tensor] = {}  # the weights of members that stopped inside the last chunk
    try:
        while True:
            # the members that are done leave the pack: each ends its run with its summary, the rest go on
            # (before the first chunk too: a checkpoint can be at a run's last step)
            leaving = [k for k, m in enumerate(active) if m.done]
            models = {k: stack.member_of(final_rows.get(k, stack.flat[k])) for k in leaving}
            for k, summary in _summaries({k: active[k] for k in leaving}, models, splits, device).items():
                m = active[k]
                summaries[m.run_id] = _end(m, summary, models[k], tuple(splits.vocab.itos))
            if stop["signal"] is not None:
                raise PackStopRequested([m.run_id for m in active if not m.done], stop["signal"])
            if leaving:
                rows = [k for k in range(len(active)) if k not in leaving]
                active, lrs = [active[k] for k in rows], [lrs[k] for k in rows]
                if not active:
                    break
                stack = stack.keep(rows)
                step_fn = StackedSGDStep(stack)

            # one chunk: as long as the shortest of the members' own chunks, so every member's eval
            # and checkpoint steps fall on a chunk's end
            n = min(m.chunk_end() - m.step for m in active)
            K = len(active)
            t0 = time.perf_counter()
            ix = torch.stack([batch_indices(m.cfg.seed, m.step, n, Xtr.shape[0], m.cfg.batch_size) for m in active],
                             1).to(device)                                # (n, K, B)
            Xc, Yc = Xtr[ix], Ytr[ix]                                     # (n, K, B, block_size), (n, K, B)
            Xc = Xc.view(n, K, -1)                                        # (n, K, B * block_size)
            alphas = step_fn.alphas(torch.stack([lr[m.step:m.step + n] for lr, m in zip(lrs, active)], 1),
                                    cfg0.batch_size)                      # (n, K)
            batches = list(zip(Xc.unbind(0), Yc.unbind(0), alphas.unbind(0)))
            chunk_start = stack.flat.clone() if any(m.can_stop for m in active) else None
            nll = torch.stack([step_fn(*batch) for batch in batches]).cpu().numpy()  # (n, K, B)
            loss = batch_mean(nll).astype(np.float64)                    # (n, K): each member's minibatch loss
            chunk_s = time.perf_counter() - t0

            # each member's stops on its own losses; the stopped ones are replayed to their stop step
            kept = [m.scan(loss[:, k]) for k, m in enumerate(active)]
            stopped = {k: n_k for k, (n_k, _) in enumerate(kept) if n_k < n}
            final_rows = _replay(stack, chunk_start, batches, stopped) if stopped else {}
            for k, m in enumerate(active):
                n_k, smooth = kept[k]
                m.elapsed_s += chunk_s * n_k / n  # the pack's time for the steps this member kept
                extra = {}
                if m.cfg.eval_every_steps and (m.step + n_k) % m.cfg.eval_every_steps == 0 and m.stop_step is None:
                    extra[m.step + n_k - 1] = {keys.DEV_LOSS: stack.member(k).loss(*(t.to(device) for t in splits.dev))}
                m.log(n_k, loss[:, k], smooth, extra)
                m.step += n_k
            bar.update(min(m.step for m in active) - bar.n)

            # checkpoints, once the logger has the steps before them (a resumed run must find them there);
            # a member that stopped or finished is saved as it ends instead
            for k, m in enumerate(active):
                if not m.done and m.checkpoint_due(stop["signal"] is not None):
                    m.logger.flush()
                    m.save_checkpoint(stack.flat[k], finished=False)
    finally:
        bar.close()
        for s, handler in previous.items():
            signal.signal(s, handler)
    return summaries


def _progress_bar(total: int, initial: int, every_steps: int):
    # the slowest member's step; shown on a terminal only, like the single trainer's
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, disable=not sys.stderr.isatty(),
                miniters=every_steps, mininterval=0.2)


def _replay(stack: StackedMLP, chunk_start: torch.Tensor, batches: list,
            kept: dict[int, int]) -> dict[int, torch.Tensor]:
    """The weights of the members that stopped inside the chunk, at their stop steps: their rows rewound to
    the chunk's start and trained again on the same batches and lrs, alone in a small stack, up to the step
    each keeps. The members that go on are not touched."""
    rows = sorted(kept)
    sub = StackedMLP(stack.vocab_size, stack.block_size, stack.n_embd, stack.n_hidden,
                     chunk_start[rows].clone(), torch.zeros_like(chunk_start[rows]))
    sub_step = StackedSGDStep(sub)
    index = torch.tensor(rows, device=chunk_start.device)
    out: dict[int, torch.Tensor] = {}
    for j in range(max(kept.values())):
        X, Y, alpha = batches[j]
        sub_step(X[index], Y[index], alpha[index])
        for i, k in enumerate(rows):
            if kept[k] == j + 1:
                out[k] = sub.flat[i].clone()
    return out


def _summaries(leaving: dict[int, Member], models: dict, splits, device: torch.device) -> dict[int, dict]:
    """The summaries of the members leaving together, their final losses evaluated side by side.

    A summary's train loss is a pass over the whole training split (~0.5 s for the lecture's model on
    one core), and a pack's members usually end at the same step: one thread per member, up to the
    cores the members' own `num_threads` leave, each thread with the single run's thread count, so every
    loss is the number the member's single run gives."""
    if not leaving:
        return {}
    num_threads = next(iter(leaving.values())).cfg.num_threads
    # the cores this process may use (a Slurm allocation or taskset limits them), not the machine's
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = max(1, min(len(leaving), cores // max(1, num_threads)))

    def summarize(k: int) -> dict:
        torch.set_num_threads(num_threads)  # per thread: a new thread would take OpenMP's default
        return leaving[k].summarize(models[k], splits, device)

    if workers == 1:
        return {k: summarize(k) for k in leaving}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return dict(zip(leaving, pool.map(summarize, leaving)))


def _end(m: Member, summary: dict, model, vocab_itos: tuple[str, ...]) -> dict:
    """A member leaves the pack: its summary, its finished checkpoint, its run ended with exit code 0."""
    m.logger.summary(summary)
    m.save_checkpoint(model.flat, finished=True, summary=summary)
    m.logger_finish(0)
    write_end(m.point, FINISHED, 0)
    m.report(summary, model, vocab_itos)
    return summary


def _one_line(error: BaseException) -> str:
    return "; ".join([str(error) or type(error).__name__, *getattr(error, "__notes__", ())])
