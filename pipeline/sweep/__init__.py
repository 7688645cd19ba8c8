"""Many runs: a W&B sweep YAML expanded into points and run locally, offline, on one machine or many.

    python -m pipeline.sweep sweeps/lr_range.yaml
    from pipeline.sweep import load_sweep, run_sweep
"""

from pipeline.sweep.runner import load_sweep, run_sweep

__all__ = ["load_sweep", "run_sweep"]
