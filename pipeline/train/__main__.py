"""`python -m pipeline.train`: the command line's edge of one training run (flags, environment, exit codes)."""

from __future__ import annotations

import os
import sys

from lrscan.pipeline.config import help_text, parse_args
from lrscan.pipeline.errors import LrscanError, exit_with
from lrscan.pipeline.train.tracking import Launch, this_process_launch

# what `wandb agent` (and wandb's own config injection) set: wandb.init then hands the run a config to wait for
WANDB_CONFIG_VARIABLES = ("WANDB_SWEEP_ID", "WANDB_SWEEP_PARAM_PATH", "WANDB_CONFIG_PATHS")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(help_text())
        return
    # the command line's edge: the one place that reads the environment (wandb agent and
    # pipeline.sweep name the run and ask for a resume there) and this process's own launch
    launch = Launch(program=os.environ.get("WANDB_PROGRAM") or this_process_launch().program, args=tuple(argv))
    try:
        cfg = parse_args(argv)
    except LrscanError as e:
        exit_with(LrscanError(_one_line(e)), "pipeline.train")
    # torch (seconds) only once the flags are good: a mistyped flag is answered at once
    from lrscan.pipeline.train.loop import StopRequested, train

    try:
        train(cfg, env_run_id=os.environ.get("WANDB_RUN_ID", ""),
              env_resume=os.environ.get("WANDB_RESUME", ""), launch=launch,
              config_from_wandb=any(os.environ.get(k) for k in WANDB_CONFIG_VARIABLES))
    except LrscanError as e:
        exit_with(LrscanError(_one_line(e)), "pipeline.train")
    except StopRequested as e:
        if e.preempted:
            print(f"pipeline.train: preempted ({_one_line(e)}); checkpoint saved, the W&B run marked preempting "
                  f"(a W&B sweep requeues it); resume with --resume --run_id={e.run_id}", file=sys.stderr)
        else:
            print(f"pipeline.train: stopped ({_one_line(e)}); checkpoint saved, resume with --resume "
                  f"--run_id={e.run_id}", file=sys.stderr)
        raise SystemExit(e.exit_code) from None


def _one_line(error: BaseException) -> str:
    # an error and what was added to it (a run that could not be finished either), one line
    return "; ".join([str(error), *getattr(error, "__notes__", ())])



if __name__ == "__main__":
    main()
