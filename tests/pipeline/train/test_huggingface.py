"""A real HF Trainer as a Task: the same curves as the model written by hand (its optimizer's weight-decay groups,
clipping and data), nothing left changed, what cannot be honoured refused in one line, the lr applied back."""

from __future__ import annotations

import copy
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import Trainer, TrainingArguments

import lrscan
from lrscan.pipeline.errors import LrscanError
from lrscan.pipeline.study.range_test import range_test
from lrscan.pipeline.train import rngstate
from lrscan.pipeline.train.huggingface import task_from_hf_trainer
from lrscan.pipeline.train.task import Task

FAST = {"wandb_mode": "disabled", "num_threads": 1}
N_TRAIN, N_EVAL, BATCH = 192, 64, 16


def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N_TRAIN + N_EVAL, 4, generator=g)
    return x, x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.1 * torch.randn(len(x), 1, generator=g)


class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))

    def forward(self, x, labels=None):
        out = self.net(x)
        return {"loss": F.mse_loss(out, labels), "logits": out}


class Pairs(torch.utils.data.Dataset):
    def __init__(self, start: int, stop: int):
        x, y = data()
        self.x, self.y = x[start:stop], y[start:stop]

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "labels": self.y[i], "note": "a column the model's forward does not take"}


def arguments(tmp_path, **kwargs) -> TrainingArguments:
    return TrainingArguments(output_dir=str(tmp_path / "out"), per_device_train_batch_size=BATCH, learning_rate=1e-3,
                             weight_decay=0.05, optim="adamw_torch", train_sampling_strategy="sequential",
                             report_to=[], use_cpu=True, disable_tqdm=True, save_strategy="no", **kwargs)


def by_hand(seed: int) -> Task:
    """The same model, the Trainer's AdamW (decay on weights, none on biases, clipped at max_grad_norm 1.0), the same
    batches and eval loss, written as a Task."""
    model = Model()
    decay = [p for n, p in model.named_parameters() if "bias" not in n]
    no_decay = [p for n, p in model.named_parameters() if "bias" in n]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
                                  lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
    optimizer.register_step_pre_hook(lambda *_: torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0) and None)
    x, y = data()
    per_epoch = N_TRAIN // BATCH

    def batch(i):
        j = i % per_epoch
        return x[j * BATCH:(j + 1) * BATCH], y[j * BATCH:(j + 1) * BATCH]

    def evaluate(model):
        return {"dev_loss": model(x[N_TRAIN:], y[N_TRAIN:])["loss"].item()}

    return Task(model, optimizer, batch, lambda m, b: m(b[0], b[1])["loss"], evaluate=evaluate)


@pytest.mark.slow
def test_range_test_and_prove_on_an_hf_trainer_equal_the_task_written_by_hand(tmp_path) -> None:
    def make(seed):
        return Trainer(model=Model(), args=arguments(tmp_path, seed=seed), train_dataset=Pairs(0, N_TRAIN),
                       eval_dataset=Pairs(N_TRAIN, N_TRAIN + N_EVAL))

    kwargs = {"seeds": [1, 2], "steps": 30, "lre_min": -4, "lre_max": 0, "eval_every_steps": 10, **FAST}
    adapted = range_test(task_from_hf_trainer(make), **kwargs)
    hand = range_test(by_hand, **kwargs)
    assert len(adapted.steps) == len(hand.steps) > 30
    for column in ("lr", "loss", "smooth_loss"):
        np.testing.assert_allclose(adapted.steps[column], hand.steps[column], rtol=1e-5, err_msg=column)
    evals = adapted.steps["dev_loss"].notna()
    np.testing.assert_allclose(adapted.steps.loc[evals, "dev_loss"], hand.steps.loc[evals, "dev_loss"], rtol=1e-5)
    assert any("lr_scheduler_type='linear' is not stepped" in n for n in adapted.notes)

    proof = adapted.prove(steps=15, seeds=[1, 2], **FAST)
    assert proof.judged_by == "dev_loss" and len(proof.runs) == 2 * len(proof.table)


