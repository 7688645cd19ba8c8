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

from record import record


def write_run(root: Path, n_steps: int) -> Path:
    """One offline run of `n_steps` steps under `root`; returns its .wandb file."""
    found = sorted(glob.glob(str(root / "wandb" / "offline-run-*" / "run-*.wandb")))
    if found:
        return Path(found[-1])
    os.environ["WANDB_SILENT"] = "true"
    import wandb

    from lrscan.pipeline.config import TrainConfig

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

    from lrscan.analysis.sources import load_runs

    # ours: file -> tidy frame
    start = time.perf_counter()
    ours = load_runs(path).steps
    ours_seconds = time.perf_counter() - start
    # wandb's own reader: leet inspect --json, one JSON object per record, into pandas
    start = time.perf_counter()
    theirs = leet_frame(path)
    leet_seconds = time.perf_counter() - start
    assert len(ours) == len(theirs) == args.steps, (len(ours), len(theirs))
    for key in ("lr", "lre"):
        assert (ours[key].to_numpy() == theirs[key].to_numpy()).all(), key
    print(f"read {args.steps} steps to a frame: ours {ours_seconds:.2f} s, "
          f"wandb leet inspect --json + json.loads {leet_seconds:.2f} s, ratio {leet_seconds / ours_seconds:.1f}x")

    frame_gib, peak_gib, maxrss_gib = memory(path, args.runs)
    record("read", "Every step of a run file to the tidy frame: lrscan's reader against wandb's",
           [{"what": f"read {args.steps} steps ({path.stat().st_size / 2**20:.1f} MiB .wandb) to a frame",
             "lrscan": f"{ours_seconds:.2f} s", "baseline": f"wandb leet inspect --json + pandas {leet_seconds:.2f} s",
             "ratio": f"{leet_seconds / ours_seconds:.1f}x"},
            {"what": f"{args.runs} runs x {args.steps} steps in the tidy frame", "lrscan": f"{frame_gib:.2f} GiB",
             "baseline": f"peak while building {peak_gib:.2f} GiB, process max RSS {maxrss_gib:.2f} GiB",
             "ratio": ""}],
           target="reading >= 25x wandb's own reader; 50 runs x 200k steps in < 1.5 GiB")


def leet_frame(path: Path):
    """wandb's own reader, the way a user without ours would do it."""
    import pandas as pd

    wandb_cli = Path(sys.executable).with_name("wandb")
    proc = subprocess.run([str(wandb_cli), "leet", "inspect", "--json", str(path)],
                          check=True, capture_output=True, text=True)
    rows = []
    for line in proc.stdout.splitlines():
        record = json.loads(line)
        if record.get("type") == "history":
            rows.append(record["history"]["item"])
    frame = pd.DataFrame(rows)
    return frame.rename(columns={"_step": "step"}).astype({"lr": "float64", "lre": "float64"})


def memory(path: Path, n_runs: int) -> tuple[float, float, float]:
    """Peak Python-heap memory while building the tidy frame of `n_runs` copies of one run (frame, peak, RSS GiB)."""
    import dataclasses

    from lrscan.analysis import sources
    from lrscan.analysis.sources.frame import build_frames
    from lrscan.pipeline.runlog import read_run_file

    one = read_run_file(path, list(sources.DEFAULT_KEYS))
    runs = [dataclasses.replace(one, run_id=f"run{i:03d}", name=f"run-{i}",
                                config={**one.config, "lre_min": -3.0 - i % 5})
            for i in range(n_runs)]
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    steps, _ = build_frames(runs, list(sources.DEFAULT_KEYS))
    held, peak = (m - base for m in tracemalloc.get_traced_memory())
    tracemalloc.stop()
    frame_bytes = steps.memory_usage(deep=True).sum()
    print(f"{n_runs} runs x {len(one.history['step'])} steps = {len(steps)} rows, {steps.shape[1]} columns: "
          f"frame {frame_bytes / 2**30:.3f} GiB (memory_usage deep), "
          f"held {held / 2**30:.3f} GiB, peak while building {peak / 2**30:.3f} GiB (tracemalloc)")
    del steps
    import resource
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"process max RSS {maxrss:.2f} GiB (includes the inputs)")
    return frame_bytes / 2**30, peak / 2**30, maxrss


if __name__ == "__main__":
    main()
