"""A run's resume, written once for a single run and a pack's member: its checkpoint checked, what is said.

A checkpoint continues a run only with the same config (all but the operational fields), the same kind of
model (the makemore MLP or a task) and, for the MLP, the same word list; anything else is one line naming
what differs. Without a run id, only the one unfinished checkpoint that fits may be continued.
"""

from __future__ import annotations

from pathlib import Path

from lrscan.pipeline.config import OPERATIONAL, TrainConfig, fields_of_kind
from lrscan.pipeline.errors import LrscanError
from lrscan.pipeline.train import checkpoint

LISTED_CHECKPOINTS = 8  # an error about the checkpoints in a folder names this many, then counts the rest


def checked_state(state: dict, path: Path, cfg: TrainConfig, *, task: bool, data_sha256: str = "",
                  vocab: tuple[str, ...] = ()) -> dict:
    """`state`, the checkpoint at `path`, when `cfg` may continue it: else an LrscanError naming what differs.
    task: this run trains a task of the user's own (its data is the task's); else the makemore MLP on
    `data_sha256`'s words."""
    run_id = state.get("run_id", path.stem)
    if ("flat" in state) == task:
        of, trains = ("the makemore MLP", "a task") if task else ("a task", "the makemore MLP")
        raise LrscanError(f"cannot resume run {run_id}: its checkpoint {str(path)!r} is of {of}, this run trains "
                          f"{trains}")
    diff = compatible(state["config"], cfg)
    if diff:
        raise LrscanError(f"cannot resume run {run_id}: {', '.join(diff)} differ from its checkpoint {str(path)!r}")
    if not task and not same_data(state, data_sha256, vocab):
        raise LrscanError(f"cannot resume run {run_id}: {cfg.data!r} is not the word list it was trained on")
    return state


def say_resume(run_id: str, state: dict, path: Path) -> None:
    """What a resumed run says: that it is finished already (nothing to do), or where it continues from."""
    if state["finished"]:
        print(f"run {run_id} already finished at step {state['step'] - 1} ({path}); nothing to do")
    else:
        print(f"resuming run {run_id} at step {state['step']} from {path}")


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
