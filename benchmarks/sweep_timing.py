"""Time one `python -m pipeline.sweep` run from launch to exit: what the sweep and pack benchmarks compare."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def sweep_seconds(yaml_path: Path, data: str, workers: int, pack: int, out: str) -> float:
    """Wall seconds of `python -m pipeline.sweep yaml_path --workers --pack --out` (LRSCAN_DATA=data), run from the
    repository, W&B silent, no progress bar; a failing sweep raises."""
    env = {**os.environ, "LRSCAN_DATA": os.path.abspath(data), "WANDB_SILENT": "true"}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "lrscan.pipeline.sweep", str(yaml_path), "--workers", str(workers), "--pack",
                    str(pack), "--out", out, "--no-progress"], cwd=REPO, env=env, check=True)
    return time.perf_counter() - t0
