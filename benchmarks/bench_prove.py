"""The demo study with its search (proving and the decay grid in one) against the same study with --no-prove; and
`prove()` on examples/wavenet.py packed against one run after another.

    python benchmarks/bench_prove.py [--size demo] [--data data/names.txt]
    python benchmarks/bench_prove.py --api [--steps 300]      # prove() on WaveNet: packed vs one after another

Runs `python -m pipeline.study --size=SIZE` twice into fresh temporary folders, first with `--no-prove`
(range test -> pick -> decay grid at the pick), then with the search (the suggesters' lrs x the decay grid's
options, paired over 3 seeds, judged at each decay step and the horizon, packed), and prints both wall-clock
times and their ratio; the target is at most 1.5x. `--api` times `lrscan.prove` on WaveNet (AdamW): the
candidates x 3 seeds in one pack, then the same runs with pack=1, and checks that both give the same losses.
Measured in one invocation; the machine is shared and noisy, so compare the ratios, with the load average.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from record import record  # noqa: E402


def timed_study(out: Path, size: str, data: str, *extra: str) -> float:
    env = {**os.environ, "LRSCAN_DATA": data, "WANDB_SILENT": "true", "WANDB_MODE": "offline"}
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "lrscan.pipeline.study", f"--size={size}", f"--out={out}", *extra],
                          cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the study failed ({' '.join(extra) or 'with prove'}):\n{done.stderr[-3000:]}")
    return time.monotonic() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="demo", choices=("demo", "full"))
    p.add_argument("--data", default=os.environ.get("LRSCAN_DATA") or str(REPO / "data" / "names.txt"))
    p.add_argument("--api", action="store_true", help="time prove() on WaveNet packed vs one after another")
    p.add_argument("--steps", type=int, default=300, help="--api: the horizon of each run")
    args = p.parse_args()
    if args.api:
        return api_packed_vs_alone(args.data, args.steps)
    with tempfile.TemporaryDirectory(prefix="lrscan-bench-prove-") as tmp:
        without = timed_study(Path(tmp) / "no-prove", args.size, args.data, "--no-prove")
        with_prove = timed_study(Path(tmp) / "prove", args.size, args.data)
    print(f"study --size={args.size} --no-prove: {without:7.1f} s")
    print(f"study --size={args.size} (prove):    {with_prove:7.1f} s")
    print(f"ratio search / no-prove: {with_prove / without:.2f}x (target <= 1.5x); {load()}")
    record("prove", "The study with the prove stage against the same study without it",
           [{"study": f"--size={args.size} --no-prove", "wall s": round(without, 1), "ratio": "1"},
            {"study": f"--size={args.size} (prove)", "wall s": round(with_prove, 1),
             "ratio": f"{with_prove / without:.2f}x"}],
           target="the study with its search costs at most 1.5x the study without it")


def load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def api_packed_vs_alone(data: str, steps: int) -> None:
    import numpy as np

    from lrscan.pipeline.study.prove_api import prove

    task, lrs = str(REPO / "examples" / "wavenet.py") + ":make", [1e-3, 3e-3, 1e-2, 3e-2]
    common = {"horizon": steps, "schedule": [(0.75, 0.1)], "seeds": [1, 2, 3], "task_args": {"data": data},
              "wandb_mode": "disabled"}
    t0 = time.monotonic()
    packed = prove(task, lrs, **common)
    t1 = time.monotonic()
    alone = prove(task, lrs, pack=1, **common)
    t2 = time.monotonic()
    same = np.allclose(packed.runs["loss"], alone.runs["loss"], rtol=1e-4)
    print(f"prove() on WaveNet, {len(lrs)} lrs x 3 seeds x {steps} steps: packed {t1 - t0:.1f} s, one after another "
          f"{t2 - t1:.1f} s -> {(t2 - t1) / (t1 - t0):.2f}x faster packed; same losses: {same}; {load()}")


if __name__ == "__main__":
    main()
