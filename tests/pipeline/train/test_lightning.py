"""A real LightningModule + LightningDataModule as a Task: the same curves as the model written by hand, nothing left
changed, what cannot be honoured refused in one line, the found lr applied where Lightning users set theirs."""

from __future__ import annotations

import copy
import random

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import lrscan
from lrscan.pipeline.errors import LrscanError
from lrscan.pipeline.study.range_test import range_test
from lrscan.pipeline.train import rngstate
from lrscan.pipeline.train.lightning import task_from_lightning
from lrscan.pipeline.train.task import Task

FAST = {"wandb_mode": "disabled", "num_threads": 1}
N_TRAIN, N_VAL, BATCH = 192, 64, 32


def data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N_TRAIN + N_VAL, 4, generator=g)
    return x, x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.1 * torch.randn(len(x), 1, generator=g)


def mlp() -> torch.nn.Sequential:
    return torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))


class Net(pl.LightningModule):
    def __init__(self, lr: float = 1e-3, weight_decay: float = 0.01):
        super().__init__()
        self.save_hyperparameters()
        self.net = mlp()

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.mse_loss(self.net(x), y)
        self.log("train_loss", loss, on_step=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.mse_loss(self.net(x), y))
        self.log("val_mae", (self.net(x) - y).abs().mean())

    def configure_optimizers(self):
        decay = [p for p in self.parameters() if p.ndim >= 2]
        no_decay = [p for p in self.parameters() if p.ndim < 2]
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": self.hparams.weight_decay},
                                       {"params": no_decay, "weight_decay": 0.0, "lr": self.hparams.lr / 10}],
                                      lr=self.hparams.lr)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=10)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class Data(pl.LightningDataModule):
    def __init__(self, shuffle: bool = False):
        super().__init__()
        self.shuffle = shuffle

    def setup(self, stage):
        x, y = data()
        self.train_set = TensorDataset(x[:N_TRAIN], y[:N_TRAIN])
        self.val_set = TensorDataset(x[N_TRAIN:], y[N_TRAIN:])

    def train_dataloader(self):
        return DataLoader(self.train_set, batch_size=BATCH, shuffle=self.shuffle)

    def val_dataloader(self):
        return DataLoader(self.val_set, batch_size=BATCH)


def make(seed: int, shuffle: bool = False):
    return Net(), Data(shuffle)


def by_hand(seed: int) -> Task:
    """The same model, optimizer, batches and held-out loss written as a Task."""
    model = mlp()  # lrscan seeds the global generators with `seed` before make, as before Net() above
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                                   {"params": no_decay, "weight_decay": 0.0, "lr": 1e-4}], lr=1e-3)
    x, y = data()
    per_epoch = N_TRAIN // BATCH

    def batch(i):
        j = i % per_epoch
        return x[j * BATCH:(j + 1) * BATCH], y[j * BATCH:(j + 1) * BATCH]

    def evaluate(model):
        xv, yv = x[N_TRAIN:], y[N_TRAIN:]
        return {"dev_loss": F.mse_loss(model(xv), yv).item()}

    return Task(model, optimizer, batch, lambda m, b: F.mse_loss(m(b[0]), b[1]), evaluate=evaluate)


