"""Train a pack: K sweep points of the makemore MLP stacked in one process, each its own W&B run (a user
task's points: pipeline/pack/functional.py, through torch.func).

    train_pack([Point.parse("lr_range-0000", ["--seed=1", "--lre_min=-3"]), ...])

The single trainer's loop (pipeline/train/loop.py, `train_members`) for K members at once, with the
stacked MLP as its stepper (pipeline/pack/stacked_mlp.py, `StackedRun`): each member draws its own
batches from (its seed, block) with `batch_indices`, so its batches and losses do not depend on its
packmates; the K steps run as one batched step. Every member applies its own stop rules to its own
losses, logs its own rows to its own run, evaluates and checkpoints on its own steps; a member that
stops inside a chunk is replayed up to its stop step, leaves the pack and ends its run with its
summary; the others go on. SIGTERM or Ctrl-C checkpoint every member still training, end their runs
as the single trainer does, and exit 130. Here: the pack's set-up, and its runs opened and ended.

Unlike a single run, whose config may come back changed from a sweep's wandb.init, a pack takes its
members' configs from their arguments, so the K runs open in the logging process while the first
chunk trains (seconds saved per pack); the first use of a run waits for them, bounded.
"""

from __future__ import annotations

import torch

from lrscan.pipeline.errors import LrscanError
from lrscan.pipeline.pack.members import PackMember, Point, resume_members
from lrscan.pipeline.pack.runs import run_members
from lrscan.pipeline.pack.stacked_mlp import StackedMLP, StackedRun
from lrscan.pipeline.packing import key_difference
from lrscan.pipeline.train import checkpoint
from lrscan.pipeline.train.data import load_splits, sha256_of
from lrscan.pipeline.train.loop import StopRequested, resolve_device, train_members
from lrscan.pipeline.train.makemore import check_model_fits
from lrscan.pipeline.train.model import MLP

TRAINER_PROGRAM = "-m lrscan.pipeline.train"  # what W&B records as each member's command: the run it stands for


# SIGTERM or Ctrl-C reached a pack: the one loop's stop (every member still training has a checkpoint and an
# ended run), under the name the pack's callers know
PackStopRequested = StopRequested


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


def train_pack(points: list[Point], *, program: str = TRAINER_PROGRAM, fork_logger: bool = False) -> dict[str, dict]:
    """Train every point of the pack to its end; returns each run's summary by run id.

    program: what W&B records as each member's program (its arguments are the point's own).
    fork_logger: the makemore pack's logging process is forked from this process (a pack forked from
    pipeline.pack.launcher's server, wandb imported, no thread yet), not started as a fresh interpreter.
    """
    check_pack(points)
    cfg0 = points[0].cfg
    if cfg0.task:
        # a task of the user's own: K copies of its model stepped with torch.func, when it allows that
        from lrscan.pipeline.pack.functional import train_task_pack

        return train_task_pack(points, program=program)
    # system inits
    torch.set_num_threads(cfg0.num_threads)
    device = resolve_device(cfg0.device)
    splits = load_splits(cfg0.data, cfg0.block_size, cfg0.split_seed)
    check_model_fits(cfg0, len(splits.vocab), len(points))
    checkpoint.make_dir(cfg0.ckpt_dir)

    # resume: a member with a checkpoint continues from it; a finished one is done already
    members, summaries = resume_members(points, data_sha256=sha256_of(cfg0.data), vocab=tuple(splits.vocab.itos))
    if not members:
        return summaries
    summaries.update(run_members(members, program, lambda ms: _train(ms, splits, device), fork_logger=fork_logger))
    return summaries


def _initial_weights(member: PackMember, vocab_size: int, device: torch.device) -> torch.Tensor:
    # the member's flat parameters to start from: its init, or its checkpoint's weights
    cfg = member.cfg
    model = MLP.create(vocab_size, cfg.block_size, cfg.n_embd, cfg.n_hidden, seed=cfg.seed, init=cfg.init,
                       device=device)
    if member.state is not None:
        model.flat.copy_(member.state["flat"].to(device))
    return model.flat


def _train(members: list[PackMember], splits, device: torch.device) -> dict[str, dict]:
    # init the stack: row k is member k's flat parameters, exactly as its single run would hold them
    vocab_size = len(splits.vocab)
    cfg0 = members[0].cfg
    try:
        stack = StackedMLP.stack_rows([_initial_weights(m, vocab_size, device) for m in members], vocab_size,
                                      cfg0.block_size, cfg0.n_embd, cfg0.n_hidden)
    except RuntimeError as e:  # typically an allocation that cannot succeed
        raise LrscanError(f"cannot build the pack's {len(members)} models (n_embd={cfg0.n_embd}, "
                          f"n_hidden={cfg0.n_hidden}): {str(e).splitlines()[0]}") from None
    print(f"pack of {len(members)} run(s): {cfg0.schedule} schedule, {cfg0.steps} steps, "
          f"{stack.flat.shape[1]} parameters each, {splits.n_words[0]}/{splits.n_words[1]}/{splits.n_words[2]} words "
          f"train/dev/test, device {device}", flush=True)
    return train_members(members, StackedRun(stack, [m.cfg for m in members], splits, device))
