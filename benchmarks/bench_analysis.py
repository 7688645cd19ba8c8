"""Benchmark: `python -m analysis` at the scale of a real sweep (10 and 50 runs x 200k steps), wall time and peak RSS.

    .venv/bin/python benchmarks/bench_analysis.py [--steps 200000] [--sizes 10,50] [--dir DIR] [--repeat 1]
        [--before CHECKOUT]    # also time another checkout of lrscan (say main's), side by side
        [--writer script]      # runs a plain wandb script wrote, not lrscan

1. Makes the runs once (reused from DIR, default $TMPDIR/lrscan-bench-analysis-<steps>): real
   offline wandb range-test runs, 5 seeds over a few lre ranges, written by lrscan's own run writer
   (`pipeline.train.runwriter.history_writer`, the records `run.log` would send, a whole chunk per
   hand-off), one folder per size (`runs-10/`, `runs-50/`). With `--writer script`: runs as a plain
   wandb script writes them (`run.log` of lr, lre, loss, log10_loss every step, a nested dict every
   10th, NaN and inf rows, wandb's default summary records), in `script-runs-<n>/`: one run is
   logged, the others are its records under their own run ids, framed anew (logging 200k steps with
   `run.log` takes minutes a run).
2. Runs `python -m analysis <folder> --out <tmp>` as a subprocess on each size and measures its
   wall time, the CPU time and the peak RSS of its whole process tree (the analysis and any worker
   it starts), sampled from /proc every 50 ms. With --before, the same command from that checkout runs
   alternately with this one, and both picks must be the same numbers.

Speed and memory are measured here, never asserted in tests: the machine is noisy.
"""

from __future__ import annotations

import argparse
import glob
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

import numpy as np
from record import record

CHUNK_STEPS = 10_000
# one sample of the process tree's memory reads /proc/<pid>/stat of every process (~2 ms): every 10 ms took a
# fifth of a core from the analysis it measures on 2 cores; a peak that matters lasts far longer than 50 ms
SAMPLE_SECONDS = 0.05
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


PLAIN_SCRIPT = """
import math, random, sys
import wandb

n_steps = int(sys.argv[2])
random.seed(0)
run = wandb.init(mode="offline", dir=sys.argv[1], project="mine", id="script000",
                 config={"optimizer": "sgd", "batch_size": 32},
                 settings=wandb.Settings(console="off", x_disable_stats=True))
loss = 3.3
for i in range(n_steps):
    lre = -4.0 + 4.5 * i / (n_steps - 1)
    loss = 0.999 * loss + 0.001 * (2.0 + (lre + 1.5) ** 2) + random.gauss(0.0, 0.01)
    row = {"lr": 10 ** lre, "lre": lre, "loss": loss, "log10_loss": math.log10(abs(loss))}
    if i % 10 == 0:
        row["opt"] = {"momentum": 0.9, "grad_norm": abs(random.gauss(1.0, 0.3))}
    if i > 0.9 * n_steps and i % 97 == 13:  # the range test's end: lr too high, the loss diverges
        row["loss"] = row["log10_loss"] = float("nan")
    if i > 0.9 * n_steps and i % 101 == 17:
        row["loss"] = row["log10_loss"] = float("inf")
    run.log(row)
run.finish()
"""


