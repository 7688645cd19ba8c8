"""Runs written by the real training libraries users log with: Lightning and the HF Trainer, offline, tiny models.

Each library's script runs in its own process (offline W&B, a 4-8-1 MLP on a noisy linear map, a
few hundred steps) and writes, beside each run, `<run id>.json`: the ground truth read from the
library's own state at every training step (its global step, the lr of param group 0, the loss).
fastai, too heavy to install beside torch 2.13.0, has its runs committed with the script that wrote
them: tests/fixtures/user_runs/fastai/.

    lightning_every_step   LightningModule.log("train_loss", on_step=True, on_epoch=True) + WandbLogger +
                           LearningRateMonitor, log_every_n_steps=1: a geometric range test, 1e-4 -> 1
    lightning_own_loss     the same with log_every_n_steps=10, and the user's own
                           `self.logger.experiment.log({"loss": ...})` at every step (no step counter of its own)
    hf_range               Trainer(report_to=["wandb"], logging_steps=10) with a geometric LambdaLR: train/loss is
                           the mean over the last 10 steps
    hf_warm_up_step        the same with a warm-up from 0 over 30 steps, then lr x0.1 from step 120
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support.runfiles import wait_until_written

STEPS = 200
BATCH = 16
WARM_UP_STEPS, DECAY_STEP = 30, 120

COMMON = '''
import json, sys
import torch

STEPS, BATCH = {steps}, {batch}
WARM_UP_STEPS, DECAY_STEP = {warm_up_steps}, {decay_step}
def data():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(STEPS * BATCH, 4, generator=generator)
    return x, x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.1 * torch.randn(len(x), 1, generator=generator)

def mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))

def range_test(step):  # LambdaLR factor: 1e-4 -> 1 geometrically over the run
    return 10 ** (4 * step / (STEPS - 1))
'''

SCRIPTS = {
    "lightning": '''
import pytorch_lightning as pl
import wandb
from pytorch_lightning.callbacks import LearningRateMonitor
from pytorch_lightning.loggers import WandbLogger


class Model(pl.LightningModule):
    def __init__(self, own_loss):
        super().__init__()
        self.net, self.own_loss, self.truth = mlp(), own_loss, []

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        if self.own_loss:
            self.logger.experiment.log({"loss": loss.item()})
        lr = self.optimizers().param_groups[0]["lr"]
        self.truth.append({"step": self.global_step, "lr": lr, "loss": loss.item()})
        return loss

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=1e-4)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, range_test)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


x, y = data()
for run_id, every, own_loss in (("lightning_every_step", 1, False), ("lightning_own_loss", 10, True)):
    logger = WandbLogger(project="mine", id=run_id, offline=True)
    model = Model(own_loss)
    trainer = pl.Trainer(max_steps=STEPS, max_epochs=1, logger=logger, callbacks=[LearningRateMonitor("step")],
                         log_every_n_steps=every, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", devices=1)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=BATCH)
    trainer.fit(model, loader)
    wandb.finish()
    with open(run_id + ".json", "w") as f:
        json.dump(model.truth, f)
wandb.teardown()
''',
    "hf": '''
import wandb
from transformers import Trainer, TrainerCallback, TrainingArguments


class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = mlp()

    def forward(self, x, labels=None):
        out = self.net(x)
        return {"loss": torch.nn.functional.mse_loss(out, labels), "logits": out}


class Pairs(torch.utils.data.Dataset):
    def __init__(self):
        self.x, self.y = data()

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "labels": self.y[i]}


class Truth(TrainerCallback):
    """The lr each step trains with; the Trainer numbers steps from 1."""

    def __init__(self):
        self.rows = []

    def on_step_begin(self, args, state, control, optimizer=None, **kwargs):
        self.rows.append({"step": state.global_step + 1, "lr": optimizer.param_groups[0]["lr"]})


def warm_up_then_step(step):
    return step / WARM_UP_STEPS if step < WARM_UP_STEPS else 1.0 if step < DECAY_STEP else 0.1


for run_id, factor in (("hf_range", range_test), ("hf_warm_up_step", warm_up_then_step)):
    wandb.init(project="mine", id=run_id)  # the Trainer's WandbCallback logs to the run it finds
    model = Model()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4 if factor is range_test else 0.05)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    args = TrainingArguments(output_dir="out", report_to=["wandb"], run_name=run_id, max_steps=STEPS,
                             logging_steps=10 if factor is range_test else 5, per_device_train_batch_size=BATCH,
                             save_strategy="no", use_cpu=True, disable_tqdm=True, seed=0)
    truth = Truth()
    Trainer(model=model, args=args, train_dataset=Pairs(), optimizers=(optimizer, scheduler),
            callbacks=[truth]).train()
    wandb.finish()
    with open(run_id + ".json", "w") as f:
        json.dump(truth.rows, f)
wandb.teardown()
''',
}
RUNS = {"lightning": ("lightning_every_step", "lightning_own_loss"), "hf": ("hf_range", "hf_warm_up_step")}


def script(library: str) -> str:
    constants = {"steps": STEPS, "batch": BATCH, "warm_up_steps": WARM_UP_STEPS, "decay_step": DECAY_STEP}
    return COMMON.format(**constants) + SCRIPTS[library]


def write_library_runs(root: Path, timeout_seconds: float = 280.0) -> dict[str, Path]:
    """Run each library's script at once, in `root/<library>`; {run id: its run file} once all have finished."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(WANDB_MODE="offline", WANDB_SILENT="true", WANDB_PROJECT="mine", TOKENIZERS_PARALLELISM="false",
               HF_HUB_OFFLINE="1", PYTHONWARNINGS="ignore")
    started = {}
    for library in SCRIPTS:
        folder = root / library
        folder.mkdir(parents=True)
        started[library] = subprocess.Popen(
            [sys.executable, "-c", script(library)], cwd=folder, env={**env, "WANDB_DIR": str(folder)},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    files = {}
    for library, process in started.items():
        out, _ = process.communicate(timeout=timeout_seconds)
        if process.returncode != 0:
            raise RuntimeError(f"{library} script failed:\n{out[-4000:]}")
        for run_id in RUNS[library]:
            [path] = (root / library).glob(f"wandb/offline-run-*-{run_id}/run-{run_id}.wandb")
            wait_until_written(path)
            files[run_id] = path
    return files


def truth(run_file: Path) -> list[dict]:
    """What the library itself held at each training step of the run (step, lr of group 0, and the loss where read)."""
    run_id = run_file.stem.removeprefix("run-")
    folder = run_file.parent.parent.parent
    return json.loads((folder / f"{run_id}.json").read_text())
