"""A pack of a user task's points (torch.func) against the same points run alone: real offline runs, read back."""

from __future__ import annotations

import os
import signal
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lrscan.pipeline import keys
from lrscan.pipeline.config import parse_args
from lrscan.pipeline.errors import LrscanError
from lrscan.pipeline.pack.functional import why_not_functional
from lrscan.pipeline.pack.loop import PackStopRequested, train_pack
from lrscan.pipeline.pack.members import Point
from lrscan.pipeline.train import checkpoint
from lrscan.pipeline.train.loop import StopRequested, train
from lrscan.pipeline.train.task import load_task
from lrscan.pipeline.train.tracking import Launch
from tests.support.pack_resume import (
    assert_resumed_as_uninterrupted,
    kill,
    pack_command,
    rerun_resumes_every_member,
    start_and_freeze,
)
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

from lrscan.pipeline.train.task import Task


class Scaled(torch.nn.Module):
    # a constant buffer (a causal mask, a RoPE table): read by forward, never changed
    def __init__(self, width):
        super().__init__()
        self.register_buffer("scale", torch.linspace(0.5, 1.5, width), persistent=False)

    def forward(self, x):
        return x * self.scale


class Counter(torch.nn.Module):
    # a buffer forward replaces (not updated in place): a vmapped forward cannot carry it per member
    def __init__(self):
        super().__init__()
        self.register_buffer("seen", torch.zeros(()))

    def forward(self, x):
        self.seen = self.seen + x.shape[0]
        return x


def make(seed, width=8, opt="sgd", momentum=0.0, norm=False, drop=False, sigterm_file="", groups=False,
         unused=False, global_rng=False, counter=False, scheduler=False, scaled=False):
    torch.manual_seed(seed)
    layers = [torch.nn.Linear(4, width, bias=not norm)]  # a bias before a BatchNorm gets rounding noise for a
    if norm:                                                # gradient, which Adam scales up to full steps
        layers.append(torch.nn.BatchNorm1d(width))
    layers.append(torch.nn.Tanh())
    if scaled:
        layers.append(Scaled(width))
    if drop:
        layers.append(torch.nn.Dropout(0.1))
    if counter:
        layers.append(Counter())
    layers.append(torch.nn.Linear(width, 3))
    model = torch.nn.Sequential(*layers)
    if unused:  # a head the loss never reaches: its gradient stays None, torch.optim leaves it alone
        model.register_parameter("head", torch.nn.Parameter(torch.randn(width, 2)))
    params = model.parameters()
    if groups:  # nanoGPT's split, and the vectors at a third of the lr
        params = [{"params": [p for p in model.parameters() if p.ndim >= 2], "weight_decay": 0.05},
                  {"params": [p for p in model.parameters() if p.ndim < 2], "weight_decay": 0.0, "lr": 1e-3 / 3}]
    if opt == "adam":
        optimizer = torch.optim.Adam(params, lr=1e-3, amsgrad=True)
    elif opt == "adamw":
        optimizer = torch.optim.AdamW(params, lr=1e-3)
    elif opt == "rmsprop":
        optimizer = torch.optim.RMSprop(params, lr=1e-3)
    else:
        optimizer = torch.optim.SGD(params, lr=0.1 if not groups else 1e-3, momentum=momentum,
                                    weight_decay=0.01 if unused else 0.0)
    if scheduler:
        torch.optim.lr_scheduler.StepLR(optimizer, 10)
    w = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))

    def batch(step):
        if step == 20 and sigterm_file and os.path.exists(sigterm_file):  # a kill at a known step, once
            os.remove(sigterm_file)
            os.kill(os.getpid(), signal.SIGTERM)
        if global_rng:  # nanoGPT's get_batch: torch.randint without a generator
            x = torch.randn(16, 4)
        else:
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



def _same_checkpoints(alone: Path, packed: Path, run_ids, of_scale: float = 0.0) -> None:
    """Each member's checkpoint is its run's alone: the same keys, weights, buffers and optimizer state (within rtol
    1e-5, atol 1e-6; or, with of_scale, within of_scale times each tensor's largest value)."""

    def close(mine, theirs, msg):
        if of_scale and mine.is_floating_point():
            assert (mine - theirs).abs().max() <= of_scale * theirs.abs().max(), msg
        else:
            torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6, msg=msg)

    for run_id in run_ids:
        mine, theirs = (checkpoint.load(folder / "ck" / f"{run_id}.pt") for folder in (packed, alone))
        assert set(mine) == set(theirs) and mine["step"] == theirs["step"]
        assert mine["batches"]["drawn"] == theirs["batches"]["drawn"]
        assert mine["model"].keys() == theirs["model"].keys()
        for k, v in theirs["model"].items():
            close(mine["model"][k], v, f"{run_id} {k}")
        state_mine, state_theirs = mine["optimizer"]["state"], theirs["optimizer"]["state"]
        assert state_mine.keys() == state_theirs.keys(), f"{run_id}: other parameters have optimizer state"
        for i, s in state_theirs.items():
            assert state_mine[i].keys() == s.keys()
            for key, v in s.items():
                close(state_mine[i][key], v, f"{run_id} {i} {key}")
        assert mine["optimizer"]["param_groups"] == theirs["optimizer"]["param_groups"]


