"""The Slurm batch script for `wandb agent` from a conda environment: signals, time limit, requeue, GPUs, count.

    python -m pipeline.sweep sweeps/lr_range.yaml --print-agent-sbatch ENTITY/PROJECT/SWEEP_ID \\
        --conda-env lrscan --count 8 --time 4:00:00 --partition gpu --gpus 1 > agent.sbatch
    sbatch agent.sbatch                  # one agent; `sbatch --array=0-3 agent.sbatch` starts four

What a job does (docs/clusters.md has the whole story):
- `conda activate` (after `conda shell.bash hook`: a batch shell has not read ~/.bashrc), or, for a
  venv, its bin folder first on PATH; then `wandb agent --forward-signals --term-timeout T --count N`.
- `#SBATCH --signal=B:USR1@S`: S seconds before the time limit (and at a preemption, where the
  cluster sends the job's signal then) Slurm sends the batch shell SIGUSR1. The shell passes it to the
  agent's run itself (the agent's child): lrscan's trainer checkpoints, marks its W&B run preempting and
  exits 138. The shell then sends the agent SIGTERM so it takes no new run, and requeues the job
  (`scontrol requeue`, with `#SBATCH --requeue`). The notice goes to the run, not through the agent:
  the agent forwards its SIGTERM too, and a SIGUSR1 forwarded by the agent could reach the run after
  that SIGTERM (the agent handles signals on its main thread, whenever it gets there), and the run
  would stop as stopped (130), not preempted, and never be requeued. Sent straight, the SIGUSR1 is
  pending in the run before the agent even has its SIGTERM.
- W&B's sweep requeues a run marked preempting that exits non-zero; the next agent of the sweep (this
  job requeued, or any other) is handed it back under its own run id, and with WANDB_RESUME=allow the
  trainer resumes its checkpoint (`ckpt_dir/<run id>.pt`, under the job's shared working folder) into
  the same W&B run.

The agent starts with SIGUSR1 ignored: `wandb agent --forward-signals` installs its forwarding handler
only when it starts a run, and a notice that arrives between two runs must not end it (SIGUSR1's
default action). The trainer installs its own handler, so it is not deaf to it.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from lrscan.pipeline.errors import LrscanError
from lrscan.pipeline.sweep.slurm import SbatchOptions, check_options, time_seconds, with_options
from lrscan.pipeline.sweep.spec import SWEEP_KEYS, Sweep, is_trainer
from lrscan.pipeline.yamlfile import read_yaml_text_and_mapping

SIGNAL_SECONDS = 120  # the notice before the time limit: a chunk, a checkpoint and W&B's finish fit in it
MIN_SIGNAL_SECONDS = 30
# of the notice, what is left after the agent's wait for its run: the requeue and the shell's exit
REQUEUE_MARGIN_SECONDS = 20
_SWEEP_ID = re.compile(r"[\w.-]+(/[\w.-]+){0,2}")
AGENT_OWNED = {
    "--signal": "the preemption signal is the script's (USR1, trapped); set its lead with --signal-seconds",
    "--requeue": "the script requeues itself after a preemption notice; turn that off with --no-requeue",
    "--no-requeue": "turn the script's requeue off with --no-requeue",
}


@dataclass(frozen=True)
class AgentJob:
    """One `wandb agent` job of a sweep: where it runs, in which environment, for how many runs."""

    sweep_id: str                 # ENTITY/PROJECT/ID, or ID with the entity and project W&B defaults to
    workdir: str                  # absolute; on a filesystem every node shares: runs and checkpoints land here
    count: int | None = None      # runs per agent (`wandb agent --count`); None: until the sweep is done
    conda_env: str = ""           # `conda activate` this (a name or a prefix path) ...
    bin_dir: str = ""             # ... or, without conda, put this environment's bin folder first on PATH
    signal_seconds: int = SIGNAL_SECONDS
    requeue: bool = True          # requeue the job after a preemption notice
    options: SbatchOptions = SbatchOptions()


@dataclass(frozen=True)
class SweepHead:
    """What the agent's script needs of the sweep YAML: its path, its name, and whether it runs lrscan's trainer.
    Its points are the W&B server's business (any method, bayes included)."""

    path: str
    name: str
    runs_trainer: bool
    devices: frozenset[str] = frozenset()  # the trainer's `device` values in the YAML (its default, cpu, if unset)


def read_sweep_head(path: str | os.PathLike) -> SweepHead:
    """The YAML's head, its top-level keys checked as W&B's schema does; LrscanError naming the problem."""
    path = str(path)
    text, config = read_yaml_text_and_mapping(path, "sweep file")
    unknown = sorted(set(config) - SWEEP_KEYS)
    if unknown:
        raise LrscanError(f"{path}: unknown top-level key(s) {unknown}; W&B sweep keys are {sorted(SWEEP_KEYS)}")
    name = config.get("name") or Path(path).stem
    command = config.get("command") or ["${env}", "${interpreter}", "${program}", "${args}"]  # W&B's default
    if not isinstance(name, str) or not isinstance(command, list):
        raise LrscanError(f"{path}: name must be a string and command a list")
    head = Sweep(path=path, text=text, config=config, name=name, key=name, method=str(config.get("method")),
                 program=str(config.get("program", "")), command=tuple(str(c) for c in command), points=())
    runs_trainer = is_trainer(head)
    spec = (config.get("parameters") or {}).get("device", {"value": "cpu"}) if runs_trainer else {}
    devices = spec.get("values", [spec.get("value")]) if isinstance(spec, dict) else []
    return SweepHead(path=path, name=name, runs_trainer=runs_trainer,
                     devices=frozenset(str(d) for d in devices if isinstance(d, str)))