@pytest.mark.slow
def test_range_test_and_prove_on_a_lightning_module_equal_the_task_written_by_hand(capsys) -> None:
    kwargs = {"seeds": [1, 2], "steps": 40, "lre_min": -4, "lre_max": 0, "eval_every_steps": 10, **FAST}
    adapted = range_test(task_from_lightning(make), **kwargs)
    assert "not packed" not in capsys.readouterr().out  # the module packs: its seeds train as one vmapped pack
    hand = range_test(by_hand, **kwargs)
    assert len(adapted.steps) == len(hand.steps) > 40
    for column in ("lr", "loss", "smooth_loss"):
        np.testing.assert_allclose(adapted.steps[column], hand.steps[column], rtol=1e-6, err_msg=column)
    evals = adapted.steps["dev_loss"].notna()
    np.testing.assert_allclose(adapted.steps.loc[evals, "dev_loss"], hand.steps.loc[evals, "dev_loss"], rtol=1e-5)
    assert adapted.steps.loc[evals, "val_mae"].gt(0).all()  # what validation_step logs besides comes too
    assert adapted.best_lr == hand.best_lr
    assert any("StepLR that configure_optimizers returns is not stepped" in n for n in adapted.notes)

    proof = adapted.prove(steps=20, seeds=[1, 2], **FAST)
    assert proof.judged_by == "dev_loss" and len(proof.runs) == 2 * len(proof.table)
    assert any("StepLR" in n for n in proof.notes) and "note: the StepLR" in str(proof)


def test_shuffled_batches_are_the_loaders_own_permutation_and_depend_on_seed_and_step_alone() -> None:
    task = task_from_lightning(make)(1, shuffle=True)
    per_epoch = N_TRAIN // BATCH
    x, _ = data()
    first = [task.batches(i)[0] for i in range(per_epoch)]
    rows = torch.cat(first)
    assert sorted(rows[:, 0].tolist()) == sorted(x[:N_TRAIN, 0].tolist())  # each item once per epoch
    assert not torch.equal(rows, x[:N_TRAIN])                               # shuffled
    again = task_from_lightning(make)(1, shuffle=True)
    assert torch.equal(again.batches(per_epoch + 2)[0], task.batches(per_epoch + 2)[0])  # (seed, i) alone
    assert not torch.equal(task.batches(per_epoch)[0], task.batches(0)[0])              # a new order per epoch
    other = task_from_lightning(make)(2, shuffle=True)
    assert not torch.equal(other.batches(0)[0], task.batches(0)[0])


@pytest.mark.slow
def test_nothing_the_user_passed_is_left_changed() -> None:
    torch.manual_seed(0)
    model, dm = Net(), Data(shuffle=True)
    trainer = pl.Trainer(max_steps=3, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, accumulate_grad_batches=2,
                         gradient_clip_val=0.5)
    trainer.fit(model, datamodule=dm)  # a module that has trained: its trainer holds optimizer state
    model.net[0].bias.requires_grad_(False)
    model.net[2].eval()
    weights = copy.deepcopy(model.state_dict())
    optimizer_state = copy.deepcopy(trainer.optimizers[0].state_dict())
    hparams, flags = dict(model.hparams), [p.requires_grad for p in model.parameters()]
    modes = [m.training for m in model.modules()]
    trainer_state = (trainer.global_step, trainer.state.fn, trainer.state.status, list(trainer.callbacks),
                     trainer.optimizers[0], trainer.should_stop)
    dm_attributes = dict(vars(dm))
    random.seed(5)
    rng = rngstate.capture()

    task = task_from_lightning(model, datamodule=dm, trainer=trainer, seed=3)
    assert task.accumulation_steps == 2 and task.optimizer is not trainer.optimizers[0]
    result = range_test(task, steps=30, **FAST)
    assert len(result.steps) == 30

    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    state = trainer.optimizers[0].state_dict()
    assert all(torch.equal(optimizer_state["state"][k]["exp_avg"], state["state"][k]["exp_avg"])
               for k in optimizer_state["state"])
    assert optimizer_state["param_groups"] == state["param_groups"]
    assert dict(model.hparams) == hparams and [p.requires_grad for p in model.parameters()] == flags
    assert [m.training for m in model.modules()] == modes
    assert (trainer.global_step, trainer.state.fn, trainer.state.status, list(trainer.callbacks),
            trainer.optimizers[0], trainer.should_stop) == trainer_state
    assert dict(vars(dm)) == dm_attributes
    assert "log" not in vars(model) and "log_dict" not in vars(model)
    now = rngstate.capture()
    assert now["python"] == rng["python"] and torch.equal(now["torch"], rng["torch"])


