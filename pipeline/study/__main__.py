"""`python -m pipeline.study`: the command line of the whole study (flags, environment, exit codes)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from lrscan.pipeline.config import DATA_ENV, cached_names_path, default_data_path
from lrscan.pipeline.errors import LrscanError, exit_with
from lrscan.pipeline.study.online import WandbAccess
from lrscan.pipeline.study.study import PROG, SIZES, YAMLS, Study
from lrscan.pipeline.train.data import NAMES_URL, find_names


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, as every lrscan entrypoint does
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="range test -> pick -> one search over (peak lr, decay) to the horizon -> "
                                       "report, resumable")
    p.add_argument("--size", default="demo", choices=sorted(SIZES),
                   help="demo (minutes on 2 cores), full (the seed's sizes) or smoke (seconds: does it run here?)")
    p.add_argument("--out", default=None, help="study folder (default runs/study-<size>)")
    p.add_argument("--workers", type=int, default=None, help="runs at once (default: usable cores)")
    p.add_argument("--pack", type=int, default=None, help="runs trained stacked in one process by the sweeps "
                   "(default: 16 on a CPU, 64 on a GPU; 1: one process per run)")
    p.add_argument("--data", default="", help=f"word list, one word per line (default ${DATA_ENV}, else "
                   "~/.cache/lrscan/names.txt, downloaded there on first use)")
    p.add_argument("--wandb_mode", "--wandb-mode", default="offline", choices=("offline", "online"),
                   help="offline (default) or online")
    p.add_argument("--project", default="", help="W&B project (online)")
    p.add_argument("--entity", default="", help="W&B entity (online; default: $WANDB_ENTITY, else your default entity)")
    p.add_argument("--range-yaml", "--range_yaml", default=str(YAMLS / "lr_range.yaml"),
                   help="the range-test sweep the study derives stage 1 from (default: lrscan's lr_range.yaml)")
    p.add_argument("--decay-yaml", "--decay_yaml", default=str(YAMLS / "decay_grid.yaml"),
                   help="the decay-grid sweep the study derives stage 3 from (default: lrscan's decay_grid.yaml)")
    p.add_argument("--decay-factors", "--decay_factors", default="0.1,0.01",
                   help="decayed lrs as factors of the picked lr, each in (0, 1): 0.1,0.01 (default; one option each) "
                        "or [[0.1, 0.01]] (one option, a factor per decay boundary)")
    p.add_argument("--n-boot", "--n_boot", type=int, default=1000, help="bootstrap resamples of the pick's CI")
    p.add_argument("--task", default="", help="your own model: path/to/file.py:make or package.module:make, "
                                              "make(seed, **task_args) -> pipeline.Task (default: the makemore MLP)")
    p.add_argument("--task_args", "--task-args", default="", help="keyword arguments of make, e.g. \"{'n_embd': 24}\"")
    p.add_argument("--lre_min", "--lre-min", type=float, default=None,
                   help="range test: first lr exponent, with --lre_max (default: the size's ranges, -3..0 in the demo)")
    p.add_argument("--lre_max", "--lre-max", type=float, default=None,
                   help="range test: last lr exponent, with --lre_min")
    p.add_argument("--prove-steps", "--prove_steps", type=int, default=None,
                   help="the search's budget: what a prove stage of candidates x seeds x this many steps plus the "
                        "decay grid cost (default: a third of the decay grid's steps)")
    p.add_argument("--prove-seeds", "--prove_seeds", default="3",
                   help="the search's paired seeds: a number (default 3: seeds 1, 2, 3) or the seeds themselves, "
                        "e.g. 1,2,3 or [7]")
    p.add_argument("--prove-lrs", "--prove_lrs", default="",
                   help="your own peak lrs to search beside the range test's suggestions, each trained exactly as "
                        "given, e.g. 0.003,0.01")
    p.add_argument("--no-prove", "--no_prove", action="store_true",
                   help="skip the search: the decay grid trains at the min-loss pick, unproven")
    p.add_argument("--zoom", action="store_true",
                   help="before proving, run the range report's zoom sweep (a narrower range test around the pick), "
                        "pick again on it and prove the zoomed candidates")
    p.add_argument("--extend", action="store_true",
                   help="when the range test's curve misses the loss minimum (lowest on its first lrs) or the turn "
                        "where the loss climbs, run it again two decades further on that side (at most twice) "
                        "before picking")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    out = Path(args.out or f"runs/study-{args.size}")
    # the CLI's edge: the environment is read here and nowhere below
    entity = args.entity or (os.environ.get("WANDB_ENTITY", "") if args.wandb_mode == "online" else "")
    access = WandbAccess.from_env(os.environ)
    try:
        if not args.task:  # the makemore MLP's word list, found before anything is launched; every run inherits it
            given = args.data or os.environ.get(DATA_ENV, "")
            if not given and Path(default_data_path()).is_file():  # a checkout's data/names.txt, or the cache's
                given = default_data_path()
            data = find_names(given, cached_names_path(os.environ), url=os.environ.get("LRSCAN_DATA_URL") or NAMES_URL)
            os.environ[DATA_ENV] = str(Path(data).resolve())
        elif args.data:
            os.environ[DATA_ENV] = str(Path(args.data).resolve())
    except LrscanError as e:
        exit_with(e, PROG)
    if args.wandb_mode == "online":
        os.environ["WANDB_MODE"] = "online"
        if args.project:
            os.environ["WANDB_PROJECT"] = args.project
        if args.entity:
            os.environ["WANDB_ENTITY"] = args.entity
    try:
        Study(size=args.size, out=out, workers=args.workers, wandb_mode=args.wandb_mode, project=args.project,
              entity=entity, range_yaml=Path(args.range_yaml), decay_yaml=Path(args.decay_yaml),
              n_boot=args.n_boot, decay_factors=args.decay_factors, access=access, task=args.task,
              task_args=args.task_args, lre_min=args.lre_min, lre_max=args.lre_max, pack=args.pack,
              prove=not args.no_prove, prove_steps=args.prove_steps, prove_seeds=args.prove_seeds,
              prove_lrs=args.prove_lrs, zoom=args.zoom, extend=args.extend).run()
    except LrscanError as e:
        exit_with(e, PROG)
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted; run the same command again to continue where it stopped", file=sys.stderr)
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
