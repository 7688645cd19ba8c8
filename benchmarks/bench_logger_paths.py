"""The logger's two history paths side by side: the hand-framed fast path against wandb's public run.log.

    python benchmarks/bench_logger_paths.py [--rows 20000] [--chunk 256]

Writes the same rows (lr, lre, loss at consecutive steps, in the trainer's chunks) to one offline run
through `history_writer(run)` (the fast path, after its start-up self-check) and to another through
`history_writer(run, fast=False)` (what every other wandb release gets), in one process, and prints
the CPU per row and wall time of each, their ratio, and the self-check's cost (the first one in a
process pays for wandb's lazy imports in run.log; later ones are ~1 ms).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import wandb
from record import record
from scratch import scratch_dir

from lrscan.pipeline.train.runwriter import history_writer


def write_rows(fast: bool, rows: int, chunk: int) -> tuple[float, float, float]:
    """(self-check seconds of CPU, seconds of CPU per row, seconds of wall) for one run."""
    run = wandb.init(mode="offline", dir=scratch_dir("lrscan-bench-logger-"), settings=wandb.Settings(
        console="off", x_disable_stats=True, x_server_side_derived_summary=True))
    cpu0 = time.process_time()
    write = history_writer(run, fast=fast)
    cpu1, wall1 = time.process_time(), time.perf_counter()
    for start in range(0, rows, chunk):
        steps = np.arange(start, min(start + chunk, rows))
        lre = -3.0 + 3.0 * steps / rows
        write(steps, {"lr": 10.0**lre, "lre": lre, "loss": 3.0 - steps / rows}, {})
    cpu2, wall2 = time.process_time(), time.perf_counter()
    run.finish()
    return cpu1 - cpu0, (cpu2 - cpu1) / rows, wall2 - wall1


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=20000)
    p.add_argument("--chunk", type=int, default=256)
    args = p.parse_args()
    write_rows(True, 10, args.chunk)  # wandb's lazy imports, paid once per logger process
    fast = write_rows(True, args.rows, args.chunk)
    slow = write_rows(False, args.rows, args.chunk)
    wandb.teardown()
    print(f"wandb {wandb.__version__}, {args.rows} rows in chunks of {args.chunk}")
    print(f"  fast path : {1e6 * fast[1]:7.1f} us CPU/row, {fast[2]:6.2f} s wall, "
          f"self-check {1e3 * fast[0]:.1f} ms CPU")
    print(f"  run.log   : {1e6 * slow[1]:7.1f} us CPU/row, {slow[2]:6.2f} s wall")
    print(f"  ratio     : run.log / fast = {slow[1] / fast[1]:.1f}x CPU per row, {slow[2] / fast[2]:.1f}x wall")
    record("logger_paths", "The logger's fast path against wandb's run.log",
           [{"path": "fast (hand-framed chunk)", "µs CPU/row": round(1e6 * fast[1], 1), "wall s": round(fast[2], 2),
             "self-check ms CPU": round(1e3 * fast[0], 1)},
            {"path": "run.log per row", "µs CPU/row": round(1e6 * slow[1], 1), "wall s": round(slow[2], 2),
             "self-check ms CPU": ""},
            {"path": "ratio run.log / fast", "µs CPU/row": f"{slow[1] / fast[1]:.1f}x",
             "wall s": f"{slow[2] / fast[2]:.1f}x", "self-check ms CPU": ""}],
           note=f"{args.rows} rows in chunks of {args.chunk}, two offline runs side by side in one process.")


if __name__ == "__main__":
    main()
