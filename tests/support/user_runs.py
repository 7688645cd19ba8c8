"""Runs logged by other people's training code: small plain wandb scripts in the styles users write.

Each script is what a user would write (no lrscan import, no job type, no `schedule` in its config),
runs in its own process, offline, and also saves what it logged to `logged.json` beside its run:
the tests' ground truth, independent of any reader. The training step is a stand-in whose loss is
lowest at lr = 10**BEST_LRE, so a range test's pick is known.

    seed_loop    makemore's range test: lr = 10**linspace(-3, 0, 1000), `wandb.log({"lr", "loss"})`, no step
    lightning    Lightning's names and calls: LearningRateMonitor's lr-SGD (and lr-SGD-momentum) at batch
                 start, then `self.log("loss", on_step=True, on_epoch=True)` as loss_step, each call a W&B
                 row of its own carrying trainer/global_step (WandbLogger)
    hf_trainer   the HF Trainer's WandbCallback: train/loss (mean since the last log) and train/learning_rate
                 every 10 steps (logging_steps=10), eval/loss every 500, train/global_step on every row
    alternating  lr and loss on alternating W&B steps: `log({"lr"})` before the update, `log({"loss"})` after
    step_decay   lr 0.1 then 0.01 from step BOUNDARY, no config at all (two runs: boundaries 600 and 1200)
    cosine       linear warm-up then cosine decay, logged as learning_rate and train_loss
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from tests.support.runfiles import wait_until_written

BEST_LRE = -1.5

PRELUDE = '''
import json, math, random
import wandb

random.seed({seed})
BEST_LRE = {best_lre}
logged = []

def step_loss(lr):
    """A training step's loss, lowest at lr = 10**BEST_LRE: a stand-in for a model."""
    return 2.0 + (math.log10(lr) - BEST_LRE) ** 2 + random.gauss(0.0, 0.03)

def log(run, row, **kwargs):
    run.log(row, **kwargs)
    logged.append(row)

run = wandb.init(project="mine", id="{run_id}", config={config}, settings=wandb.Settings(console="off"))
'''

BODIES = {
    "seed_loop": '''
steps = 1000
lre = [-3.0 + 3.0 * i / (steps - 1) for i in range(steps)]
for i in range(steps):
    lr = 10 ** lre[i]
    log(run, {"lr": lr, "loss": step_loss(lr)})
''',
    "lightning": '''
run.define_metric("trainer/global_step")
run.define_metric("*", step_metric="trainer/global_step", step_sync=True)
for step in range(800):
    lr = 10 ** (-4.0 + 4.0 * step / 799)
    log(run, {"lr-SGD": lr, "lr-SGD-momentum": 0.9, "trainer/global_step": step})
    log(run, {"loss_step": step_loss(lr), "epoch": 0, "trainer/global_step": step})
log(run, {"loss_epoch": 2.5, "epoch": 0, "trainer/global_step": 799})
''',
    "hf_trainer": '''
run.define_metric("train/global_step")
run.define_metric("*", step_metric="train/global_step", step_sync=True)
recent = []
for step in range(1, 2001):
    lr = 10 ** (-4.0 + 4.0 * (step - 1) / 1999)
    recent.append(step_loss(lr))
    if step % 10 == 0:
        log(run, {"train/loss": sum(recent) / len(recent), "train/learning_rate": lr, "train/grad_norm": 1.0,
                  "train/epoch": step / 2000, "train/global_step": step})
        recent = []
    if step % 500 == 0:
        log(run, {"eval/loss": 2.6, "eval/runtime": 0.5, "train/epoch": step / 2000, "train/global_step": step})
''',
    "alternating": '''
for i in range(1000):
    lr = 10 ** (-3.0 + 3.0 * i / 999)
    log(run, {"lr": lr})
    log(run, {"loss": step_loss(lr)})
''',
    "step_decay": '''
progress = 0.0
for i in range(2000):
    lr = 0.1 if i < {boundary} else 0.01
    progress += lr
    # a higher lr learns faster, a lower one settles lower
    log(run, {{"lr": lr, "loss": 2.0 + 1.5 * math.exp(-progress / 20) + 2.0 * lr + random.gauss(0.0, 0.01)}})
