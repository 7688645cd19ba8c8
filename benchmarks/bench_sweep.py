"""A sweep through the local runner against the same runs done the seed's way, one after another.

    python benchmarks/bench_sweep.py [--points 8] [--steps 20000] [--workers N] [--pack 8] [--data data/names.txt]

Both sides train the lecture's final model (n_embd 10, n_hidden 200, batch 32) for `--steps` steps at
`--points` different lrs, every step logged to wandb offline, and both are timed wall-clock from
the first run's start to the last run's finish (start-up, wandb init/finish included):

  1. serial: the seed's loop (`benchmarks/seed_loop.py`) with one `wandb.log` per step, one wandb run
     per lr, one after another in one process: what a new user writes;
  2. `python -m pipeline.sweep --pack=1` on a grid YAML of the same lrs, `--workers` at a time
     (default: the usable cores), each run its own process running the lean logged loop of `pipeline.train`;
  3. `python -m pipeline.sweep --pack=N` on the same YAML: the points trained stacked in packs of up
     to N (`pipeline.pack`), each still its own W&B run;
  4. the same as 3 with W&B switched off (`wandb_mode: disabled`): what the packed step's arithmetic,
     start-up and final evaluation allow on this machine, the ceiling that no logging work can pass.

Prints the four times and the ratios of 2, 3 and 4 over 1. Measured side by side in one invocation; the
machine is shared and noisy, so compare ratios, not absolute times.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import torch  # noqa: E402
from record import record  # noqa: E402
from scratch import scratch_dir  # noqa: E402
from seed_loop import seed_loop  # noqa: E402
from sweep_timing import sweep_seconds as run_sweep_seconds  # noqa: E402

from lrscan.pipeline.sweep.runner import default_workers  # noqa: E402
from lrscan.pipeline.sweep.spec import load_sweep  # noqa: E402
from lrscan.pipeline.train.data import load_splits  # noqa: E402


def lrs_for(points: int) -> list[float]:
    # lrs from 10**-1.5 to 10**-0.5: all trainable, so no run stops early on either side
    return [round(10 ** (-1.5 + i / max(1, points - 1)), 6) for i in range(points)]


def serial_seconds(data: str, lrs: list[float], steps: int, workdir: str) -> float:
    import wandb

    splits = load_splits(data, 3, 42)
    Xtr, Ytr = splits.train
    t0 = time.perf_counter()
    for lr in lrs:
        run = wandb.init(mode="offline", dir=workdir, config={"lr": lr, "steps": steps}, reinit="create_new")
        seed_loop(Xtr, Ytr, len(splits.vocab), steps, lr=lr, run=run)
        run.finish()
    return time.perf_counter() - t0


def sweep_seconds(data: str, lrs: list[float], steps: int, workers: int, workdir: str, pack: int,
                  wandb_mode: str = "offline") -> float:
    name = f"bench_sweep_pack{pack}_{wandb_mode}"
    yaml_path = Path(workdir) / f"{name}.yaml"
    yaml_path.write_text(textwrap.dedent(f"""\
        # benchmark: {len(lrs)} constant-lr runs of {steps} steps
        program: pipeline/train/__main__.py
        command: ["${{env}}", python3, -m, lrscan.pipeline.train, "${{args}}"]
        method: grid
        parameters:
          schedule: {{value: constant}}
          steps: {{value: {steps}}}
          n_embd: {{value: 10}}
          n_hidden: {{value: 200}}
          samples: {{value: 0}}
          ckpt_every_steps: {{value: 0}}
          wandb_mode: {{value: {wandb_mode}}}
          lr: {{values: {lrs}}}
        """))
    assert len(load_sweep(yaml_path).points) == len(lrs)
    return run_sweep_seconds(yaml_path, data, workers, pack, os.path.join(workdir, f"runs-{name}"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--workers", type=int, default=default_workers())
    ap.add_argument("--pack", type=int, default=None, help="points per pack on the packed side (default: --points)")
    ap.add_argument("--data", default=os.environ.get("LRSCAN_DATA", "data/names.txt"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("WANDB_SILENT", "true")
    workdir = scratch_dir("lrscan-bench-sweep-")
    os.environ["WANDB_DIR"] = workdir
    lrs = lrs_for(args.points)

    pack = args.pack or args.points
    serial = serial_seconds(args.data, lrs, args.steps, workdir)
    print(f"serial seed loop + wandb.log per step:        {serial:7.1f} s", flush=True)
    runner = sweep_seconds(args.data, lrs, args.steps, args.workers, workdir, pack=1)
    print(f"pipeline.sweep --pack=1, {args.workers} workers:         {runner:7.1f} s", flush=True)
    packed = sweep_seconds(args.data, lrs, args.steps, args.workers, workdir, pack=pack)
    print(f"pipeline.sweep --pack={pack}, {args.workers} workers:         {packed:7.1f} s", flush=True)
    floor = sweep_seconds(args.data, lrs, args.steps, args.workers, workdir, pack=pack, wandb_mode="disabled")
    print(f"the same with W&B disabled:                  {floor:7.1f} s", flush=True)
    print(f"\n{args.points} points x {args.steps} steps, n_embd=10 n_hidden=200, {os.cpu_count()} cores, "
          f"torch {torch.__version__}")
    print(f"speed-up over the serial seed loop: --pack=1 {serial / runner:.2f}x (target >= 4x), "
          f"--pack={pack} {serial / packed:.2f}x (target >= 8x); with W&B disabled {serial / floor:.2f}x")
    record("sweep", "A sweep through the runner against the seed's loop + wandb.log, one point after another",
           [{"side": name, "s": round(s, 1), "speed-up over serial": f"{serial / s:.2f}x"}
            for name, s in (("serial seed loop + wandb.log per step", serial), ("pipeline.sweep --pack=1", runner),
                            (f"pipeline.sweep --pack={pack}", packed), (f"--pack={pack}, W&B disabled", floor))],
           target="--pack=1 >= 4x, packed >= 8x the serial seed loop",
           note=f"{args.points} points x {args.steps} steps of the lecture's final model, `--workers {args.workers}`.")


if __name__ == "__main__":
    main()
