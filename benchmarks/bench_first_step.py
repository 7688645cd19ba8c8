"""Start-up: time to the first training step of a logged run against the same run unlogged, whole processes.

    python benchmarks/bench_first_step.py [--repeats 3] [--long-steps 30000] [--data data/names.txt]

Each variant is a fresh interpreter started by this script (the user's `lrscan train`: import, data, model,
logging process, wandb service), interleaved and repeated; the medians are compared side by side:
  1. time to first step: launch -> the first step's loss in hand, `wandb_mode=disabled` vs `offline`
     (the logged run's first chunk is one step, so the first step is seen as soon as it is trained)
  2. a one-step run, launch to exit, both modes (a logged run still waits at its end for its run to be written)
  3. with --long-steps N (0 skips it): the seed's bare loop (benchmarks/seed_loop.py) for N steps vs
     `python -m lrscan.pipeline.train` for N steps with every step logged offline, the lecture's final model
     (n_embd=10, n_hidden=200, lr 0.1 then 0.01 at N/2), launch to exit: lrscan's speed-up over the seed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from record import record  # noqa: E402
from scratch import scratch_dir  # noqa: E402

HERE = Path(__file__).resolve().parent

# a child: train with the Python API as the command line does, print when the first step's loss arrived
CHILD = """
import sys, time
launched = float(sys.argv[1])
from lrscan.pipeline.config import TrainConfig
from lrscan.pipeline.train.loop import train
seen = []
def on_steps(steps, columns):
    if not seen:
        seen.append(time.time() - launched)
cfg = TrainConfig(data=sys.argv[2], steps=int(sys.argv[3]), wandb_mode=sys.argv[4], samples=0, log_chunk_steps=1,
                  ckpt_every_steps=0, ckpt_dir=sys.argv[5])
train(cfg, on_steps=on_steps)
print(f"first-step-s {seen[0]:.3f}")
"""

SEED = """
import sys
sys.path.insert(0, sys.argv[1])
import torch
from seed_loop import seed_loop
from lrscan.pipeline.train.data import load_splits
torch.set_num_threads(1)
splits = load_splits(sys.argv[2], 3, 42)
seed_loop(*splits.train, len(splits.vocab), int(sys.argv[3]))
"""


def first_step(data: str, mode: str, workdir: str) -> tuple[float, float]:
    """(launch to first step, launch to exit) of a one-step run in a fresh process."""
    t0 = time.time()
    out = subprocess.run([sys.executable, "-c", CHILD, repr(t0), data, "1", mode, os.path.join(workdir, "ckpt")],
                         capture_output=True, text=True, check=True).stdout
    whole = time.time() - t0
    return float(out.split("first-step-s ")[1].split()[0]), whole


def long_run(argv: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--long-steps", type=int, default=30000)
    ap.add_argument("--data", default=os.environ.get("LRSCAN_DATA", "data/names.txt"))
    args = ap.parse_args()
    data = str(Path(args.data).resolve())
    workdir = scratch_dir("lrscan-bench-first-")
    os.environ["WANDB_DIR"] = workdir
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.pop("WANDB_SERVICE", None)  # every logged run starts its own service, as a user's does

    first: dict[str, list[float]] = {"disabled": [], "offline": []}
    whole: dict[str, list[float]] = {"disabled": [], "offline": []}
    long: dict[str, list[float]] = {"seed bare loop": [], "lrscan logged": []}
    steps = args.long_steps
    trainer = [sys.executable, "-m", "lrscan.pipeline.train", f"--data={data}", "--schedule=step", f"--steps={steps}",
               "--n_embd=10", "--n_hidden=200", "--lr=0.1", f"--decay_steps=[{steps // 2}]", "--decay_lrs=[0.01]",
               "--samples=0", "--ckpt_every_steps=0", "--wandb_mode=offline", f"--ckpt_dir={workdir}/ckpt"]
    for r in range(args.repeats):
        for mode in first:
            f, w = first_step(data, mode, workdir)
            first[mode].append(f)
            whole[mode].append(w)
        if steps:
            long["seed bare loop"].append(long_run([sys.executable, "-c", SEED, str(HERE), data, str(steps)]))
            long["lrscan logged"].append(long_run(trainer))
        print(f"repeat {r + 1}/{args.repeats}: first step " + ", ".join(f"{m} {v[-1]:.2f} s" for m, v in first.items())
              + ("; " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in long.items()) if steps else ""), flush=True)

    med = {m: statistics.median(v) for m, v in first.items()}
    wmed = {m: statistics.median(v) for m, v in whole.items()}
    print(f"\nwhole processes, median of {args.repeats}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}")
    print(f"time to first step: unlogged {med['disabled']:.2f} s, logged offline {med['offline']:.2f} s -> "
          f"+{med['offline'] - med['disabled']:.2f} s, ratio {med['offline'] / med['disabled']:.2f}x")
    print(f"one-step run, launch to exit: unlogged {wmed['disabled']:.2f} s, logged offline {wmed['offline']:.2f} s "
          f"-> ratio {wmed['offline'] / wmed['disabled']:.2f}x")
    rows = [{"measure": "time to first step (s)", "unlogged": med["disabled"], "logged offline": med["offline"],
             "logged - unlogged (s)": med["offline"] - med["disabled"], "ratio": med["offline"] / med["disabled"]},
            {"measure": "one-step run, launch to exit (s)", "unlogged": wmed["disabled"],
             "logged offline": wmed["offline"], "logged - unlogged (s)": wmed["offline"] - wmed["disabled"],
             "ratio": wmed["offline"] / wmed["disabled"]}]
    if steps:
        lmed = {k: statistics.median(v) for k, v in long.items()}
        speedup = lmed["seed bare loop"] / lmed["lrscan logged"]
        print(f"{steps} steps, lecture model, launch to exit: seed bare loop {lmed['seed bare loop']:.1f} s, lrscan "
              f"every step logged {lmed['lrscan logged']:.1f} s -> lrscan {speedup:.2f}x the seed")
        rows.append({"measure": f"{steps} steps, launch to exit (s): seed bare loop vs lrscan logged",
                     "unlogged": lmed["seed bare loop"], "logged offline": lmed["lrscan logged"],
                     "logged - unlogged (s)": lmed["lrscan logged"] - lmed["seed bare loop"],
                     "ratio": f"lrscan {speedup:.2f}x the seed"})
    record("first_step", "Start-up: time to the first step, logged against unlogged (whole processes)", rows,
           target="time to first step logged <= unlogged + 1 s; a 30000-step logged run >= 2.0x the seed's bare loop",
           note=f"Medians of {args.repeats} fresh processes per variant, interleaved.")

if __name__ == "__main__":
    main()