def write_script_runs(folder: Path, n_runs: int, n_steps: int) -> None:
    """`n_runs` runs as a plain wandb script logs them, under `folder` (kept if already complete)."""
    if (folder / "complete").is_file():
        return
    first = folder / "logged"
    found = sorted(first.glob("wandb/offline-run-*/run-*.wandb"))
    if not found:
        start = time.perf_counter()
        first.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-c", PLAIN_SCRIPT, str(first), str(n_steps)], check=True,
                       env={**os.environ, "WANDB_SILENT": "true"})
        print(f"  the script logged {n_steps} steps in {time.perf_counter() - start:.0f} s", flush=True)
        found = sorted(first.glob("wandb/offline-run-*/run-*.wandb"))
    records = list(_records(found[-1].read_bytes()))
    from wandb.proto.wandb_internal_pb2 import Record

    for i in range(n_runs):
        run_id = f"script{i:03d}"
        out = []
        for payload in records:
            if b"script000" in payload:  # the run record names the run: the copy gets its own id
                parsed = Record()
                parsed.ParseFromString(payload)
                if parsed.WhichOneof("record_type") == "run":
                    parsed.run.run_id, parsed.run.display_name = run_id, f"script-{i}"
                    payload = parsed.SerializeToString()
            out.append(payload)
        run_dir = folder / "wandb" / f"offline-run-20260101_0000{i % 100:02d}-{run_id}"
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / f"run-{run_id}.wandb").write_bytes(_framed(out))
    shutil.rmtree(first)
    (folder / "complete").write_text("")


def _records(data: bytes):
    """The records of a clean .wandb file (leveldb-log framing in 32 KiB blocks after a 7-byte header)."""
    from lrscan.pipeline.runlog import BLOCK_BYTES, CHUNK_HEADER, FIRST, FULL, HEADER, LAST

    pos, parts = len(HEADER), []
    while pos + CHUNK_HEADER.size <= len(data):
        left = BLOCK_BYTES - pos % BLOCK_BYTES
        _, length, kind = CHUNK_HEADER.unpack_from(data, pos)
        if left < CHUNK_HEADER.size or kind == 0:
            pos += left
            continue
        payload = data[pos + CHUNK_HEADER.size : pos + CHUNK_HEADER.size + length]
        pos += CHUNK_HEADER.size + length
        parts = [payload] if kind in (FULL, FIRST) else [*parts, payload]
        if kind in (FULL, LAST):
            yield b"".join(parts)


def _framed(records: list[bytes]) -> bytes:
    """`records` framed as wandb-core writes them: FULL chunks, or FIRST/MIDDLE/LAST over block ends."""
    from lrscan.pipeline.runlog import BLOCK_BYTES, CHUNK_HEADER, FIRST, FULL, HEADER, LAST, MIDDLE

    out = bytearray(HEADER)
    for payload in records:
        first = True
        while True:
            left = BLOCK_BYTES - len(out) % BLOCK_BYTES
            if left < CHUNK_HEADER.size:
                out += bytes(left)  # the block's tail: zero padding
                continue
            piece, payload = payload[: left - CHUNK_HEADER.size], payload[left - CHUNK_HEADER.size :]
            kind = (FULL if not payload else FIRST) if first else (LAST if not payload else MIDDLE)
            out += CHUNK_HEADER.pack(zlib.crc32(piece, zlib.crc32(bytes([kind]))), len(piece), kind) + piece
            first = False
            if not payload:
                break
    return bytes(out)


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
            stop.wait(SAMPLE_SECONDS)

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
    parser.add_argument("--writer", choices=("lrscan", "script"), default="lrscan",
                        help="who wrote the runs: lrscan's run writer, or a plain wandb script")
    args = parser.parse_args(argv)
    root = Path(args.dir or Path(tempfile.gettempdir()) / f"lrscan-bench-analysis-{args.steps}")
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    prefix = "" if args.writer == "lrscan" else "script-"
    for n in sizes:
        if args.writer == "lrscan":
            write_runs(root / f"runs-{n}", n, args.steps)
        else:
            write_script_runs(root / f"script-runs-{n}", n, args.steps)
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
                    result = measure([sys.executable, "-m", "lrscan.analysis", str(root / f"{prefix}runs-{n}"), "--out",
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
        who = "lrscan's runs" if args.writer == "lrscan" else "runs a plain wandb script wrote"
        record("analysis" if args.writer == "lrscan" else "analysis-script",
               f"`python -m analysis` at sweep scale, {who}: wall, CPU and peak memory",
               rows, target="10 runs x 200k steps in <= 8 s and <= 0.5 GiB; 50 runs in <= 0.75 GiB",
               note=f"best of {args.repeat} per size; `--n-boot 1000`.")


if __name__ == "__main__":
    main()
