"""A pack of a user task's points (torch.func) against the same points run alone: real offline runs, read back."""

from __future__ import annotations

import os
import signal
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline import keys
from pipeline.config import parse_args
from pipeline.errors import LrscanError
from pipeline.pack.functional import why_not_functional
from pipeline.pack.loop import PackStopRequested, train_pack
from pipeline.pack.members import Point
from pipeline.train import checkpoint
from pipeline.train.loop import StopRequested, train
from pipeline.train.task import load_task
from pipeline.train.tracking import Launch
from tests.support.packs import alone_then_packed, assert_same_runs, train_alone

pytestmark = pytest.mark.slow

# log10 of a loss near 1 is near 0: the loss's rtol 1e-5 is an absolute 1e-5 / ln(10) there
LOG10_ATOL = 1e-5 / np.log(10)

# a tiny classifier on synthetic data, batches from (seed, step); the options make it unpackable
NET = '''\
import os
import signal

import torch
import torch.nn.functional as F

from pipeline.train.task import Task


def make(seed, width=8, opt="sgd", momentum=0.0, norm=False, drop=False, sigterm_file=""):
    torch.manual_seed(seed)
    layers = [torch.nn.Linear(4, width)]
    if norm:
        layers.append(torch.nn.BatchNorm1d(width))
    layers.append(torch.nn.Tanh())
    if drop:
        layers.append(torch.nn.Dropout(0.1))
    layers.append(torch.nn.Linear(width, 3))
    model = torch.nn.Sequential(*layers)
    if opt == "adam":
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=momentum)
    w = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))

    def batch(step):
        if step == 20 and sigterm_file and os.path.exists(sigterm_file):  # a kill at a known step, once
            os.remove(sigterm_file)
            os.kill(os.getpid(), signal.SIGTERM)
        g = torch.Generator().manual_seed(seed * 100_003 + step)
        x = torch.randn(16, 4, generator=g)
        return x, (x @ w).argmax(1)

    def loss_fn(model, b):
        x, y = b
        return F.cross_entropy(model(x), y)

    def evaluate(model):
        x, y = batch(10**6)
        return {"dev_loss": float(F.cross_entropy(model(x), y))}

    return Task(model, optimizer, batch, loss_fn, evaluate)
'''


@pytest.fixture
def net_file(tmp_path: Path) -> Path:
    path = tmp_path / "net.py"
    path.write_text(textwrap.dedent(NET))
    return path


def _args(net_file: Path, tmp_path: Path, *more: str) -> list[str]:
    return [f"--task={net_file}:make", "--wandb_mode=offline", f"--ckpt_dir={tmp_path / 'w' / 'ck'}", *more]


def test_a_packed_task_range_test_logs_what_each_point_logs_alone(net_file, tmp_path, monkeypatch):
    # 4 seeds and lr ranges, plain SGD; the widest climbs and stops inside a chunk (the replay). vmap's batched
    # matmuls round differently from one model's (1 ulp at step 0): ranges that end where the loss climbs, not
    # deep in chaos, where any ulp grows into another history
    ranges = [(-3, 0), (-2, 0.5), (-3, 1), (-1, 0.5)]
    points = {f"r-{i}": _args(net_file, tmp_path, "--schedule=range", "--steps=120", f"--seed={i + 1}",
                              f"--lre_min={lo}", f"--lre_max={hi}", "--log_chunk_steps=32", "--climb_factor=1.2")
              for i, (lo, hi) in enumerate(ranges)}
    runs = assert_same_runs(*alone_then_packed(tmp_path, monkeypatch, points), 4, log10_atol=LOG10_ATOL)
    assert runs[keys.STOP_STEP].notna().any() and runs[keys.STOP_STEP].isna().any()


