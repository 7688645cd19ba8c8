"""`python -m pipeline.sweep`: the command line of the local sweep runner.

    python -m pipeline.sweep sweeps/lr_range.yaml                 # all points, as many at once as the machine takes
    python -m pipeline.sweep sweeps/lr_range.yaml --dry-run       # print the expanded commands, run nothing
    python -m pipeline.sweep sweeps/lr_range.yaml --workers 2     # two at a time
    python -m pipeline.sweep sweeps/lr_range.yaml --index 3       # only point 3 (a Slurm array task)
    python -m pipeline.sweep sweeps/lr_range.yaml --pack 1        # one process per point (no packs)
    python -m pipeline.sweep sweeps/lr_range.yaml --print-sbatch  # a Slurm job array script for this sweep
    python -m pipeline.sweep sweeps/lr_range.yaml --print-sbatch --partition gpu --gpus 1 --time 2:00:00 \
        --sbatch=--account=abc                                    # ... with the cluster's own #SBATCH lines
    python -m pipeline.sweep sweeps/lr_range.yaml --print-agent-sbatch ENTITY/PROJECT/ID --conda-env lrscan \
        --count 8 --time 4:00:00 --gpus 1                         # a `wandb agent` job (docs/clusters.md)

Points of lrscan's trainer that can share a process train stacked in packs of up to `--pack` (default:
16 on a CPU, 64 when the points train on a GPU), each still its own W&B run and manifest row
(`pipeline.sweep.packs`). With `--index`, the given points are packed among themselves.

The same YAML runs unchanged under `wandb sweep` + `wandb agent`. Bad flags or a bad YAML are one
line, `pipeline.sweep: error: ...`, exit 2, before anything is written. Exit 0 when every point
finished, 1 when some did not (the last lines say which, why, and where the manifest is), 128 + the
signal when stopped.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
from collections.abc import Sequence
from typing import NoReturn

from lrscan.pipeline.errors import LrscanError, exit_with
from lrscan.pipeline.sweep.agent_sbatch import SIGNAL_SECONDS, AgentJob, agent_sbatch_script, read_sweep_head
from lrscan.pipeline.sweep.command import args_json_path, build_command, check_sweep, run_id_for
from lrscan.pipeline.sweep.manifest import DEFAULT_OUT, MANIFEST, sweep_folder
from lrscan.pipeline.sweep.outcome import unfinished_message
from lrscan.pipeline.sweep.packs import PACK_MODULE, check_pack, default_pack, gpu_visible, pack_keys, pack_plan
from lrscan.pipeline.sweep.runner import PROG, default_workers, run_sweep
from lrscan.pipeline.sweep.slurm import SbatchOptions, asks_for_gpus, cpu_only_note, sbatch_script
from lrscan.pipeline.sweep.spec import Sweep, is_trainer, load_sweep


class _Parser(argparse.ArgumentParser):
    """argparse with lrscan's one-line errors: `pipeline.sweep: error: ...`, exit 2, no usage block."""

    def error(self, message: str) -> NoReturn:
        if message == "argument --sbatch: expected one argument":  # its value starts with a dash: argparse wants =
            message += " (an option as its value goes after an =: --sbatch=--mem=8G)"
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="Run a W&B sweep YAML locally (offline), on one or many machines.")
    p.add_argument("yaml", help="sweep file, e.g. sweeps/lr_range.yaml")
    p.add_argument("--workers", type=int, default=None, help="points run at once (default: usable cores)")
    p.add_argument("--dry-run", action="store_true", help="print the expanded commands and exit")
    p.add_argument("--count", type=int, default=None,
                   help="random: number of runs (default run_cap); grid: first N points (N >= 1); "
                        "with --print-agent-sbatch: runs per agent (wandb agent --count)")
    p.add_argument("--seed", type=int, default=0, help="random: seed of the draws")
    p.add_argument("--index", type=int, action="append", default=None,
                   help="run only this point (repeatable; several are packed together); Slurm: see --print-sbatch")
    p.add_argument("--pack", type=int, default=None,
                   help="train up to N compatible points stacked in one process (default: 16 on a CPU, 64 on a GPU; "
                        "1: one process per point)")
    p.add_argument("--out", default=DEFAULT_OUT,
                   help="root of sweep folders; share it between machines (default: runs)")
    p.add_argument("--lease-seconds", type=float, default=60.0,
                   help="a point whose worker is silent this long is taken over (at once if it died on this host)")
    p.add_argument("--term-timeout", type=float, default=30.0,
                   help="seconds a stopped program gets to save before SIGKILL")
    p.add_argument("--wandb-mode", choices=("offline", "online", "disabled"), default=None,
                   help="WANDB_MODE of the runs (default: $WANDB_MODE or offline)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--print-sbatch", action="store_true", help="print a Slurm job array script for this sweep and exit")
    p.add_argument("--array-tasks", type=int, default=0,
                   help="with --print-sbatch: K draining workers instead of one task per point")
    slurm = p.add_argument_group("Slurm scripts (--print-sbatch, --print-agent-sbatch)")
    slurm.add_argument("--partition", default="", help="#SBATCH --partition")
    slurm.add_argument("--gpus", default="", help="#SBATCH --gpus: a count, or type:count (a100:2)")
    slurm.add_argument("--time", default="", help="#SBATCH --time, e.g. 4:00:00 or 1-12")
    slurm.add_argument("--sbatch", action="append", default=[], metavar="OPTION",
                       help="any other #SBATCH line, as on sbatch's command line (repeatable): "
                            "--sbatch=--account=abc --sbatch=--mem=8G")
    slurm.add_argument("--print-agent-sbatch", metavar="SWEEP_ID", default=None,
                       help="print a Slurm batch script running `wandb agent SWEEP_ID` (ENTITY/PROJECT/ID) for the "
                            "W&B sweep made from this YAML, and exit")
    slurm.add_argument("--conda-env", default=None,
                       help="with --print-agent-sbatch: the conda environment the job activates (default: the "
                            "active one; outside conda, this Python's environment goes first on PATH)")
    slurm.add_argument("--workdir", default=None,
                       help="with --print-agent-sbatch: the job's working folder, shared by the nodes: runs and "
                            "checkpoints land there (default: the current folder)")
    slurm.add_argument("--signal-seconds", type=int, default=SIGNAL_SECONDS,
                       help="with --print-agent-sbatch: Slurm's SIGUSR1 comes this long before the time limit "
                            f"(default {SIGNAL_SECONDS})")
    slurm.add_argument("--no-requeue", action="store_true",
                       help="with --print-agent-sbatch: after a preemption notice, end the job, do not requeue it")
    return p