''',
    "cosine": '''
for i in range(2000):
    lr = 0.1 * i / 200 if i < 200 else 0.05 * (1 + math.cos(math.pi * (i - 200) / 1800))
    log(run, {"learning_rate": lr, "train_loss": 2.0 + 1.0 / (1 + i / 100) + random.gauss(0.0, 0.01)})
''',
}

EPILOGUE = '''
run.finish()
wandb.teardown()  # waits for wandb-core to write the whole log
with open("logged.json", "w") as f:
    json.dump(logged, f)
'''

# folder name -> (style, run id, format values)
USER_RUNS: dict[str, tuple[str, str, dict]] = {
    "seed_loop": ("seed_loop", "seedloop1", {}),
    "lightning": ("lightning", "lightning1", {}),
    "hf_trainer": ("hf_trainer", "hftrainer1", {}),
    "alternating": ("alternating", "alternating1", {}),
    "step_decay_600": ("step_decay", "decay600", {"boundary": 600}),
    "step_decay_1200": ("step_decay", "decay1200", {"boundary": 1200}),
    "cosine": ("cosine", "cosine1", {}),
}
RANGE_STYLES = ("seed_loop", "lightning", "hf_trainer", "alternating")


def script(style: str, run_id: str, seed: int = 0, config: Mapping | None = None, **values: object) -> str:
    prelude = PRELUDE.format(seed=seed, best_lre=BEST_LRE, run_id=run_id, config=dict(config or {}))
    body = BODIES[style].format(**values) if values else BODIES[style]
    return prelude + body + EPILOGUE


def write_user_runs(root: Path, timeout_seconds: float = 240.0) -> dict[str, Path]:
    """Run every script at once, each in `root/<name>`; {name: its folder} once all have finished."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(WANDB_MODE="offline", WANDB_SILENT="true")
    started = {}
    for name, (style, run_id, values) in USER_RUNS.items():
        folder = root / name
        folder.mkdir(parents=True)
        started[name] = subprocess.Popen(
            [sys.executable, "-c", script(style, run_id, **values)], cwd=folder, env={**env, "WANDB_DIR": str(folder)},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for name, process in started.items():
        out, _ = process.communicate(timeout=timeout_seconds)
        if process.returncode != 0:
            raise RuntimeError(f"user script {name} failed:\n{out}")
        wait_until_written(run_file(root / name))
    return {name: root / name for name in USER_RUNS}


def logged(folder: Path) -> list[dict]:
    """What a user script logged, call by call."""
    return json.loads((folder / "logged.json").read_text())


def run_file(folder: Path) -> Path:
    [path] = folder.glob("wandb/offline-run-*/run-*.wandb")
    return path


def expected_steps(name: str, folder: Path) -> pd.DataFrame:
    """``step, lr, loss`` as the analysis should read a range-test script's run, built from its logged.json.

    W&B numbers the calls 0, 1, 2, ... (no script passes a step); the step is that number, or the
    logged global step where the style logs one; the lr is the one in force at the loss's step.
    """
    rows = logged(folder)
    if name == "seed_loop":
        table = [(i, r["lr"], r["loss"]) for i, r in enumerate(rows)]
    elif name == "alternating":  # call 2i logs the lr, call 2i + 1 the loss
        table = [(i + 1, rows[i]["lr"], rows[i + 1]["loss"]) for i in range(0, len(rows) - 1, 2)]
    elif name == "lightning":  # per global step: the lr monitor's row, then the metrics' row
        table = [(lr_row["trainer/global_step"], lr_row["lr-SGD"], loss_row["loss_step"])
                 for lr_row, loss_row in zip(rows[0:-1:2], rows[1::2])]
    elif name == "hf_trainer":
        table = [(r["train/global_step"], r["train/learning_rate"], r["train/loss"]) for r in rows if "train/loss" in r]
    else:
        raise ValueError(f"{name} is not a range-test script")
    step, lr, loss = zip(*table)
    return pd.DataFrame({"step": np.array(step, np.int64), "lr": np.array(lr, np.float64),
                         "loss": np.array(loss, np.float32)})