def check_agent_job(job: AgentJob) -> None:
    """One line naming the first thing wrong with `job`, as LrscanError."""
    if not _SWEEP_ID.fullmatch(job.sweep_id):
        raise LrscanError(f"--print-agent-sbatch {job.sweep_id!r}: a W&B sweep id, ENTITY/PROJECT/ID or ID "
                          "(what `wandb sweep` printed)")
    if job.count is not None and job.count < 1:
        raise LrscanError(f"--count {job.count}: need at least 1 run per agent")
    if not os.path.isabs(job.workdir) or any(c.isspace() for c in job.workdir):
        raise LrscanError(f"--workdir {job.workdir!r}: an absolute path without spaces (#SBATCH lines take no quotes)")
    if not job.conda_env and not job.bin_dir:
        raise LrscanError("--conda-env: name the conda environment the job activates (or run this from the "
                          "environment the job should use)")
    if job.signal_seconds < MIN_SIGNAL_SECONDS:
        raise LrscanError(f"--signal-seconds {job.signal_seconds}: at least {MIN_SIGNAL_SECONDS} (a run needs the "
                          "time to end its chunk, save a checkpoint and finish its W&B run)")
    check_options(job.options, AGENT_OWNED)
    if job.options.time and time_seconds(job.options.time) <= job.signal_seconds:
        raise LrscanError(f"--time {job.options.time}: the time limit must be longer than --signal-seconds "
                          f"{job.signal_seconds} (the notice comes that long before it)")


def agent_sbatch_script(sweep: SweepHead, job: AgentJob) -> str:
    """The batch script of one `wandb agent` job for `sweep` (the YAML the W&B sweep was made from)."""
    check_agent_job(job)
    term_timeout_s = max(job.signal_seconds - REQUEUE_MARGIN_SECONDS, 10)
    agent = ["wandb", "agent", "--forward-signals", "--term-timeout", str(term_timeout_s)]
    agent += ["--count", str(job.count)] if job.count is not None else []
    agent.append(job.sweep_id)
    workdir = shlex.quote(job.workdir)
    job_name = re.sub(r"[^\w.-]", "_", sweep.name)
    own = [f"#SBATCH --job-name=agent-{job_name}", "#SBATCH --ntasks=1",
           # the trainer and its wandb logging process: two busy processes
           "#SBATCH --cpus-per-task=2",
           f"#SBATCH --output={job.workdir}/slurm-agent-%j.out",
           "#SBATCH --open-mode=append",  # a requeued job goes on in the same log
           f"#SBATCH --signal=B:USR1@{job.signal_seconds}"]
    own += ["#SBATCH --requeue"] if job.requeue else []
    if job.conda_env:
        environment = ["# conda's shell functions first: a batch shell has not read ~/.bashrc",
                       'eval "$(conda shell.bash hook)"',
                       f"conda activate {shlex.quote(job.conda_env)}"]
    else:
        environment = ["# the Python environment this script was made from (its python3, its wandb)",
                       f'export PATH={shlex.quote(job.bin_dir)}:"$PATH"']
    resume = ([] if sweep.runs_trainer else
              ["# (this sweep runs its own program: it resumes a requeued run only if it reads WANDB_RESUME)"])
    requeue = [
        'if [ "$preempted" = 1 ]; then',
        '  echo "lrscan: preemption notice: requeueing job $SLURM_JOB_ID"',
        '  scontrol requeue "$SLURM_JOB_ID" || echo "lrscan: the requeue failed; the preempted run waits in the '
        "sweep's queue for another agent\"",
        "fi",
    ] if job.requeue else []
    lines = [
        "#!/bin/bash",
        *with_options(own, job.options),
        f"# `wandb agent` for the W&B sweep {job.sweep_id} ({sweep.path}), made by lrscan: sbatch this file",
        "# (`sbatch --array=0-3 ...` starts four agents). Slurm's SIGUSR1, sent --signal's seconds before the",
        "# time limit or at a preemption notice, goes to the agent's run: it checkpoints, marks its W&B run",
        "# preempting and exits; W&B requeues it and the next agent resumes it into the same run.",
        "set -u",
        "",
        *environment,
        f"cd {workdir}",
        f"export WANDB_DIR={workdir}  # runs under wandb/, checkpoints under checkpoints/: shared by every node",
        "# a run W&B hands back after a preemption comes under its own id: resume its checkpoint into it",
        "export WANDB_RESUME=allow",
        *resume,
        'echo "lrscan: job ${SLURM_JOB_ID:-} (restart ${SLURM_RESTART_COUNT:-0}) on $(hostname): '
        f'{shlex.join(agent)}"',
        "",
        "# SIGUSR1 ignored until the agent has a run to forward it to (its default action would end the agent)",
        f"( trap '' USR1; exec {shlex.join(agent)} ) &",
        "agent=$!",
        "preempted=0",
        "on_usr1() {",
        "  preempted=1",
        '  pkill -USR1 -P "$agent"  # to the run itself, before the TERM the agent forwards: checkpoint, mark '
        "preempting, exit 138",
        '  kill -TERM "$agent" 2>/dev/null  # no new run; the agent waits for this one (--term-timeout)',
        "}",
        "trap on_usr1 USR1",
        "trap 'kill -TERM \"$agent\" 2>/dev/null' TERM INT",
        "# a trapped signal ends `wait` early: wait again until the agent is gone",
        "while :; do",
        '  wait "$agent"; code=$?',
        '  kill -0 "$agent" 2>/dev/null || break',
        "done",
        *requeue,
        'exit "$code"',
        "",
    ]
    return "\n".join(lines)