def test_the_trainers_precision_accumulation_and_clipping_are_honoured() -> None:
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, precision="bf16-mixed", accumulate_grad_batches=3,
                         gradient_clip_val=1e-3, gradient_clip_algorithm="value", limit_train_batches=2)
    task = task_from_lightning(make, trainer=trainer)(1)
    assert task.accumulation_steps == 3 and task.scaler is None
    seen = []
    task.model.net[0].register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    loss = task.loss_fn(task.model, task.batches(0))
    assert seen == [torch.bfloat16]  # the forward under autocast, as "bf16-mixed" trains
    assert torch.equal(task.batches(2)[0], task.batches(0)[0])  # limit_train_batches=2: an epoch of 2 batches
    loss.backward()
    task.optimizer.step()  # the clipping hook ran first: every gradient within +-1e-3
    assert max(p.grad.abs().max().item() for p in task.model.parameters()) == pytest.approx(1e-3)


@pytest.mark.parametrize("change, fragment", [
    ("manual", "manual optimization (automatic_optimization=False)"),
    ("two_optimizers", "configure_optimizers returns 2 optimizers"),
    ("ddp", "the Trainer runs on 2 devices x 1 nodes (DDPStrategy)"),
    ("precision", "Trainer(precision='64-true')"),
    ("trainer_in_step", "training_step uses self.trainer"),
    ("no_loss", "training_step returned NoneType"),
])
def test_what_the_adapter_cannot_honour_is_refused_in_one_line(change: str, fragment: str) -> None:
    model, trainer = Net(), None
    if change == "manual":
        model.automatic_optimization = False
    elif change == "two_optimizers":
        model.configure_optimizers = lambda: [torch.optim.SGD(model.net[0].parameters(), lr=0.1),
                                              torch.optim.SGD(model.net[2].parameters(), lr=0.1)]
    elif change == "ddp":
        trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False)
    elif change == "precision":
        trainer = pl.Trainer(accelerator="cpu", devices=1, precision="64-true", logger=False)
    elif change == "trainer_in_step":
        model.training_step = lambda batch, batch_idx: model.trainer.global_step
    elif change == "no_loss":
        model.training_step = lambda batch, batch_idx: None
    with pytest.raises(LrscanError) as err:
        range_test(task_from_lightning(model, datamodule=Data(), trainer=trainer), steps=5, **FAST)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_the_found_lr_goes_where_lightning_users_set_it() -> None:
    model = Net(lr=1e-3)
    assert lrscan.apply_lr(0.02, model) == 0.02 and model.hparams.lr == 0.02

    class Plain(Net):
        def __init__(self):
            super().__init__()
            self.learning_rate = 0.1

    plain = Plain()
    del plain.hparams["lr"]
    lrscan.apply_lr(0.03, plain)
    assert plain.learning_rate == 0.03
    with pytest.raises(LrscanError, match="has no 'lr' or 'learning_rate'"):
        lrscan.apply_lr(0.03, pl.LightningModule())


@pytest.mark.slow
def test_a_task_file_with_the_factory_trains_from_the_command_line(tmp_path) -> None:
    """`--task=file.py:make_task` (what sweeps and the study launch) with make_task = task_from_lightning(make)."""
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    (tmp_path / "net.py").write_text(
        "import lrscan\n"
        "from tests.pipeline.train.test_lightning import make\n"
        "make_task = lrscan.task_from_lightning(make)\n")
    done = subprocess.run([sys.executable, "-m", "lrscan.pipeline.train", f"--task={tmp_path / 'net.py'}:make_task",
                           "--task_args={'shuffle': True}", "--steps=12", "--eval_every_steps=6",
                           "--wandb_mode=disabled", f"--ckpt_dir={tmp_path / 'ckpt'}"],
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Net with 97 parameters, AdamW (2 param groups)" in done.stdout and "dev_loss" in done.stdout
