"""Benchmark: `python -m analysis` at the scale of a real sweep (10 and 50 runs x 200k steps), wall time and peak RSS.

    .venv/bin/python benchmarks/bench_analysis.py [--steps 200000] [--sizes 10,50] [--dir DIR] [--repeat 1]
        [--before CHECKOUT]    # also time another checkout of lrscan (say main's), side by side

1. Makes the runs once (reused from DIR, default $TMPDIR/lrscan-bench-analysis-<steps>): real
   offline wandb range-test runs, 5 seeds over a few lre ranges, written by lrscan's own run writer
   (`pipeline.train.runwriter.history_writer`, the records `run.log` would send, a whole chunk per
   hand-off), one folder per size (`runs-10/`, `runs-50/`).
2. Runs `python -m analysis <folder> --out <tmp>` as a subprocess on each size and measures its
   wall time, the CPU time and the peak RSS of its whole process tree (the analysis and any worker
   it starts), sampled from /proc every 10 ms. With --before, the same command from that checkout runs
   alternately with this one, and both picks must be the same numbers.

Speed and memory are measured here, never asserted in tests: the machine is noisy.
"""

from __future__ import annotations

import argparse
import glob
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from record import record

CHUNK_STEPS = 10_000
SEEDS = 5
RANGES = ((-3.0, 0.0), (-4.0, 0.5))  # (lre_min, lre_max) of the grid's ranges; seeds x ranges runs per 10


def write_runs(folder: Path, n_runs: int, n_steps: int) -> None:
    """`n_runs` offline range-test runs of `n_steps` steps under `folder` (kept if already complete)."""
    done = sorted(glob.glob(str(folder / "wandb" / "offline-run-*" / "run-*.wandb")))
    if len(done) >= n_runs and (folder / "complete").is_file():
        return
    os.environ["WANDB_SILENT"] = "true"
    import wandb

    from lrscan.pipeline.config import TrainConfig
    from lrscan.pipeline.train.runwriter import history_writer

    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for i in range(len(done), n_runs):
        seed, (lre_min, lre_max) = i % SEEDS, RANGES[(i // SEEDS) % len(RANGES)]
        config = TrainConfig(steps=n_steps, seed=seed, lre_min=lre_min, lre_max=lre_max, data="names.txt").to_dict()
        run = wandb.init(mode="offline", dir=str(folder), project="lrscan", group="bench", job_type="train",
                         config=config, id=f"bench{n_runs}x{i:03d}", name=f"seed{seed}-{lre_min}",
                         settings=wandb.Settings(console="off", x_disable_stats=True,
                                                 x_server_side_derived_summary=True))
        write = history_writer(run)
        rng = np.random.default_rng(seed)
        lre = np.linspace(lre_min, lre_max, n_steps)
        # a range test's loss: falls with the lr, bottoms out near lre -1, then climbs; plus noise
        loss = 2.2 + 0.4 * (lre + 1.0) ** 2 + 0.05 * rng.standard_normal(n_steps)
        for at in range(0, n_steps, CHUNK_STEPS):
            part = slice(at, min(at + CHUNK_STEPS, n_steps))
            steps = np.arange(part.start, part.stop)
            write(steps, {"lr": 10.0 ** lre[part], "lre": lre[part], "loss": loss[part],
                          "log10_loss": np.log10(loss[part])}, {})
        run.summary.update({"train_loss": float(loss[-1]), "final_step": n_steps - 1})
        run.finish(exit_code=0)
        print(f"  run {i + 1}/{n_runs} written ({time.perf_counter() - start:.0f} s)", flush=True)
    wandb.teardown()
    (folder / "complete").write_text("")


def tree_rss_bytes(pid: int) -> int:
    """The resident memory of `pid` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # after the command: state, ppid, ..., rss (pages) is field 24 of stat, index 21 here
        children.setdefault(int(fields[1]), []).append(int(entry))
        rss[int(entry)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += rss.get(p, 0)
        todo.extend(children.get(p, ()))
    return total


def measure(argv: list[str], code: Path) -> tuple[float, int, str, float]:
    """(wall seconds, peak RSS of the process tree in bytes, the pick's line, CPU seconds of the process tree)
    of one command run from `code`. The CPU seconds (user + system, the command and the workers it waited
    for) barely move with the machine's load, where the wall time does."""
    env = {**os.environ, "PYTHONPATH": str(code), "WANDB_SILENT": "true"}
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=code, env=env)
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, tree_rss_bytes(proc.pid))
            stop.wait(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = proc.communicate()
    seconds = time.perf_counter() - start
    now = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = now.ru_utime + now.ru_stime - used.ru_utime - used.ru_stime
    stop.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}):\n{out}")
    lines = [line for line in out.splitlines() if line.strip()]
    return seconds, peak, next((line for line in lines if line.startswith("picked")), lines[-1] if lines else ""), cpu


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200_000)
    parser.add_argument("--sizes", default="10,50", help="numbers of runs, comma-separated")
    parser.add_argument("--dir", default="")
    parser.add_argument("--repeat", type=int, default=1, help="runs of the analysis per size (the best is kept)")
    parser.add_argument("--write-only", action="store_true")
    parser.add_argument("--before", default="", help="another lrscan checkout to time side by side (e.g. main's)")
    args = parser.parse_args(argv)
    root = Path(args.dir or Path(tempfile.gettempdir()) / f"lrscan-bench-analysis-{args.steps}")
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    for n in sizes:
        write_runs(root / f"runs-{n}", n, args.steps)
    if args.write_only:
        return
    print(f"cores this process may use: {len(os.sched_getaffinity(0))}, load average {os.getloadavg()[0]:.1f}")
    checkouts = {"this": Path(__file__).resolve().parents[1]}
    if args.before:
        checkouts = {"before": Path(args.before).resolve(), **checkouts}
    rows = []
    for n in sizes:
        best: dict[str, tuple[float, int, str, float]] = {}
        for _ in range(args.repeat):
            for name, code in checkouts.items():  # alternately, so both see the same machine
                with tempfile.TemporaryDirectory() as tmp:
                    result = measure([sys.executable, "-m", "lrscan.analysis", str(root / f"runs-{n}"), "--out",
                                      str(Path(tmp) / "report"), "--n-boot", "1000"], code)
                if name not in best or result[0] < best[name][0]:
                    best[name] = result
        for name, (seconds, peak, line, cpu) in best.items():
            print(f"{name}: {n} runs x {args.steps} steps ({n * args.steps / 1e6:.0f}M rows): python -m analysis "
                  f"{seconds:.1f} s ({cpu:.1f} s of CPU), peak RSS {peak / 2**20:.0f} MiB (process tree); {line}",
                  flush=True)
            rows.append({"runs x steps": f"{n} x {args.steps}", "code": name, "wall s": round(seconds, 1),
                         "CPU s": round(cpu, 1), "peak RSS MiB (process tree)": round(peak / 2**20), "pick": line})
        if len(best) == 2:
            (b_s, b_rss, b_line, b_cpu), (t_s, t_rss, t_line, t_cpu) = best.values()
            print(f"{n} runs: {b_s / t_s:.2f}x faster ({b_cpu / t_cpu:.2f}x less CPU), {t_rss / b_rss:.2f}x the "
                  f"memory; same pick: {b_line == t_line}", flush=True)
    if rows:
        record("analysis", "`python -m analysis` at sweep scale: wall, CPU and peak memory",
               rows, target="10 runs x 200k steps in <= 15 s and <= 0.5 GiB; 50 runs in <= 0.75 GiB",
               note=f"best of {args.repeat} per size; `--n-boot 1000`.")


if __name__ == "__main__":
    main()