def _sbatch_options(args: argparse.Namespace) -> SbatchOptions:
    return SbatchOptions(partition=args.partition, gpus=args.gpus, time=args.time, extra=tuple(args.sbatch))


def _print_agent_sbatch(args: argparse.Namespace) -> None:
    # the CLI's edge: the active conda environment, this Python's environment, the current folder
    conda_env = args.conda_env if args.conda_env is not None else os.environ.get("CONDA_DEFAULT_ENV", "")
    job = AgentJob(sweep_id=args.print_agent_sbatch, workdir=os.path.abspath(args.workdir or os.getcwd()),
                   count=args.count, conda_env=conda_env,
                   bin_dir="" if conda_env else os.path.dirname(os.path.abspath(sys.executable)),
                   signal_seconds=args.signal_seconds, requeue=not args.no_requeue, options=_sbatch_options(args))
    head = read_sweep_head(args.yaml)
    print(agent_sbatch_script(head, job), end="")
    note = cpu_only_note(args.yaml, set(head.devices)) if asks_for_gpus(job.options) and head.runs_trainer else ""
    if note:
        print(f"{PROG}: {note} (and make the W&B sweep again from it)", file=sys.stderr)


def _check_flags(args: argparse.Namespace) -> None:
    """What argparse's types cannot say: ranges, finiteness."""
    if args.workers is not None and args.workers < 1:
        raise LrscanError(f"--workers {args.workers}: need at least 1")
    check_pack(args.pack)
    if args.count is not None and args.count < 1:
        raise LrscanError(f"--count {args.count}: need at least 1 "
                          "(grid: run its first N points; random: draw N points)")
    if args.array_tasks < 0:
        raise LrscanError(f"--array-tasks {args.array_tasks}: must be >= 0 (0: one array task per point)")
    if not math.isfinite(args.lease_seconds) or args.lease_seconds <= 0:
        raise LrscanError(f"--lease-seconds {args.lease_seconds}: must be a finite number > 0")
    if not math.isfinite(args.term_timeout) or args.term_timeout < 0:
        raise LrscanError(f"--term-timeout {args.term_timeout}: must be a finite number >= 0")


