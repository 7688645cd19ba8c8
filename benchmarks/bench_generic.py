"""The generic path's logging cost, beside the hand-written path's speed: ratios from one run, side by side.

    python benchmarks/bench_generic.py [--steps 5000] [--data data/names.txt]

Prints the seconds per step of the loop in its steady state: from the first chunk handed to the logger to
the last (`on_steps` is called right after each hand-off), so start-up and the final evaluation are left
out and the hand-off of every step to the logging process is in. The logger takes a chunk in well under
a chunk's training time here, so its bounded queue never holds the trainer back; were it slower, the
trainer would wait on it inside the window and the figure would show it.
  1. the seed's bare loop (no logging)                                   <- the hand-written path's baseline
  2. lrscan's hand-written path (the default task), every step logged    (target >= 2.0x the seed's bare loop)
  3. the generic path (autograd + torch.optim.SGD) on the same makemore MLP, wandb_mode=disabled
  4. the same, every step logged to wandb offline                        (target >= 0.95x of 3: logging is free)
The machine is shared and noisy, so the variants are interleaved and repeated; the medians are compared.
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

N_EMBD, N_HIDDEN = 10, 200  # the lecture's final model, as in bench_train.py


def seconds_per_step(data: str, steps: int, workdir: str, *, generic: bool, mode: str) -> float:
    task = dict(task="pipeline.train.mlp_task:make",
                task_args={"data": data, "n_embd": N_EMBD, "n_hidden": N_HIDDEN}) if generic else {}
    cfg = TrainConfig(data=data, schedule="step", steps=steps, n_embd=N_EMBD, n_hidden=N_HIDDEN, lr=0.1,
                      decay_steps=(steps // 2,), decay_lrs=(0.01,), wandb_mode=mode, ckpt_every_steps=0, samples=0,
                      ckpt_dir=os.path.join(workdir, "ckpt"), **task)
    handed = []  # (time, last step) of every chunk handed to the logger
    train(cfg, on_steps=lambda rows, columns: handed.append((time.perf_counter(), int(rows[-1]))))
    (t0, s0), (t1, s1) = handed[0], handed[-1]
    return (t1 - t0) / (s1 - s0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=5000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--data", default=os.environ.get("LRSCAN_DATA", "data/names.txt"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("WANDB_SILENT", "true")
    workdir = scratch_dir("lrscan-bench-generic-")
    os.environ["WANDB_DIR"] = workdir
    splits = load_splits(args.data, 3, 42)

    variants = {
        "hand-written logged": dict(generic=False, mode="offline"),
        "generic disabled": dict(generic=True, mode="disabled"),
        "generic logged": dict(generic=True, mode="offline"),
    }
    results: dict[str, list[float]] = {"seed bare": [], **{name: [] for name in variants}}
    for r in range(args.repeats):
        results["seed bare"].append(seed_loop(*splits.train, len(splits.vocab), args.steps, n_embd=N_EMBD,
                                              n_hidden=N_HIDDEN))
        for name, how in variants.items():
            results[name].append(seconds_per_step(args.data, args.steps, workdir, **how))
        print(f"repeat {r + 1}/{args.repeats}: " + ", ".join(f"{k} {v[-1] * 1e6:.0f} us/step"
                                                            for k, v in results.items()), flush=True)

    median = {k: statistics.median(v) for k, v in results.items()}
    print(f"\n{args.steps} steps, n_embd={N_EMBD} n_hidden={N_HIDDEN} batch 32, "
          f"torch {torch.__version__}, {os.cpu_count()} cores, median of {args.repeats}")
    print(f"{'variant':<22} {'us/step':>8} {'steps/s':>8}")
    for name, m in median.items():
        print(f"{name:<22} {m * 1e6:8.0f} {1 / m:8.0f}")
    print(f"\nhand-written logged vs seed bare loop:      {median['seed bare'] / median['hand-written logged']:.2f}x "
          f"(target >= 2.0)")
    print(f"generic logged vs generic logging off:      {median['generic disabled'] / median['generic logged']:.3f} "
          f"(target >= 0.95)")
    print(f"generic logged vs seed bare loop:           {median['seed bare'] / median['generic logged']:.2f}x")
    base = median["seed bare"]
    record("generic", "The generic path's logging cost, beside the hand-written path",
           [{"variant": name, "µs/step (median)": round(m * 1e6), "vs seed bare loop": f"{base / m:.2f}x",
             "vs generic logging off": f"{median['generic disabled'] / m:.3f}"} for name, m in median.items()],
           target="hand-written logged >= 2.0x the seed's bare loop; generic logged >= 0.95 of generic logging off",
           note=f"Steady state (first to last chunk handed to the logger), {args.steps} steps, n_embd={N_EMBD} "
                f"n_hidden={N_HIDDEN}, median of {args.repeats}.")


if __name__ == "__main__":
    main()