@pytest.mark.parametrize("opt", ["adamw", "adam"])
def test_a_packed_adam_task_with_param_groups_and_batchnorm_logs_and_checkpoints_what_it_does_alone(
        net_file, tmp_path, monkeypatch, opt):
    # AdamW (Adam with amsgrad and coupled weight decay) over two param groups at different lrs and weight decays,
    # BatchNorm's running statistics and a constant buffer per member, a head the loss never reaches (no state,
    # no decay); range tests that climb and stop inside a chunk (the replay), eval and checkpoints on their steps
    ranges = [(-4, -1), (-3, -0.5), (-2, 2)]
    task_args = {"opt": opt, "norm": True, "groups": True, "unused": True, "scaled": True}
    points = {f"{opt}-{i}": _args(net_file, tmp_path, "--schedule=range", "--steps=150", f"--seed={i + 1}",
                                  f"--lre_min={lo}", f"--lre_max={hi}", "--log_chunk_steps=32", "--climb_factor=1.1",
                                  "--climb_burn_in_steps=40", "--eval_every_steps=25", "--ckpt_every_steps=40",
                                  f"--task_args={task_args!r}")
              for i, (lo, hi) in enumerate(ranges)}
    tasks = [load_task(f"{net_file}:make", seed, task_args) for seed in (1, 2)]
    assert why_not_functional(tasks) == ""
    alone, packed = alone_then_packed(tmp_path, monkeypatch, points)
    runs = assert_same_runs(alone, packed, 3, log10_atol=LOG10_ATOL)
    assert runs[keys.STOP_STEP].notna().any() and runs[keys.STOP_STEP].isna().any()
    # Adam moves a weight by ~lr whatever its gradient's size, so the vmapped matmuls' ulps (1 at step 0) show
    # in the weights after 150 steps up to lr 0.3 at ~1e-5 of their size, while the losses agree within 1e-6
    _same_checkpoints(alone, packed, points, of_scale=1e-4)
    head = checkpoint.load(packed / "ck" / f"{opt}-0.pt")["model"]["head"]
    torch.testing.assert_close(head, tasks[0].model.head.detach(), rtol=0, atol=0)  # never stepped


def test_examples_wavenet_packs_with_adamw_and_each_member_equals_its_run_alone(tmp_path, monkeypatch, real_names):
    # the lecture's WaveNet: AdamW in two param groups, three BatchNorms; 3 seeds' range tests up to lr 0.06 (past it
    # the loss is chaotic: the vmapped matmuls' ulps grow past 1e-5 within ~20 steps, packed or not)
    task_args = {"data": str(real_names), "n_hidden": 32}
    points = {f"wn-{s}": ["--task=examples/wavenet.py:make", f"--task_args={task_args!r}", "--wandb_mode=offline",
                          f"--ckpt_dir={tmp_path / 'w' / 'ck'}", "--schedule=range", "--steps=300", f"--seed={s}",
                          f"--lre_min={lo}", "--lre_max=-1.2", "--log_chunk_steps=64", "--eval_every_steps=100",
                          "--ckpt_every_steps=100"]
              for s, lo in ((1, -4), (2, -3.5), (3, -4))}
    assert why_not_functional([load_task("examples/wavenet.py:make", s, task_args) for s in (1, 2)]) == ""
    alone, packed = alone_then_packed(tmp_path, monkeypatch, points)
    assert_same_runs(alone, packed, 3, log10_atol=LOG10_ATOL)
    _same_checkpoints(alone, packed, points, of_scale=1e-4)


def test_packed_sgd_leaves_a_parameter_without_gradient_alone_as_torch_does(net_file, tmp_path, monkeypatch):
    # SGD with weight decay and momentum: torch skips the unused head (no decay, no buffer); a pack must too
    task_args = {"unused": True, "momentum": 0.9}
    points = {f"s-{i}": _args(net_file, tmp_path, "--schedule=constant", "--steps=30", f"--seed={i + 1}",
                              "--lr=0.05", f"--task_args={task_args!r}") for i in range(2)}
    alone, packed = alone_then_packed(tmp_path, monkeypatch, points)
    assert_same_runs(alone, packed, 2, log10_atol=LOG10_ATOL)
    _same_checkpoints(alone, packed, points)