def _print_dry_run(sweep: Sweep, out: str, pack: int, workers: int, indices: Sequence[int] | None) -> None:
    """Each point's command line, as it would run alone, in W&B's order, and the packs a fresh run would form;
    nothing is written."""
    folder = os.path.abspath(sweep_folder(out, sweep))
    print(f"# {sweep.key}: {len(sweep.points)} points, method {sweep.method}, folder {folder}")
    lines = []
    for index, point in enumerate(sweep.points):
        run_id = run_id_for(sweep.key, index)
        argv, _ = build_command(sweep.command, sweep.program, point, args_json_path(folder, sweep.key, run_id))
        lines.append(f"[{index}] {run_id}: {shlex.join(argv)}")
    if pack > 1:
        packing = pack_keys(sweep)
        keys, alone = packing.keys, packing.alone
        plan = pack_plan(keys, pack, indices, workers, packing.slots)
        packs, single = [p for p in plan if len(p) > 1], [p[0] for p in plan if len(p) == 1]
        lines.append(f"# packs of up to {pack} ({workers} workers), each one `python -m {PACK_MODULE}` process: "
                     + (" ".join("[" + ",".join(map(str, p)) + "]" for p in packs) or "none")
                     + (f"; one process each: {', '.join(map(str, single))}" if single else ""))
        for why in dict.fromkeys(alone.values()):
            lines.append(f"# one process per point for {sum(w == why for w in alone.values())} point(s): {why}")
    try:
        print("\n".join(lines), flush=True)
    except BrokenPipeError:  # `| head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        if args.print_agent_sbatch is not None:
            _print_agent_sbatch(args)  # the W&B server expands the sweep: any method, --count is the agent's
            return
        _check_flags(args)
        sweep = load_sweep(args.yaml, count=args.count, seed=args.seed)
        # the CLI's edge: the machine is looked at here (a GPU for the points' device decides the pack size)
        pack = args.pack if args.pack is not None else default_pack(sweep, gpu_visible())
        if args.print_sbatch:
            check_sweep(sweep, os.environ)
            options = _sbatch_options(args)
            print(sbatch_script(sweep, args.out, args.array_tasks, args.lease_seconds, pack, options), end="")
            devices = {str(p.get("device", "cpu")) for p in sweep.points}
            note = cpu_only_note(args.yaml, devices) if asks_for_gpus(options) and is_trainer(sweep) else ""
            if note:
                print(f"{PROG}: {note}", file=sys.stderr)
            return
        if args.dry_run:
            check_sweep(sweep, os.environ)
            _print_dry_run(sweep, args.out, pack, args.workers or default_workers(), args.index)
            return
        code = run_sweep(sweep, args.out, workers=args.workers, lease_seconds=args.lease_seconds,
                         wandb_mode=args.wandb_mode, indices=args.index, term_timeout_seconds=args.term_timeout,
                         progress=not args.no_progress, pack=pack)
    except LrscanError as e:
        exit_with(e, PROG)
    folder = sweep_folder(args.out, sweep)
    if code == 1:
        print(f"{PROG}: {sweep.key}: {unfinished_message(args.out, sweep, args.index)}", file=sys.stderr)
    print(f"{PROG}: {sweep.key}: manifest {os.path.join(folder, MANIFEST)}", file=sys.stderr)
    raise SystemExit(code)


if __name__ == "__main__":
    main()
