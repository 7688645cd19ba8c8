"""A pack of 64 members on a GPU against one run on the same GPU; skipped (and says so) without one. Never in CI.

    python benchmarks/bench_pack_gpu.py [--members 64] [--steps 2000] [--data data/names.txt]

Both sides train the lecture's final model (n_embd 10, n_hidden 200, batch 32), a range test over
lre -3..0, logging disabled so the figure is the training itself: (1) one run of `pipeline.train`
on the GPU, (2) `--members` points (one seed each) packed in one `pipeline.pack` process on the GPU.
Prints each side's time per member-step and the pack's speed-up over running the members one
after another (members x one run's time / the pack's time). Start-up (data, CUDA context) is
outside both timings; measured side by side in one invocation.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from record import record  # noqa: E402
from scratch import scratch_dir  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--members", type=int, default=64)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--data", default=os.environ.get("LRSCAN_DATA", "data/names.txt"))
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("bench_pack_gpu: skipped, no CUDA GPU on this machine (torch.cuda.is_available() is False)")
        return
    from lrscan.pipeline.config import parse_args
    from lrscan.pipeline.pack.loop import train_pack
    from lrscan.pipeline.pack.members import Point
    from lrscan.pipeline.train.loop import train

    workdir = scratch_dir("lrscan-bench-pack-gpu-")
    base = [f"--data={os.path.abspath(args.data)}", "--device=cuda", "--n_embd=10", "--n_hidden=200",
            "--schedule=range", "--lre_min=-3", "--lre_max=0", f"--steps={args.steps}", "--samples=0",
            "--wandb_mode=disabled", "--ckpt_every_steps=0", "--stop_on_climb=False", "--stop_on_nonfinite=False",
            f"--ckpt_dir={workdir}/checkpoints"]
    quiet = contextlib.redirect_stdout(io.StringIO())
    with quiet:  # warm-up: CUDA context, kernels
        train(parse_args([*base, "--steps=50", "--run_id=warm"]))
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        train(parse_args([*base, "--run_id=alone"]))
    torch.cuda.synchronize()
    alone_s = time.perf_counter() - t0
    points = [Point.parse(f"m{k:03d}", [*base, f"--seed={k + 1}"]) for k in range(args.members)]
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        train_pack(points)
    torch.cuda.synchronize()
    pack_s = time.perf_counter() - t0
    name = torch.cuda.get_device_name(0)
    print(f"{name}, torch {torch.__version__}, {args.steps} steps, n_embd=10 n_hidden=200")
    print(f"one run:              {alone_s:7.2f} s  ({alone_s / args.steps * 1e6:7.1f} µs per step)")
    print(f"pack of {args.members:3d}:          {pack_s:7.2f} s  "
          f"({pack_s / args.steps / args.members * 1e6:7.1f} µs per member-step)")
    print(f"speed-up of the pack over {args.members} runs one after another: {args.members * alone_s / pack_s:.1f}x")
    record("pack_gpu", f"A pack of {args.members} on a GPU against one run",
           [{"side": "one run", "s": round(alone_s, 2), "µs per member-step": round(alone_s / args.steps * 1e6, 1)},
            {"side": f"pack of {args.members}", "s": round(pack_s, 2),
             "µs per member-step": round(pack_s / args.steps / args.members * 1e6, 1)}],
           note=f"{name}; {args.steps} steps of the lecture's final model, logging disabled; speed-up over "
                f"{args.members} runs one after another: {args.members * alone_s / pack_s:.1f}x.")


if __name__ == "__main__":
    main()