@pytest.mark.parametrize("task_args, why", [
    ({"opt": "rmsprop"}, "its optimizer is RMSprop; a pack steps torch.optim.SGD, Adam and AdamW exactly"),
    ({"scheduler": True}, "its SGD's step is wrapped or hooked (an lr scheduler built on it, or a hook)"),
    ({"drop": True}, "its loss cannot be vmapped over members"),
    ({"global_rng": True}, "its batch(step) draws from the global random state"),
    ({"counter": True}, "its model's buffer 2.seen changes in forward in a way a vmapped forward does not repeat"),
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
        train(parse_args([*points["a"], "--run_id=a"]), launch=Launch("-m lrscan.pipeline.train", tuple(points["a"])),
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


def test_range_test_trains_its_seeds_as_one_pack_with_the_results_of_one_after_another(net_file, monkeypatch, capsys):
    from lrscan.pipeline import range_test
    from lrscan.pipeline.pack import functional

    kwargs = dict(seeds=[1, 2, 3], steps=120, lre_min=-4, lre_max=-1, wandb_mode="offline",
                  task_args={"opt": "adamw", "norm": True, "groups": True})
    packed = range_test(f"{net_file}:make", **kwargs)
    assert "pack of 3 run(s)" in capsys.readouterr().out
    monkeypatch.setattr(functional, "why_not_functional", lambda tasks: "(a test's reason)")
    alone = range_test(f"{net_file}:make", **kwargs)
    assert "the 3 seeds train one after another, not packed: (a test's reason)" in capsys.readouterr().out
    assert packed.seeds == alone.seeds == [1, 2, 3] and set(packed.run_ids).isdisjoint(alone.run_ids)
    steps_p, steps_a = (r.steps.drop(columns="run_id") for r in (packed, alone))
    pd.testing.assert_frame_equal(steps_p, steps_a, check_exact=False, rtol=1e-5, atol=LOG10_ATOL)
    assert packed.best_lre == alone.best_lre and packed.ci == pytest.approx(alone.ci, rel=1e-6)


@pytest.mark.timeout(900)  # three packs of three runs (killed, resumed, the reference), on a shared machine
def test_an_adamw_task_pack_killed_by_sigkill_resumes_every_member_with_the_same_command(net_file, tmp_path):
    steps = 1200
    task_args = {"opt": "adamw", "norm": True, "groups": True}
    base = [f"--task={net_file}:make", f"--task_args={task_args!r}", "--wandb_mode=offline", "--schedule=step",
            f"--steps={steps}", "--ckpt_every_steps=100", "--log_chunk_steps=50", "--decay_steps=[600]",
            f"--ckpt_dir={tmp_path / 'ck'}"]
    points = {f"k-{s}": [f"--seed={s}", f"--lr={lr}", f"--decay_lrs=[{lr / 10}]"]
              for s, lr in ((1, 1e-3), (2, 3e-3), (3, 1e-2))}
    cmd = pack_command(tmp_path, base, points)
    env = {**os.environ, "WANDB_DIR": str(tmp_path)}
    ckpts = {r: tmp_path / "ck" / f"{r}.pt" for r in points}

    def all_checkpointed() -> bool:
        try:
            return all(not checkpoint.load(p)["finished"] for p in ckpts.values())
        except Exception:  # not there yet
            return False

    proc = start_and_freeze(cmd, env, tmp_path, all_checkpointed, "a checkpoint of every member mid-run")
    at = {r: checkpoint.load(p)["step"] for r, p in ckpts.items()}
    assert all(0 < s < steps for s in at.values())
    kill(proc)

    rerun_resumes_every_member(cmd, env, tmp_path, {r: at[r] for r in points})

    # the uninterrupted reference: the same points packed under other run ids, in this process
    assert_resumed_as_uninterrupted(tmp_path / "wandb", base, points, list(points), steps)


@pytest.mark.parametrize("dtype, packs", [(torch.float16, False), (torch.bfloat16, True), (torch.float32, True)])
def test_float16_members_are_refused_by_name_bfloat16_and_float32_pack(dtype, packs):
    # vmapped float16 kernels round unlike the model's own; bfloat16 and float32 members equal their runs alone
    from lrscan.pipeline.train.task import Task

    def make(seed):
        torch.manual_seed(seed)
        model = torch.nn.Linear(4, 3).to(dtype)

        def batch(step):
            g = torch.Generator().manual_seed(seed * 100 + step)
            return torch.randn(8, 4, generator=g).to(dtype), torch.randint(0, 3, (8,), generator=g)

        return Task(model=model, optimizer=torch.optim.AdamW(model.parameters(), lr=1e-3), batches=batch,
                    loss_fn=lambda m, b: torch.nn.functional.cross_entropy(m(b[0]).float(), b[1]))

    why = why_not_functional([make(1), make(2)])
    assert (why == "") == packs
    if not packs:
        assert why == "its parameters are float16, which a pack cannot step exactly as the run alone (bfloat16 can)"
