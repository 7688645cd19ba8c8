"""Training throughput: lrscan's logged loop against the seed's loop, side by side in one process run.

    python benchmarks/bench_train.py [--steps 20000] [--data data/names.txt]

Prints steps/s of
  1. the seed's bare loop (no logging)                       <- the baseline
  2. the seed's loop + one wandb.log per step (offline)      <- what a new user writes
  3. lrscan (`pipeline.train`), every step logged to wandb offline
and the ratios to the baseline. lrscan's figure is the marginal cost of a step, start-up and the final
evaluation excluded: (time of a run of N steps - time of a run of N0 steps) / (N - N0), each measured
until the logging process has flushed its last step and finished the run. The machine is shared and
noisy, so the variants are interleaved and each is repeated; the medians are compared.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from record import record  # noqa: E402
from scratch import scratch_dir  # noqa: E402
from seed_loop import seed_loop  # noqa: E402

from lrscan.pipeline.config import TrainConfig  # noqa: E402
from lrscan.pipeline.train.data import load_splits  # noqa: E402
from lrscan.pipeline.train.loop import train  # noqa: E402


def lrscan_seconds(data: str, steps: int, workdir: str) -> float:
    cfg = TrainConfig(data=data, schedule="step", steps=steps, n_embd=10, n_hidden=200, lr=0.1,
                      decay_steps=(steps // 2,), decay_lrs=(0.01,), wandb_mode="offline", ckpt_every_steps=0,
                      samples=0, ckpt_dir=os.path.join(workdir, "ckpt"))
    t0 = time.perf_counter()
    train(cfg)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--base-steps", type=int, default=1000, help="N0 of the marginal-cost measurement")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--data", default=os.environ.get("LRSCAN_DATA", "data/names.txt"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("WANDB_SILENT", "true")
    workdir = scratch_dir("lrscan-bench-")
    os.environ["WANDB_DIR"] = workdir
    splits = load_splits(args.data, 3, 42)
    Xtr, Ytr = splits.train
    vocab = len(splits.vocab)

    import wandb

    results: dict[str, list[float]] = {"seed bare": [], "seed + wandb.log": [], "lrscan logged": []}
    for r in range(args.repeats):
        results["seed bare"].append(seed_loop(Xtr, Ytr, vocab, args.steps))
        run = wandb.init(mode="offline", dir=workdir, settings=wandb.Settings(console="off", x_disable_stats=True))
        results["seed + wandb.log"].append(seed_loop(Xtr, Ytr, vocab, args.steps, run=run))
        run.finish()
        full = lrscan_seconds(args.data, args.steps, workdir)
        base = lrscan_seconds(args.data, args.base_steps, workdir)
        results["lrscan logged"].append((full - base) / (args.steps - args.base_steps))
        print(f"repeat {r + 1}/{args.repeats}: " + ", ".join(f"{k} {v[-1] * 1e6:.0f} us/step"
                                                            for k, v in results.items()), flush=True)

    base = statistics.median(results["seed bare"])
    print(f"\n{args.steps} steps, n_embd=10 n_hidden=200 batch 32, torch {torch.__version__}, {os.cpu_count()} cores, "
          f"median of {args.repeats}")
    print(f"{'variant':<20} {'us/step':>8} {'steps/s':>8} {'vs seed bare':>13}")
    for name, values in results.items():
        m = statistics.median(values)
        print(f"{name:<20} {m * 1e6:8.0f} {1 / m:8.0f} {base / m:12.2f}x")
    record("train", "Training with every step logged, against the seed's loop",
           [{"variant": name, "µs/step (median)": round(statistics.median(v) * 1e6),
             "vs seed bare loop": f"{base / statistics.median(v):.2f}x"} for name, v in results.items()],
           target="lrscan logged >= 2.0x the seed's bare loop (no logging)",
           note=f"The lecture's final model (n_embd 10, n_hidden 200, batch 32), {args.steps} steps, median of "
                f"{args.repeats}; lrscan's figure is the marginal cost of a step (start-up and final evaluation out).")


if __name__ == "__main__":
    main()
