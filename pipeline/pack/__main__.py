"""`python -m pipeline.pack`: the command line of a pack (points in, exit code out), what the sweep runner launches.

    python -m pipeline.pack POINTS.json
    python -m pipeline.pack --run_id=a --seed=1 --lre_min=-3 -- --run_id=b --seed=2 --lre_min=-2

POINTS.json is a list of points, or {"points": [...]}; a point is {"run_id": ..., "args": [...]} with
the arguments `python -m pipeline.train` would get for it (`--key=value`), and optionally "end_file":
where to write one JSON line saying how its run ended ({"run_id", "state", "exit_code", "reason"}).
On the command line, `--` separates the points and each gives its `--run_id`.

Running the same command again continues every member that did not finish from its checkpoint.
`python -m pipeline.pack --why-not-packed --task=... [trainer flags]` prints why points of that task
cannot share a pack (an empty line when they can), then the seconds one member's step takes alone:
the sweep runner asks this way.
Exit codes: 0 every run finished; 1 a run failed; 2 bad input (one line, nothing started);
130 stopped by SIGTERM or Ctrl-C (every member still training has a checkpoint).
"""

from __future__ import annotations

import json
import os
import sys

from lrscan.pipeline.config import parse_args
from lrscan.pipeline.errors import LrscanError, exit_with
from lrscan.pipeline.pack.loop import TRAINER_PROGRAM, PackStopRequested, train_pack
from lrscan.pipeline.pack.members import Point
from lrscan.pipeline.packing import WHY_NOT_FLAG

PROG = "pipeline.pack"


def read_points(argv: list[str]) -> list[Point]:
    """The pack's points from a POINTS.json path or from `--`-separated argument lists."""
    if len(argv) == 1 and not argv[0].startswith("--"):
        path = argv[0]
        try:
            with open(path) as f:
                raw = json.load(f)
        except OSError as e:
            raise LrscanError(f"{path}: cannot read it ({e.strerror})") from None
        except json.JSONDecodeError as e:
            raise LrscanError(f"{path}: not JSON ({e})") from None
        if isinstance(raw, dict):
            raw = raw.get("points")
        if not isinstance(raw, list) or not raw:
            raise LrscanError(f"{path}: expected a non-empty list of points, or {{\"points\": [...]}}")
        points = []
        for i, p in enumerate(raw):
            if not (isinstance(p, dict) and isinstance(p.get("args", []), list)
                    and all(isinstance(a, str) for a in p.get("args", []))):
                raise LrscanError(f"{path}: point {i} must be {{\"run_id\": ..., \"args\": [\"--key=value\", ...]}}")
            points.append(Point.parse(str(p.get("run_id", "")), list(p.get("args", [])), str(p.get("end_file", ""))))
        return points
    groups: list[list[str]] = [[]]
    for arg in argv:
        if arg == "--":
            groups.append([])
        else:
            groups[-1].append(arg)
    groups = [g for g in groups if g]
    if not groups:
        raise LrscanError("no points: give POINTS.json, or each point's arguments separated by --")
    return [Point.parse("", g) for g in groups]


def main(argv: list[str] | None = None, *, fork_logger: bool = False) -> None:
    """The command; `fork_logger`: set by pipeline.pack.launcher's forked children (see train_pack)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return
    if argv and argv[0] == WHY_NOT_FLAG:
        # the sweep runner's question, asked as a process (it never imports this room): can points of
        # this task share a pack? One line: empty when they can, else why not; then a step's seconds
        try:
            from lrscan.pipeline.pack.functional import why_not_packed_task  # torch.func: ~0.5 s a makemore pack skips

            why, seconds = why_not_packed_task(parse_args(argv[1:]))
            print(f"{why}\n{seconds!r}")
        except LrscanError as e:
            exit_with(e, PROG)
        return
    try:
        points = read_points(argv)
        # the command line's edge: what W&B records as each member's program (its args are the point's)
        train_pack(points, program=os.environ.get("WANDB_PROGRAM") or TRAINER_PROGRAM, fork_logger=fork_logger)
    except PackStopRequested as e:
        print(f"{PROG}: stopped ({e}); checkpoints saved, run the same command to continue", file=sys.stderr)
        raise SystemExit(130) from None
    except LrscanError as e:
        exit_with(LrscanError("; ".join([str(e), *getattr(e, "__notes__", ())])), PROG)


if __name__ == "__main__":
    main()
