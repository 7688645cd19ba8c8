"""Slurm job arrays for a sweep: the sbatch script, and how an array task maps to the sweep's points or packs.

    python -m pipeline.sweep sweeps/decay_grid.yaml --out /shared/runs --print-sbatch > decay.sbatch

Two shapes. One unit per array task (the default): without packing (`--pack 1`, or points that cannot
be packed), task i runs `--index i`, point i of the sweep; with packing, task t runs pack t of
`pipeline.sweep.packs.pack_plan`: the sweep's points in W&B's order, grouped by pack key in order of
first appearance, `--pack` at a time (the script lists each task's points and passes them as
`--index a --index b ...`; the runner packs the given points among themselves). The grid order is
W&B's, so task t runs the same points on every machine and in every re-submission. Or K draining
workers (`--array-tasks K`): each task is a one-worker runner that claims whatever is free, a pack
of up to `--pack` compatible points at a time, so K tasks drain any number of points. Either way the
runners share `--out` and coordinate through the sweep folder's claims (one per point), so a task
that dies has its points taken over by the next runner of that sweep.
"""

from __future__ import annotations

import os
import shlex
import sys

from lrscan.pipeline.sweep.packs import pack_keys, pack_plan
from lrscan.pipeline.sweep.spec import Sweep


def sbatch_script(sweep: Sweep, out: str, array_tasks: int = 0, lease_seconds: float = 60.0, pack: int = 1) -> str:
    """A Slurm job array for this sweep: one point or pack per task (array_tasks=0), or K draining workers.

    The grid order is W&B's, so task t runs the same points everywhere. Paths are absolute: the
    compute nodes must see this checkout, this Python and `out` (a shared filesystem).
    """
    n = len(sweep.points)
    per_unit = array_tasks <= 0
    plan = pack_plan(pack_keys(sweep).keys, pack) if pack > 1 else [[i] for i in range(n)]
    packed = any(len(p) > 1 for p in plan)
    if per_unit:
        tasks = len(plan)
        which = '--workers 1 "${INDEX[@]}"' if packed else '--index "$SLURM_ARRAY_TASK_ID"'
    else:
        tasks = min(array_tasks, n)
        which = "--workers 1"
    cmd = " ".join([shlex.quote(sys.executable), "-m", "lrscan.pipeline.sweep",
                    shlex.quote(os.path.abspath(sweep.path)),
                    "--out", shlex.quote(os.path.abspath(out)), "--lease-seconds", f"{lease_seconds:g}",
                    "--pack", str(pack), "--no-progress", which])
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name={sweep.key}",
        f"#SBATCH --array=0-{tasks - 1}",
        "#SBATCH --ntasks=1",
        # a pack's process trains, its logging process writes the runs: two busy processes
        f"#SBATCH --cpus-per-task={2 if packed else 1}",
    ]
    if per_unit and packed:
        packs = f"{len(plan)} pack{'s' if len(plan) != 1 else ''}"
        lines += [f"# {n} points in {packs} of up to {pack}; array task t runs pack t, these points:",
                  "PACKS=(" + " ".join("'" + " ".join(map(str, p)) + "'" for p in plan) + ")",
                  "INDEX=()",
                  'for i in ${PACKS[$SLURM_ARRAY_TASK_ID]}; do INDEX+=(--index "$i"); done']
    elif per_unit:
        lines.append(f"# {n} points; one point per array task")
    else:
        lines.append(f"# {n} points; {tasks} workers draining them" + (f", up to {pack} per pack" if pack > 1 else ""))
    lines += [f"cd {shlex.quote(os.getcwd())}", f"exec {cmd}", ""]
    return "\n".join(lines)