def test_a_packed_task_with_momentum_logs_and_checkpoints_what_each_point_does_alone(net_file, tmp_path, monkeypatch):
    # fixed and decayed lrs, momentum buffers per member, eval and checkpoints on the members' own steps
    points = {f"d-{i}": _args(net_file, tmp_path, "--schedule=step", "--steps=40", f"--seed={i + 1}", f"--lr={lr}",
                              "--decay_steps=[20]", "--decay_lrs=[0.01]", "--eval_every_steps=10",
                              "--ckpt_every_steps=15", "--task_args={'momentum': 0.9}")
              for i, lr in enumerate([0.05, 0.1, 0.2])}
    alone, packed = alone_then_packed(tmp_path, monkeypatch, points)
    ck_alone = {r: checkpoint.load(alone / "ck" / f"{r}.pt") for r in points}
    assert_same_runs(alone, packed, 3, log10_atol=LOG10_ATOL)
    # each member's checkpoint is the single task run's: the same keys, weights and momentum buffers
    for run_id in points:
        mine = checkpoint.load(packed / "ck" / f"{run_id}.pt")
        assert set(mine) == set(ck_alone[run_id]) and mine["finished"] and mine["step"] == 40
        assert mine["batches"]["drawn"] == ck_alone[run_id]["batches"]["drawn"]
        for k, v in ck_alone[run_id]["model"].items():
            torch.testing.assert_close(mine["model"][k], v, rtol=1e-5, atol=1e-6)
        for k, v in ck_alone[run_id]["optimizer"]["state"].items():
            torch.testing.assert_close(mine["optimizer"]["state"][k]["momentum_buffer"], v["momentum_buffer"],
                                       rtol=1e-5, atol=1e-6)



@pytest.mark.parametrize("task_args, why", [
    ({"opt": "adam"}, "its optimizer is Adam; a pack steps plain torch.optim.SGD"),
    ({"norm": True}, "its model has buffers (1.running_mean, 1.running_var, 1.num_batches_tracked"),
    ({"drop": True}, "its loss cannot be vmapped over members"),
])
def test_a_task_a_pack_cannot_step_is_refused_saying_why(net_file, tmp_path, task_args, why):
    tasks = [load_task(f"{net_file}:make", seed, task_args) for seed in (1, 2)]
    assert why in why_not_functional(tasks)
    # the pack refuses it in one line, before any run or checkpoint exists
    args = [*_args(net_file, tmp_path, "--steps=5"), f"--task_args={task_args!r}"]
    with pytest.raises(LrscanError, match="this one cannot: " + why.split(";")[0].split("(")[0]):
        train_pack([Point.parse("a", [*args, "--seed=1"]), Point.parse("b", [*args, "--seed=2"])])
    assert not (tmp_path / "w").exists()


def test_a_task_run_stopped_alone_resumes_in_a_pack_beside_a_new_one(net_file, tmp_path, monkeypatch):
    # run a stopped by SIGTERM at a checkpoint (the single trainer's), then packed with a new run b: the pack
    # steps each at its own step, and both histories are those of uninterrupted runs
    points = {r: _args(net_file, tmp_path, "--schedule=step", "--steps=60", f"--seed={s}", "--lr=0.1",
                       "--log_chunk_steps=16", "--task_args={'momentum': 0.9}") for r, s in (("a", 1), ("b", 2))}
    alone = train_alone(tmp_path, monkeypatch, points)
    work = tmp_path / "w"

    def sigterm_after_step_20(steps, columns):
        if steps[-1] >= 20:
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(StopRequested):
        train(parse_args([*points["a"], "--run_id=a"]), launch=Launch("-m pipeline.train", tuple(points["a"])),
              on_steps=sigterm_after_step_20)
    assert checkpoint.load(work / "ck" / "a.pt")["step"] == 32
    summaries = train_pack([Point.parse(run_id, args) for run_id, args in points.items()])
    assert sorted(summaries) == ["a", "b"]
    assert_same_runs(alone, work, 2, log10_atol=LOG10_ATOL)


def test_a_task_pack_stopped_by_sigterm_checkpoints_its_members_and_the_same_call_resumes_them(net_file, tmp_path,
                                                                                                 monkeypatch):
    flag = tmp_path / "sigterm"
    points = {r: _args(net_file, tmp_path, "--schedule=step", "--steps=60", f"--seed={s}", "--lr=0.1",
                       "--log_chunk_steps=16", f"--task_args={{'momentum': 0.9, 'sigterm_file': '{flag}'}}")
              for r, s in (("a", 1), ("b", 2))}
    alone = train_alone(tmp_path, monkeypatch, points)
    work = tmp_path / "w"
    flag.touch()  # the pack's batch(20) sends it SIGTERM: it ends the chunk, checkpoints both members at step 32
    with pytest.raises(PackStopRequested):
        train_pack([Point.parse(run_id, args) for run_id, args in points.items()])
    assert not flag.exists() and [checkpoint.load(work / "ck" / f"{r}.pt")["step"] for r in points] == [32, 32]
    summaries = train_pack([Point.parse(run_id, args) for run_id, args in points.items()])
    assert sorted(summaries) == ["a", "b"]
    assert_same_runs(alone, work, 2, log10_atol=LOG10_ATOL)
