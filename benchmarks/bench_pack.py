"""Packed sweeps against one process per point, through the runner; and the pack's logger design, measured.

    python benchmarks/bench_pack.py [--seeds 16] [--steps 1000] [--workers N] [--data data/names.txt]
    python benchmarks/bench_pack.py --loggers [--members 8] [--steps 20000]
    python benchmarks/bench_pack.py --threads [--members 8] [--steps 1000]

Default: a range test over `--seeds` seeds (lre -3..0, `--steps` steps each, the study's range model),
run twice through `python -m pipeline.sweep`, side by side in one invocation: with `--pack=1` (one
process per point: today's behaviour) and packed (`--pack` = seeds). Both timed wall-clock from
launch to exit, start-up and W&B included, every step logged offline. Prints both and the ratio
(target >= 3x).

--loggers: the measurement behind pipeline/pack/logger.py's design. K runs of `--steps` rows each
logged offline with lrscan's history writer, (a) one logger process per run (pipeline.train's
RunLogger, K processes each with its wandb-core) and (b) one process holding the K runs
(`reinit="create_new"`, one wandb-core); prints wall time, CPU seconds and peak memory of each
process tree (sampled from /proc every 50 ms).

--threads: what a second core would give the packed step itself: the stacked step of `--members`
members on one thread, then with its rows split over two threads (one intra-op thread each, so every
member's numbers stay those of its run alone), interleaved, three times.

The machine is shared and noisy: compare ratios, not absolute times.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from record import record  # noqa: E402
from scratch import scratch_dir  # noqa: E402
from sweep_timing import sweep_seconds  # noqa: E402

from lrscan.pipeline.sweep.runner import default_workers  # noqa: E402
from lrscan.pipeline.sweep.spec import load_sweep  # noqa: E402


def range_sweep(workdir: str, seeds: int, steps: int, pack: int) -> Path:
    path = Path(workdir) / f"bench_pack{pack}.yaml"
    path.write_text(textwrap.dedent(f"""\
        # benchmark: a {seeds}-seed range test of {steps} steps
        program: pipeline/train/__main__.py
        command: ["${{env}}", python3, -m, lrscan.pipeline.train, "${{args}}"]
        method: grid
        parameters:
          schedule: {{value: range}}
          steps: {{value: {steps}}}
          lre_min: {{value: -3.0}}
          lre_max: {{value: 0.0}}
          samples: {{value: 0}}
          seed: {{values: {list(range(1, seeds + 1))}}}
        """))
    assert len(load_sweep(path).points) == seeds
    return path


# -- the logger measurement -----------------------------------------------------------------------


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                kids.setdefault(ppid, []).append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    return kids


def _tree(root: int, kids: dict[int, list[int]]) -> list[int]:
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += kids.get(p, [])
    return out


def _rss_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024
    except (OSError, StopIteration):
        return 0.0


def _cpu_s(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


class _Sampler(threading.Thread):
    """Peak memory and CPU seconds of process trees, sampled from /proc (a process's last sample counts)."""

    def __init__(self, roots):
        super().__init__(daemon=True)
        self.roots, self.peak_mib, self.cpu, self.done = roots, 0.0, {}, False

    def run(self) -> None:
        while not self.done:
            kids = _children()
            pids = [p for r in self.roots() for p in _tree(r, kids)]
            self.peak_mib = max(self.peak_mib, sum(_rss_mib(p) for p in pids))
            for p in pids:
                self.cpu[p] = max(self.cpu.get(p, 0.0), _cpu_s(p))
            time.sleep(0.05)


@contextlib.contextmanager
def _sampled(roots) -> Iterator[dict[str, float]]:
    """The block's wall seconds, and the CPU seconds and peak memory of the process trees `roots()` names meanwhile:
    {"wall_s", "cpu_s", "peak_mib"}, filled when the block ends (both logger layouts are timed this one way)."""
    sampler = _Sampler(roots)
    sampler.start()
    out: dict[str, float] = {}
    t0 = time.perf_counter()
    try:
        yield out
    finally:
        out["wall_s"] = time.perf_counter() - t0
        sampler.done = True
        sampler.join()
        out["cpu_s"], out["peak_mib"] = sum(sampler.cpu.values()), sampler.peak_mib


def _columns(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {"lr": np.full(n, 0.1), "lre": np.full(n, -1.0), "loss": rng.random(n) + 2, "log10_loss": rng.random(n)}


def one_logger_per_run(members: int, steps: int) -> tuple[float, float, float]:
    from lrscan.pipeline.train.tracking import InitArgs, RunLogger

    rng = np.random.default_rng(0)
    loggers = [RunLogger(InitArgs(run_id=f"sep{k}", mode="offline", project="bench", entity="", group="", name="",
                                  tags=(), job_type="train", config={"k": k}, resume=False, define_lre_axis=False))
               for k in range(members)]
    with _sampled(lambda: [lg.pid for lg in loggers]) as took:
        for lg in loggers:
            lg.start()
        for start in range(0, steps, 256):
            n = min(256, steps - start)
            for lg in loggers:
                lg.log_steps(np.arange(start, start + n), _columns(n, rng))
        for lg in loggers:
            lg.finish(0)
    return took["wall_s"], took["cpu_s"], took["peak_mib"]


def one_logger_for_all(members: int, steps: int) -> tuple[float, float, float]:
    from lrscan.pipeline.pack.logger import PackLogger
    from lrscan.pipeline.train.tracking import InitArgs

    rng = np.random.default_rng(0)
    pack = PackLogger([InitArgs(run_id=f"one{k}", mode="offline", project="bench", entity="", group="", name="",
                                tags=(), job_type="train", config={"k": k}, resume=False, define_lre_axis=False)
                       for k in range(members)])
    with _sampled(lambda: [pack.pid]) as took:
        pack.start()
        handles = [pack.member(k) for k in range(members)]
        for start in range(0, steps, 256):
            n = min(256, steps - start)
            for h in handles:
                h.log_steps(np.arange(start, start + n), _columns(n, rng))
        pack.close(0)
    return took["wall_s"], took["cpu_s"], took["peak_mib"]


def threads_step_us(members: int, threads: int, steps: int, data: str) -> float:
    """us per step of `members` stacked MLPs (the lecture's model), their rows split over `threads` threads,
    each thread stepping its rows with one intra-op thread (as exact as one thread: members never mix)."""
    import torch

    from lrscan.pipeline.pack.stacked_mlp import StackedMLP, StackedSGDStep
    from lrscan.pipeline.train.data import batch_indices, load_splits

    splits = load_splits(data, 3, 42)
    Xtr, Ytr = splits.train
    V = len(splits.vocab)
    stack = StackedMLP.stack_rows([torch.randn(11897) * 0.1 for _ in range(members)], V, 3, 10, 200)
    ix = torch.stack([batch_indices(k, 0, steps, Xtr.shape[0], 32) for k in range(members)], 1)  # (n, K, B)
    X, Y = Xtr[ix].view(steps, members, -1), Ytr[ix]                                          # (n, K, B * 3), (n, K, B)
    parts = [(a, min(members, a + -(-members // threads))) for a in range(0, members, -(-members // threads))]
    step_fns = [StackedSGDStep(StackedMLP(V, 3, 10, 200, stack.flat[a:b], stack.grad[a:b])) for a, b in parts]
    alphas = step_fns[0].alphas(torch.full((steps, members), 0.1, dtype=torch.float64), 32)   # (n, K)

    def run(j: int) -> None:
        torch.set_num_threads(1)
        a, b = parts[j]
        for i in range(steps):
            step_fns[j](X[i, a:b], Y[i, a:b], alphas[i, a:b])

    from concurrent.futures import ThreadPoolExecutor

    t0 = time.perf_counter()
    with ThreadPoolExecutor(len(parts)) as pool:
        list(pool.map(run, range(len(parts))))
    return 1e6 * (time.perf_counter() - t0) / steps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=16)
    ap.add_argument("--steps", type=int, default=None, help="steps per run (default 1000; --loggers: 20000)")
    ap.add_argument("--workers", type=int, default=default_workers())
    ap.add_argument("--data", default=os.environ.get("LRSCAN_DATA", "data/names.txt"))
    ap.add_argument("--loggers", action="store_true", help="measure the logger designs instead")
    ap.add_argument("--members", type=int, default=8, help="--loggers, --threads: runs logged / stacked at once")
    ap.add_argument("--threads", action="store_true",
                    help="the batched step of --members members on one thread vs its rows split over two")
    args = ap.parse_args()
    if args.threads:
        steps = args.steps or 1000
        rows = []
        for repeat in range(3):  # interleaved: the machine is shared
            one, two = (threads_step_us(args.members, t, steps, args.data) for t in (1, 2))
            print(f"repeat {repeat + 1}/3: {args.members} members, one thread {one:5.0f} us/step, two threads "
                  f"{two:5.0f} us/step: {one / two:.2f}x", flush=True)
            rows.append({"repeat": repeat + 1, "one thread µs/step": round(one), "two threads µs/step": round(two),
                         "ratio": f"{one / two:.2f}x"})
        record("pack_threads", f"A pack's batched step of {args.members} members on one thread and on two", rows,
               note=f"{steps} steps of the makemore MLP's stacked step.")
        return
    os.environ.setdefault("WANDB_SILENT", "true")
    workdir = scratch_dir("lrscan-bench-pack-")
    os.environ["WANDB_DIR"] = workdir
    if args.loggers:
        steps = args.steps or 20000
        rows = []
        for name, measure in (("one logger process per run", one_logger_per_run),
                              ("one process, K runs (create_new)", one_logger_for_all)):
            wall, cpu, peak = measure(args.members, steps)
            print(f"{name:34s} K={args.members} x {steps} rows: wall {wall:6.1f} s, CPU {cpu:6.1f} s, "
                  f"peak memory {peak:6.0f} MiB", flush=True)
            rows.append({"logger design": name, "wall s": round(wall, 1), "CPU s": round(cpu, 1),
                         "peak MiB": round(peak)})
        record("pack_loggers", f"Logging {args.members} runs x {steps} rows: one process against one per run", rows)
        return
    steps = args.steps or 1000
    alone = sweep_seconds(range_sweep(workdir, args.seeds, steps, 1), args.data, args.workers, 1,
                          os.path.join(workdir, "runs-pack1"))
    print(f"pipeline.sweep --pack=1,  {args.workers} workers: {alone:7.1f} s", flush=True)
    packed = sweep_seconds(range_sweep(workdir, args.seeds, steps, args.seeds), args.data, args.workers, args.seeds,
                           os.path.join(workdir, f"runs-pack{args.seeds}"))
    print(f"pipeline.sweep --pack={args.seeds}, {args.workers} workers: {packed:7.1f} s", flush=True)
    print(f"\n{args.seeds}-seed range test x {steps} steps, {os.cpu_count()} cores")
    print(f"speed-up of packs over one process per point: {alone / packed:.2f}x  (target >= 3x)")
    record("pack", "A range test's seeds through the runner: packed against one process per point",
           [{"side": "--pack=1", "s": round(alone, 1), "speed-up": "1"},
            {"side": f"--pack={args.seeds}", "s": round(packed, 1), "speed-up": f"{alone / packed:.2f}x"}],
           target="packed >= 3x --pack=1",
           note=f"{args.seeds}-seed range test x {steps} steps, `--workers {args.workers}`, every step logged offline.")


if __name__ == "__main__":
    main()
