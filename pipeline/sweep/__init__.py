"""Many runs: a W&B sweep YAML expanded into points and run locally, offline, on one machine or many.

    python -m pipeline.sweep sweeps/lr_range.yaml
    from lrscan.pipeline.sweep import load_sweep, run_sweep

One responsibility per module, imports pointing down this list:

    spec.py      the YAML read and checked, expanded into points (grid.py: W&B's expansion)
    command.py   a point's command line (W&B's macros), environment and run id; the pre-flight check
    manifest.py  the sweep folder's record: sweep.yaml, sweep.json, manifest.jsonl
    claims.py    who runs which point: leases, NFS-safe
    packs.py     which points train stacked in one process (`python -m pipeline.pack`), how many, in which order
    runner.py    the process pool: signals, leases, progress, packs; run_sweep
    outcome.py   why points did not finish: unfinished_message
    slurm.py     Slurm job arrays: the sbatch script, array task -> point or pack
    __main__.py  the command line
"""

from lrscan.pipeline.sweep.manifest import read_manifest
from lrscan.pipeline.sweep.outcome import unfinished_message
from lrscan.pipeline.sweep.runner import run_sweep
from lrscan.pipeline.sweep.spec import Sweep, load_sweep

__all__ = ["Sweep", "load_sweep", "read_manifest", "run_sweep", "unfinished_message"]
