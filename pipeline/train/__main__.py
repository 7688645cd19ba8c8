"""`lrscan train` (`python -m lrscan.pipeline.train`): the command line's edge of one training run (flags, environment,
exit codes)."""

from __future__ import annotations

import os
import sys

from lrscan.pipeline.config import TrainConfig, help_text, parse_args
from lrscan.pipeline.errors import LrscanError, exit_with
from lrscan.pipeline.keys import TRAINER_MODULE, TRAINER_MODULES, TRAINER_PROGRAM
from lrscan.pipeline.train.tracking import Launch, SpawnedLogger, spawn_run_logger, this_process_launch

# what `wandb agent` (and wandb's own config injection) set: wandb.init then hands the run a config to wait for
WANDB_CONFIG_VARIABLES = ("WANDB_SWEEP_ID", "WANDB_SWEEP_PARAM_PATH", "WANDB_CONFIG_PATHS")
PROG = "lrscan train"  # how errors and notices start: the command that runs it, installed


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(help_text())
        return
    # the command line's edge: the one place that reads the environment (wandb agent and
    # pipeline.sweep name the run and ask for a resume there) and this process's own launch
    program = os.environ.get("WANDB_PROGRAM") or this_process_launch().program
    # a checkout's older names (`-m pipeline.train`; a sweep YAML's program pipeline/train/__main__.py) are recorded
    # as the command that runs wherever lrscan is installed, as a pack records its members
    if program in (f"-m {m}" for m in TRAINER_MODULES) or program == TRAINER_PROGRAM:
        program = f"-m {TRAINER_MODULE}"
    launch = Launch(program=program, args=tuple(argv))
    try:
        cfg = parse_args(argv)
    except LrscanError as e:
        exit_with(LrscanError(_one_line(e)), PROG)
    # the run's logging process starts now: its interpreter imports wandb while this one imports torch
    spawned = spawn_run_logger() if cfg.wandb_mode != "disabled" else None
    try:
        _train(cfg, launch, spawned)
    finally:
        if spawned is not None:
            spawned.close()  # a run that ended before it took its logging process (bad data, a finished run)


def _train(cfg: TrainConfig, launch: Launch, spawned: SpawnedLogger | None) -> None:
    # torch (seconds) only once the flags are good: a mistyped flag is answered at once
    from lrscan.pipeline.train.loop import StopRequested, train

    try:
        train(cfg, env_run_id=os.environ.get("WANDB_RUN_ID", ""),
              env_resume=os.environ.get("WANDB_RESUME", ""), launch=launch,
              config_from_wandb=any(os.environ.get(k) for k in WANDB_CONFIG_VARIABLES), spawned_logger=spawned)
    except LrscanError as e:
        exit_with(LrscanError(_one_line(e)), PROG)
    except StopRequested as e:
        if e.preempted:
            print(f"{PROG}: preempted ({_one_line(e)}); checkpoint saved, the W&B run marked preempting "
                  f"(a W&B sweep requeues it); resume with --resume --run_id={e.run_id}", file=sys.stderr)
        else:
            print(f"{PROG}: stopped ({_one_line(e)}); checkpoint saved, resume with --resume "
                  f"--run_id={e.run_id}", file=sys.stderr)
        raise SystemExit(e.exit_code) from None


def _one_line(error: BaseException) -> str:
    # an error and what was added to it (a run that could not be finished either), one line
    return "; ".join([str(error), *getattr(error, "__notes__", ())])



if __name__ == "__main__":
    main()
