"""`python -m analysis SOURCE`: load runs, pick the exponent, summarise the decay grid, write a report.

    python -m analysis wandb --group lr_range-1a2b3c --out reports/range
    python -m analysis entity/project --sweep abc123 --log-to-wandb --wandb-mode online
    python -m analysis my_runs/wandb --loss-key train/loss --lr-key lr-AdamW    # runs of your own code

Bad input (a missing source, no runs, a bad flag, too few points, an --out it may not replace or
cannot write in) ends with one line `analysis: error: ...` and exit code 2, and writes nothing.
--out is replaced only when it is a report this command wrote, with nothing added to it.
"""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from lrscan.pipeline.errors import LrscanError, exit_with
from lrscan.pipeline.runlog import map_big_arrays_alone

PROG = "lrscan analyze"  # how errors start: the command that runs it, installed
DEFAULT_SOURCE = "./wandb"
DEFAULT_ZOOM_BASE = Path("sweeps") / "lr_range.yaml"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, as every lrscan entrypoint does
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _int_at_least(minimum: int):
    """An argparse type: a whole number >= minimum, with argparse's one-line error otherwise."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


_positive_int = _int_at_least(1)
_non_negative_int = _int_at_least(0)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="Analyse W&B runs (lrscan's or your own code's): pick the lr exponent, "
                                       "summarise decay grids, write a report.")
    p.add_argument("source", nargs="?", default=DEFAULT_SOURCE,
                   help=f"offline runs folder, run folder or .wandb file, or entity/project[/sweep] "
                        f"(default {DEFAULT_SOURCE})")
    p.add_argument("--out", help="report folder: new, empty, or an earlier report of this command, replaced whole "
                                 "(default reports/<group or sweep>-<UTC time>)")
    p.add_argument("--group", help="only runs of this wandb group (a local sweep's key)")
    p.add_argument("--sweep", help="only runs of this sweep (id or group key)")
    p.add_argument("--tags", default="", help="only runs with all these tags, comma-separated")
    p.add_argument("--state", help="only runs in these states, comma-separated, e.g. finished,crashed (default: "
                                   "every run, those still running named and left out of the pick; a state list "
                                   "with 'running' puts them in the pick)")
    p.add_argument("--job-type", help="only runs of this job type; '!TYPE' for all but TYPE; 'all' for every run "
                                      "(default: every run but lrscan's analysis runs)")
    p.add_argument("--loss-key", help="the logged key of the training loss (default: lrscan's loss, else the first "
                                      "of train/loss, train_loss, training_loss, loss_step the run logged)")
    p.add_argument("--lr-key", help="the logged key of the learning rate (default: lrscan's lr, else the first of "
                                    "learning_rate, train/learning_rate, lr-<Optimizer> the run logged)")
    p.add_argument("--block-steps", type=_positive_int, default=1000,
                   help="steps per block of the block means (default 1000)")
    p.add_argument("--bin-width", type=_positive_float, help="width of the lre bins in decades (default: 50 bins)")
    p.add_argument("--n-bins", type=_positive_int, help="number of lre bins (default 50)")
    p.add_argument("--n-boot", type=_non_negative_int, default=1000,
                   help="bootstrap resamples of the seeds for the CI (default 1000; 0: no CI)")
    p.add_argument("--seed", type=_non_negative_int, default=0, help="seed of the bootstrap (default 0)")
    p.add_argument("--zoom-base",
                   help=f"sweep YAML the zoom sweep copies (default {DEFAULT_ZOOM_BASE} when it exists)")
    p.add_argument("--no-prove", action="store_true",
                   help="judge no lr grid (constant-lr runs equal in every hyperparameter but lr and seed)")
    p.add_argument("--held-out-key", help="the held-out loss that judges lr grids; every run must have logged it "
                                          "(default: the first of dev_loss, val_loss, val/loss, eval/loss, ... every "
                                          "run logged, else the mean training loss of each run's last 10%% of steps)")
    p.add_argument("--log-to-wandb", action="store_true",
                   help="also log the report as a wandb run with job_type=analysis")
    p.add_argument("--wandb-mode", default="offline", choices=("offline", "online"),
                   help="mode of that run (default offline)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # a process-wide allocator setting, so here at the entry point: an array freed returns its memory at
    # once, and the runs read and the frame built from them are never held both (pipeline.runlog.parallel)
    map_big_arrays_alone()
    if args.bin_width is not None and args.n_bins is not None:
        build_parser().error("give --bin-width or --n-bins, not both")
    try:
        try:
            from lrscan.analysis.sources import load_runs
        except ImportError as err:  # the loader is a separate module; say so rather than trace back
            raise LrscanError(f"the run loader analysis.sources is not available: {err}") from None
        from lrscan.analysis.report import check_out_dir, default_out_dir, summary_lines, write_report
        from lrscan.analysis.sources.filters import ALL_BUT_ANALYSIS

        tags = tuple(t.strip() for t in args.tags.split(",") if t.strip())
        if args.job_type is None:
            job_type = ALL_BUT_ANALYSIS  # most W&B users never set a job type
        elif args.job_type == "all":
            job_type = None
        else:
            job_type = args.job_type
        states = tuple(t.strip() for t in args.state.split(",") if t.strip()) if args.state else None
        out = Path(args.out) if args.out else default_out_dir(name=args.group or args.sweep)
        check_out_dir(out)  # before the analysis: a bad --out costs a second, not the whole run
        _import_plotting_meanwhile()
        loaded = load_runs(args.source, group=args.group, sweep=args.sweep, tags=tags, state=states, job_type=job_type,
                           loss_key=args.loss_key, lr_key=args.lr_key)
        zoom_base = args.zoom_base or (DEFAULT_ZOOM_BASE if DEFAULT_ZOOM_BASE.is_file() else None)
        report = write_report(
            out, loaded, block_steps=args.block_steps, bin_width=args.bin_width, n_bins=args.n_bins,
            n_boot=args.n_boot, seed=args.seed, zoom_base=zoom_base, source=args.source,
            filters={"group": args.group, "sweep": args.sweep, "tags": list(tags), "state": args.state,
                     "job_type": job_type},
            log_to_wandb=args.log_to_wandb, wandb_mode=args.wandb_mode,
            include_running=states is not None and "running" in states,
            prove=not args.no_prove, held_out_key=args.held_out_key,
        )
    except LrscanError as err:
        exit_with(err, PROG)
    print("\n".join(summary_lines(report)))
    return 0


def _import_plotting_meanwhile() -> None:
    """Import matplotlib (Agg: a report is files only) and seaborn in a daemon thread, while the runs are read.

    The report needs them, and they take ~1.5 s (seaborn imports scipy.stats) that would otherwise
    come after the pick; the reading is done by worker processes, during which this process only
    waits. Started once this process' own imports are done, so the two threads never import one
    module's dependencies in opposite orders. A failure is left to the report's own import to say.
    """

    def load() -> None:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import lrscan.analysis.plots  # noqa: F401
        except Exception:  # the report imports it again, and says what is wrong
            pass

    threading.Thread(target=load, name="import-plotting", daemon=True).start()


if __name__ == "__main__":
    raise SystemExit(main())
