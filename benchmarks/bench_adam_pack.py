"""An AdamW task packed: range_test's seeds as one pack vs one after another, vs torch-lr-finder, and a packed sweep.

    python benchmarks/bench_adam_pack.py [--seeds 5] [--steps 1000] [--repeats 1] [--data data/names.txt]
    python benchmarks/bench_adam_pack.py --sweep [--points 8] [--steps 2000] [--workers 2]

Default, side by side in one invocation (interleaved, `--repeats` times, medians compared), on
examples/wavenet.py (the lecture's WaveNet, 76k parameters, AdamW in two param groups, BatchNorm):
  1. `range_test(make, seeds=[1..5], steps=1000)`, every step logged to W&B offline: its seeds as one
     pack (one vmapped step, one logger process holding the 5 runs)              <- lrscan
  2. the same call with packing turned off: the seeds one after another (each its own logger process),
     as range_test trained them before                                            (target: 1 >= 3x faster)
  3. torch-lr-finder: five `LRFinder.range_test` calls, one per seed, on the same models, optimizers
     and batches (`batch(i)` through a TrainDataLoaderIter), the same exponential lrs, then `reset()`
     by hand; it logs nothing and keeps only a smoothed loss per step           (target: 1 no slower than 3)
Neither side stops early (lrscan's climb stop off, torch-lr-finder's diverge_th out of reach), so
both train exactly seeds x steps steps; wall time from the call to its return (wandb.init and finish
included for lrscan). One intra-op thread everywhere (the logger process takes the second core);
`--num_threads 2` gives every side two (range_test's own default is torch's thread count), which pays
on a quiet machine only: OpenMP's threads wait for a core another process holds.

--sweep: 8 points x 2000 steps of the same task (a step-decay sweep over lr) through
`python -m pipeline.sweep` with --pack=1 (one process per point) and packed (--pack=points), both
wall-clock from launch to exit; target >= 3x on 2 cores.

The machine is shared and noisy: compare ratios measured in one run, not absolute times.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from record import record  # noqa: E402
from scratch import scratch_dir  # noqa: E402
from sweep_timing import sweep_seconds  # noqa: E402

from examples.wavenet import make  # noqa: E402
from lrscan.pipeline import range_test  # noqa: E402
from lrscan.pipeline.pack import functional  # noqa: E402

LRE_MIN, LRE_MAX = -5.0, -1.0  # examples/wavenet.py's own range test


def lrscan_seconds(data: str, seeds: list[int], steps: int, *, packed: bool, num_threads: int) -> float:
    why_not = functional.why_not_functional
    if not packed:  # range_test's seeds one after another, as before they packed
        functional.why_not_functional = lambda tasks: "packing off for the benchmark"
    try:
        t0 = time.perf_counter()
        result = range_test(make, seeds=seeds, steps=steps, lre_min=LRE_MIN, lre_max=LRE_MAX, stop_on_climb=False,
                            stop_on_nonfinite=False, wandb_mode="offline", num_threads=num_threads,
                            task_args={"data": data})
        seconds = time.perf_counter() - t0
    finally:
        functional.why_not_functional = why_not
    assert len(result.steps) == len(seeds) * steps, "a run stopped early"
    return seconds


def lr_finder_seconds(data: str, seeds: list[int], steps: int) -> float:
    from torch_lr_finder import LRFinder, TrainDataLoaderIter

    class Batches(TrainDataLoaderIter):
        """The task's batch(i), i = 0, 1, ...: the batches lrscan's runs train on."""

        def __init__(self, batch):
            self.batch, self.i, self.auto_reset = batch, 0, True

        def __next__(self):
            self.i += 1
            return self.batch(self.i - 1)

    t0 = time.perf_counter()
    for seed in seeds:
        task = make(seed, data=data)
        finder = LRFinder(task.model, task.optimizer, F.cross_entropy)
        finder.range_test(Batches(task.batches), start_lr=10**LRE_MIN, end_lr=10**LRE_MAX, num_iter=steps,
                          step_mode="exp", diverge_th=float("inf"))
        assert len(finder.history["loss"]) == steps, "torch-lr-finder stopped early"
        finder.reset()  # their restore, by hand
    return time.perf_counter() - t0


def compare_range_tests(args) -> None:
    seeds = list(range(1, args.seeds + 1))
    results: dict[str, list[float]] = {"lrscan packed": [], "lrscan one after another": [], "torch-lr-finder": []}
    for r in range(args.repeats):
        for name, packed in (("lrscan packed", True), ("lrscan one after another", False)):
            results[name].append(lrscan_seconds(args.data, seeds, args.steps, packed=packed,
                                                num_threads=args.num_threads))
        results["torch-lr-finder"].append(lr_finder_seconds(args.data, seeds, args.steps))
        print(f"repeat {r + 1}/{args.repeats}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in results.items()),
              flush=True)
    median = {k: statistics.median(v) for k, v in results.items()}
    print(f"\nexamples/wavenet.py (AdamW), {len(seeds)} seeds x {args.steps} steps, lre {LRE_MIN}..{LRE_MAX}, "
          f"torch {torch.__version__}, {os.cpu_count()} cores, {args.num_threads} intra-op thread(s), "
          f"median of {args.repeats}")
    for name, m in median.items():
        print(f"{name:<26} {m:7.1f} s  ({len(seeds) * args.steps / m:6.0f} steps/s)")
    print(f"\npacked vs one after another:  {median['lrscan one after another'] / median['lrscan packed']:.2f}x "
          f"(target >= 3)")
    print(f"lrscan packed (every step logged) / torch-lr-finder (nothing logged): "
          f"{median['lrscan packed'] / median['torch-lr-finder']:.2f} (target <= 1.0)")
    record(f"adam_pack_range_test_{args.num_threads}thread", "AdamW range test: packed seeds, one after another, "
           f"torch-lr-finder ({args.num_threads} intra-op thread(s))",
           [{"side": name, "s (median)": round(m, 1), "steps/s": round(len(seeds) * args.steps / m),
             "lrscan packed vs this": f"{m / median['lrscan packed']:.2f}x"} for name, m in median.items()],
           target="packed >= 3x one after another; lrscan packed (every step logged) no slower than "
                  "torch-lr-finder (<= 1.0x its time)",
           note=f"`range_test(examples/wavenet.py:make)`, {len(seeds)} seeds x {args.steps} steps, lre "
                f"{LRE_MIN}..{LRE_MAX}, median of {args.repeats}; torch-lr-finder logs nothing and is reset by hand.")


def compare_sweeps(args) -> None:
    workdir = scratch_dir("lrscan-bench-adam-sweep-")
    lrs = [round(10 ** (-3 + 1.5 * i / (args.points - 1)), 6) for i in range(args.points)]
    path = Path(workdir) / "sweep.yaml"
    path.write_text(textwrap.dedent(f"""\
        # benchmark: {args.points} step-decay points of examples/wavenet.py (AdamW), {args.steps} steps each
        program: pipeline/train/__main__.py
        command: ["${{env}}", python3, -m, lrscan.pipeline.train, "${{args}}"]
        method: grid
        parameters:
          task: {{value: "examples/wavenet.py:make"}}
          task_args: {{value: {{data: "{os.path.abspath(args.data)}"}}}}
          schedule: {{value: step}}
          steps: {{value: {args.steps}}}
          decay_steps: {{value: [{args.steps // 2}]}}
          decay_lrs: {{value: [0.0001]}}
          num_threads: {{value: 1}}
          ckpt_every_steps: {{value: 0}}
          samples: {{value: 0}}
          lr: {{values: {lrs}}}
        """))
    results = {}
    for pack in (1, args.points):
        results[pack] = sweep_seconds(path, args.data, args.workers, pack, os.path.join(workdir, f"runs-pack{pack}"))
        print(f"pipeline.sweep --pack={pack}, {args.workers} workers: {results[pack]:7.1f} s", flush=True)
    print(f"\n{args.points} points x {args.steps} steps of examples/wavenet.py (AdamW), every step logged offline: "
          f"packed {results[1] / results[args.points]:.2f}x faster than --pack=1 (target >= 3)")
    record("adam_pack_sweep", "AdamW sweep: packed against one process per point",
           [{"side": f"--pack={pack}", "s": round(s, 1), "speed-up over --pack=1": f"{results[1] / s:.2f}x"}
            for pack, s in results.items()],
           target="packed >= 3x --pack=1",
           note=f"{args.points} step-decay points x {args.steps} steps of examples/wavenet.py, every step logged "
                f"offline, `--workers {args.workers}`.")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=None, help="default 1000 (range tests), 2000 (--sweep)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--sweep", action="store_true")
    ap.add_argument("--points", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--num_threads", type=int, default=1, help="intra-op threads of every range test")
    ap.add_argument("--data", default=os.environ.get("LRSCAN_DATA", str(REPO / "data" / "names.txt")))
    args = ap.parse_args()
    torch.set_num_threads(args.num_threads)  # torch-lr-finder's side; lrscan's sets its own
    torch.optim.AdamW([torch.zeros(1, requires_grad=True)])  # torch imports torch._dynamo here once: not timed
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ["WANDB_DIR"] = scratch_dir("lrscan-bench-adam-")
    if args.sweep:
        args.steps = args.steps or 2000
        compare_sweeps(args)
    else:
        args.steps = args.steps or 1000
        compare_range_tests(args)


if __name__ == "__main__":
    main()
