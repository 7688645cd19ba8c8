"""Whether each optimizer family's default range holds the loss minimum and the turn, on four real models.

    python benchmarks/bench_default_range.py [--steps 1000] [--seeds 3] [--data data/names.txt] [--only NAME]

The range test runs with no ends given, so `lrscan.default_range(optimizer)` chooses them, over `--seeds` seeds
(the factory form, W&B disabled: only the curve matters here), on:
  mlp        the makemore MLP with SGD (lrscan's own task)                           -> SGD-like, 1e-3..1
  wavenet    examples/wavenet.py: makemore's WaveNet with AdamW                      -> Adam-like, 1e-5..1e-1
  lightning  a LightningModule (char MLP, AdamW with weight-decay groups) + its DataModule, through
             `lrscan.task_from_lightning` (the model of benchmarks/bench_lightning_hf.py)
  hf         a 1-layer GPT-2 (transformers) trained by an HF Trainer with its own AdamW, through
             `lrscan.task_from_hf_trainer` (the model of benchmarks/bench_lightning_hf.py)
For each: the range chosen, the pick and where the smoothed mean curve is lowest, whether the loss turned up
(`result.range_check`), and the figure of its curve (docs/figures/default_range_<name>.png).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from record import record  # noqa: E402
from scratch import scratch_dir  # noqa: E402

import lrscan  # noqa: E402
from lrscan.pipeline.config import default_data_path  # noqa: E402
from lrscan.pipeline.train.data import load_splits  # noqa: E402

FIGURES = Path(__file__).resolve().parent.parent / "docs" / "figures"
MODELS = {"mlp": "makemore MLP + SGD", "wavenet": "examples/wavenet.py + AdamW",
          "lightning": "LightningModule char MLP + AdamW", "hf": "HF Trainer 1-layer GPT-2 + AdamW"}


def factory(name: str, data: str):
    """`make(seed)` for one of MODELS, and the task_args range_test passes it."""
    if name == "mlp":
        from lrscan.pipeline.train.mlp_task import make

        return make, {"data": data}
    if name == "wavenet":
        from examples.wavenet import make

        return make, {"data": data}
    import bench_lightning_hf as models

    if name == "lightning":
        vocab = len(load_splits(data, models.BLOCK, 42).vocab)
        return lrscan.task_from_lightning(lambda seed: (models.CharMLP(vocab), models.Windows(data))), {}
    out = scratch_dir("lrscan-bench-hf-")
    return lrscan.task_from_hf_trainer(lambda seed: models.hf_trainer(data, seed, out)), {}


def measure(name: str, data: str, steps: int, seeds: list[int]) -> dict:
    make, task_args = factory(name, data)
    t0 = time.perf_counter()
    result = lrscan.range_test(make, seeds=seeds, steps=steps, task_args=task_args, wandb_mode="disabled")
    seconds = time.perf_counter() - t0
    check = result.range_check
    fig, ax = plt.subplots(figsize=(9, 4))
    result.plot(ax=ax)
    ax.set_title(f"{MODELS[name]}\nthe default range {result.range} ({len(seeds)} seeds x {steps} steps)")
    fig.tight_layout()
    fig.savefig(FIGURES / f"default_range_{name}.png", dpi=110)
    plt.close(fig)
    family = "Adam-like" if "Adam-like" in result.range.why else "SGD-like"
    row = {"model": MODELS[name], "default range": f"{result.range} ({family})",
           "pick lr": f"{result.best_lr:.3g}", "steepest lr": f"{result.steepest_lr:.3g}",
           "holds the minimum": check.holds_minimum, "turns up": check.turns_up,
           "verdict": "holds both" if check.holds else check.message, "seconds": f"{seconds:.0f}"}
    print(row, flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--data", default=None)
    parser.add_argument("--only", choices=sorted(MODELS), action="append")
    a = parser.parse_args()
    data = a.data or str(default_data_path())
    torch.set_num_threads(1)
    os.environ.setdefault("WANDB_SILENT", "true")
    seeds = list(range(1, a.seeds + 1))
    rows = [measure(name, data, a.steps, seeds) for name in (a.only or MODELS)]
    record("default_range", "The default range on four models: does it hold the minimum and the turn?", rows,
           target="every model's default-range curve holds both the loss minimum and the turn where it climbs",
           note=f"{len(seeds)} seeds x {a.steps} steps each, no ends given (lrscan.default_range), W&B disabled, "
                "one thread; figures: docs/figures/default_range_<model>.png")


if __name__ == "__main__":
    main()