def test_the_trainers_own_optimizer_keeps_its_weight_decay_groups_and_ratios(tmp_path) -> None:
    torch.manual_seed(0)
    model = Model()
    groups = [{"params": list(model.net[0].parameters()), "lr": 1e-3},
              {"params": list(model.net[2].parameters()), "lr": 1e-4}]
    optimizer = torch.optim.SGD(groups, lr=1e-3, momentum=0.9)
    warm_up = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: step / 10)  # lr 0 at step 0: initial_lr kept
    trainer = Trainer(model=model, args=arguments(tmp_path), train_dataset=Pairs(0, N_TRAIN),
                      optimizers=(optimizer, warm_up))
    result = range_test(task_from_hf_trainer(trainer), steps=10, lre_min=-2, lre_max=-1, **FAST)
    assert result.steps["lr"].iloc[0] == pytest.approx(1e-2)
    assert [g["lr"] for g in optimizer.param_groups] == [0.0, 0.0]  # the trainer's optimizer never stepped
    assert not optimizer.state
    assert any("LambdaLR is not stepped" in n for n in result.notes)
    created = task_from_hf_trainer(Trainer(model=Model(), args=arguments(tmp_path), train_dataset=Pairs(0, 64)))
    assert [g["weight_decay"] for g in created.optimizer.param_groups] == [0.05, 0.0]


@pytest.mark.slow
def test_nothing_the_user_passed_is_left_changed(tmp_path) -> None:
    torch.manual_seed(0)
    model = Model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    trainer = Trainer(model=model, args=arguments(tmp_path, max_steps=3, gradient_accumulation_steps=2),
                      train_dataset=Pairs(0, N_TRAIN), eval_dataset=Pairs(N_TRAIN, N_TRAIN + N_EVAL),
                      optimizers=(optimizer, None))
    trainer.train()  # a trainer that has trained: its optimizer has state, its state a global step
    model.net[0].bias.requires_grad_(False)
    model.net[2].eval()
    weights = copy.deepcopy(model.state_dict())
    optimizer_state = copy.deepcopy(optimizer.state_dict())
    flags, modes = [p.requires_grad for p in model.parameters()], [m.training for m in model.modules()]
    attributes = dict(vars(trainer))
    callbacks, global_step = list(trainer.callback_handler.callbacks), trainer.state.global_step
    prepared, args = list(trainer.accelerator._dataloaders), dict(vars(trainer.args))
    random.seed(5)
    rng = rngstate.capture()

    task = task_from_hf_trainer(trainer)
    assert task.accumulation_steps == 2 and task.optimizer is not optimizer
    result = range_test(task, steps=20, eval_every_steps=10, **FAST)
    assert len(result.steps) == 20 and result.steps["dev_loss"].notna().sum() == 2

    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    state = optimizer.state_dict()
    assert all(torch.equal(optimizer_state["state"][k]["exp_avg"], state["state"][k]["exp_avg"])
               for k in optimizer_state["state"])
    assert optimizer_state["param_groups"] == state["param_groups"]
    assert [p.requires_grad for p in model.parameters()] == flags and [m.training for m in model.modules()] == modes
    assert vars(trainer).keys() == attributes.keys() and all(vars(trainer)[k] is v for k, v in attributes.items())
    assert list(trainer.callback_handler.callbacks) == callbacks and trainer.state.global_step == global_step
    assert list(trainer.accelerator._dataloaders) == prepared and dict(vars(trainer.args)) == args
    now = rngstate.capture()
    assert now["python"] == rng["python"] and torch.equal(now["torch"], rng["torch"])


def test_what_the_adapter_cannot_honour_is_refused_in_one_line(tmp_path) -> None:
    trainer = Trainer(model=Model(), args=arguments(tmp_path), train_dataset=Pairs(0, 64))
    # a DeepSpeed or FSDP Trainer cannot be built in one CPU process (transformers: "fsdp only works in
    # distributed training"): the trainer's own flag is set as such a Trainer sets it
    trainer.is_fsdp_enabled = True
    with pytest.raises(LrscanError) as err:
        task_from_hf_trainer(trainer)
    assert "the Trainer runs FSDP" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(LrscanError, match="neither a transformers.Trainer nor a function"):
        task_from_hf_trainer(Model())
    with pytest.raises(LrscanError, match="'optimizers' not among the Trainer keywords"):
        task_from_hf_trainer(model=Model(), args=arguments(tmp_path), train_dataset=Pairs(0, 64), optimizers=None)


def test_the_found_lr_goes_where_hf_users_set_it(tmp_path) -> None:
    args = arguments(tmp_path)
    assert lrscan.apply_lr(3e-4, args) == 3e-4 and args.learning_rate == 3e-4
    trainer = Trainer(model=Model(), args=arguments(tmp_path), train_dataset=Pairs(0, 64))
    trainer.create_optimizer()
    lrscan.apply_lr(2e-3, trainer)
    assert trainer.args.learning_rate == 2e-3 and [g["lr"] for g in trainer.optimizer.param_groups] == [2e-3, 2e-3]
