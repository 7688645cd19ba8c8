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
from lrscan.pipeline.train.member import Member, init_args
from lrscan.pipeline.train.resume import checked_state, say_resume
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
    single trainer checks a resume (pipeline/train/resume.py); None for a new run."""
    path = checkpoint.ckpt_path(point.cfg.ckpt_dir, point.run_id)
    if not path.exists():
        return None
    return checked_state(checkpoint.load(path), path, point.cfg, task=task, data_sha256=data_sha256, vocab=vocab)


def resume_members(points: list[Point], *, data_sha256: str = "", vocab: tuple[str, ...] = (),
                   task: bool = False) -> tuple[list[PackMember], dict[str, dict]]:
    """The points' members, each from its checkpoint where it has one; the summaries of those finished already
    (nothing to train: their end files say so). Checked as `load_resume_state` says."""
    members: list[PackMember] = []
    finished: dict[str, dict] = {}
    for point in points:
        state = load_resume_state(point, data_sha256=data_sha256, vocab=vocab, task=task)
        if state is not None:
            say_resume(point.run_id, state, checkpoint.ckpt_path(point.cfg.ckpt_dir, point.run_id))
            if state["finished"]:
                finished[point.run_id] = state.get("summary", {})
                write_end(point, FINISHED, 0)
                continue
        members.append(PackMember(point, state, data_sha256, vocab))
    return members, finished


class PackMember(Member):
    """A point trained in a pack: a member of the one loop (pipeline/train/member.py) whose run opens with its
    packmates' in the pack's logging process, and whose end is said in its point's end file."""

    def __init__(self, point: Point, state: dict | None, data_sha256: str = "", vocab: tuple[str, ...] = ()):
        super().__init__(point.cfg, state, data_sha256, vocab)
        self.point = point

    def init_args(self, launch: Launch) -> InitArgs:
        # resume: a pack continues a member whose run exists, as a sweep retry does
        return init_args(self.cfg, resume=True, resume_step=self.step, launch=launch)

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
