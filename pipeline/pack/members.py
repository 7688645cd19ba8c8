"""One member of a pack: its point, its resume, its W&B run opened with its packmates', the end file it writes.

A member is a sweep point trained inside a pack. What makes it a run of its own (its schedule, stops,
history rows, checkpoint and summary) is the single run's, pipeline/train/member.py: the one loop
(pipeline/train/loop.py) trains a single run and a pack's members alike. Here: what a pack adds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from lrscan.pipeline.config import TrainConfig, parse_args
from lrscan.pipeline.errors import LrscanError
from lrscan.pipeline.fsutil import atomic_write_text
from lrscan.pipeline.train import checkpoint
from lrscan.pipeline.train.loop import compatible, same_data
from lrscan.pipeline.train.member import Member
from lrscan.pipeline.train.tracking import InitArgs, Launch, RunInfo

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


def resume_members(points: list[Point], *, data_sha256: str = "", vocab: tuple[str, ...] = (),
                   task: bool = False) -> tuple[list[PackMember], dict[str, dict]]:
    """The points' members, each from its checkpoint where it has one; the summaries of those finished already
    (nothing to train: their end files say so). Checked as `load_resume_state` says."""
    members: list[PackMember] = []
    finished: dict[str, dict] = {}
    for point in points:
        state = load_resume_state(point, data_sha256=data_sha256, vocab=vocab, task=task)
        if state is not None and state["finished"]:
            print(f"run {point.run_id} already finished at step {state['step'] - 1}; nothing to do")
            finished[point.run_id] = state.get("summary", {})
            write_end(point, FINISHED, 0)
            continue
        members.append(PackMember(point, state, data_sha256, vocab))
        if state is not None:
            print(f"resuming run {point.run_id} at step {state['step']} from {members[-1].ckpt_file}")
    return members, finished


class PackMember(Member):
    """A point trained in a pack: a member of the one loop (pipeline/train/member.py) whose run opens with its
    packmates' in the pack's logging process, and whose end is said in its point's end file."""

    def __init__(self, point: Point, state: dict | None, data_sha256: str = "", vocab: tuple[str, ...] = ()):
        super().__init__(point.cfg, state, data_sha256, vocab)
        self.point = point

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
                              f"config from its arguments only (run it alone with lrscan train)")
        self.use(logger, info.logged_through_step)

    def end(self, summary: dict, weights: dict) -> None:
        super().end(summary, weights)
        write_end(self.point, FINISHED, 0)
