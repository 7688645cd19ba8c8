"""Benchmark: read every step of offline runs into the tidy frame, ours vs wandb's own reader.

    .venv/bin/python benchmarks/bench_read.py [--steps 200000] [--runs 50] [--dir DIR]

1. Writes (once; reused from DIR, default $TMPDIR/lrscan-bench-<steps>) a real offline wandb run
   with `steps` steps and the four per-step keys, logged with explicit steps as the trainer does
   (~90 s for 200k steps on 2 cores).
2. Times, side by side in this one process: `analysis.sources.load_runs` (our reader, to the tidy
   frame) against `wandb leet inspect --json <file>` + `json.loads` of each line into pandas
   (wandb's own reader, the only one left in wandb >= 0.30), and prints both and the ratio.
3. Measures the memory of holding `runs` copies of that run (distinct run ids) in one tidy frame.

Speed is measured here, never asserted in tests: the machine is noisy.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path


def write_run(root: Path, n_steps: int) -> Path:
    """One offline run of `n_steps` steps under `root`; returns its .wandb file."""
    found = sorted(glob.glob(str(root / "wandb" / "offline-run-*" / "run-*.wandb")))
    if found:
        return Path(found[-1])
    os.environ["WANDB_SILENT"] = "true"
    import wandb

    from pipeline.config import TrainConfig

    root.mkdir(parents=True, exist_ok=True)
    config = TrainConfig(steps=n_steps, data="names.txt").to_dict()
    run = wandb.init(mode="offline", dir=str(root), project="lrscan", group="bench", tags=["bench"],
                     job_type="train", config=config,
                     settings=wandb.Settings(console="off", x_disable_stats=True))
    start = time.perf_counter()
    loss = 3.3
    for step in range(n_steps):
        lre = -3.0 + 3.0 * step / max(n_steps - 1, 1)
        loss = 0.999 * loss + 0.001 * (2.0 + abs(lre + 1.0))
        run.log({"lr": 10.0**lre, "lre": lre, "loss": loss, "log10_loss": math.log10(loss)}, step=step)
    run.summary.update({"train_loss": loss, "final_step": n_steps - 1})
    run.finish()
    print(f"wrote {n_steps} steps in {time.perf_counter() - start:.1f} s", flush=True)
    return write_run(root, n_steps)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--dir", default="")
    parser.add_argument("--write-only", action="store_true")
    args = parser.parse_args(argv)
    root = Path(args.dir or Path(tempfile.gettempdir()) / f"lrscan-bench-{args.steps}")
    path = write_run(root, args.steps)
    print(f"run file: {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    if args.write_only:
        return


if __name__ == "__main__":
    main()
