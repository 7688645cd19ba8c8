"""The demo study with the prove stage against the same study without it (--no-prove), side by side.

    python benchmarks/bench_prove.py [--size demo] [--data data/names.txt]

Runs `python -m pipeline.study --size=SIZE` twice into fresh temporary folders, first with
`--no-prove` (range test -> pick -> decay grid), then with the prove stage (5-6 candidates x 3 seeds
at a constant lr for a third of the decay grid's steps, packed), and prints both wall-clock times
and their ratio; the target is under 2x. Measured in one invocation; the machine is shared and
noisy, so compare the ratio, not the absolute times.
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
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="lrscan-bench-prove-") as tmp:
        without = timed_study(Path(tmp) / "no-prove", args.size, args.data, "--no-prove")
        with_prove = timed_study(Path(tmp) / "prove", args.size, args.data)
    print(f"study --size={args.size} --no-prove: {without:7.1f} s")
    print(f"study --size={args.size} (prove):    {with_prove:7.1f} s")
    print(f"ratio prove / no-prove: {with_prove / without:.2f}x (target < 2x)")
    record("prove", "The study with the prove stage against the same study without it",
           [{"study": f"--size={args.size} --no-prove", "wall s": round(without, 1), "ratio": "1"},
            {"study": f"--size={args.size} (prove)", "wall s": round(with_prove, 1),
             "ratio": f"{with_prove / without:.2f}x"}],
           target="the prove stage costs less than 2x the study without it")


if __name__ == "__main__":
    main()
