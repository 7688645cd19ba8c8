"""Any task through the trainer: lr per param group, schedules, accumulation, GradScaler skips, exact stops,
evaluate, and a SIGKILLed run of a GRU with Adam resumed to the same per-step losses."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from lrscan.pipeline import keys
from lrscan.pipeline.config import TrainConfig
from lrscan.pipeline.runlog import read_run_file
from lrscan.pipeline.train import checkpoint
from lrscan.pipeline.train.loop import train
from lrscan.pipeline.train.schedule import schedule_lrs, step_lrs
from lrscan.pipeline.train.task import Task, load_task

pytestmark = pytest.mark.slow

# a GRU classifier on synthetic sequences, with dropout (random draws every step) and Adam; its batches
# come from batch(i) or from a shuffling DataLoader (restarted every 28 batches)
GRU_TASK = textwrap.dedent('''
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, TensorDataset

    from lrscan.pipeline.train.task import Task


    class Net(nn.Module):
        def __init__(self, width):
            super().__init__()
            self.gru = nn.GRU(3, width, batch_first=True)
            self.drop = nn.Dropout(0.2)
            self.head = nn.Linear(width, 2)

        def forward(self, x):
            out, _ = self.gru(x)
            return self.head(self.drop(out[:, -1]))


    def make(seed, width=8, batches="function", noisy_eval=False, optimizer="adam", loss="ce"):
        torch.manual_seed(seed)
        g = torch.Generator().manual_seed(1234)
        X = torch.randn(512, 6, 3, generator=g)
        Y = (X[:, :, 0].sum(1) > 0).long()
        model = Net(width)
        if batches == "function":
            def source(i):
                ix = torch.randint(0, 448, (16,), generator=torch.Generator().manual_seed(i))
                return X[ix], Y[ix]
        else:
            source = DataLoader(TensorDataset(X[:448], Y[:448]), batch_size=16, shuffle=True)

        def evaluate(m):
            if noisy_eval:
                torch.randn(1000)  # an evaluation that draws random numbers must not change training
            return {"dev_loss": F.cross_entropy(m(X[448:]), Y[448:]).item(), "dev_accuracy": 0.5}

        opt = (torch.optim.Adam if optimizer == "adam" else torch.optim.SGD)(model.parameters(), lr=1e-3)
        if loss == "ce":
            loss_fn = lambda m, b: F.cross_entropy(m(b[0]), b[1])  # noqa: E731
        else:  # a Poisson loss with a log link: exp() of a large output overflows, the loss turns inf
            loss_fn = lambda m, b: F.poisson_nll_loss(m(b[0])[:, 0], b[1].float())  # noqa: E731
        return Task(model, opt, source, loss_fn, evaluate)
''')


@pytest.fixture
def gru_file(tmp_path: Path) -> Path:
    path = tmp_path / "gru_task.py"
    path.write_text(GRU_TASK)
    return path


def cfg_for(tmp_path: Path, **fields) -> TrainConfig:
    base = dict(wandb_mode="disabled", samples=0, ckpt_dir=str(tmp_path / "checkpoints"), ckpt_every_steps=0)
    return TrainConfig(**{**base, **fields})


def logged(cfg: TrainConfig, task: Task | None = None) -> tuple[dict, dict[str, np.ndarray]]:
    """Train; the summary and every row on_steps was handed, concatenated."""
    chunks = []
    summary = train(cfg, task=task, on_steps=lambda steps, cols: chunks.append((steps, cols)))
    rows = {"step": np.concatenate([s for s, _ in chunks])}
    for k in dict.fromkeys(k for _, c in chunks for k in c):  # an eval step's keys are in its chunk only
        rows[k] = np.concatenate([c.get(k, np.full(len(s), np.nan)) for s, c in chunks])
    return summary, rows


# -- the lr: every param group, every schedule -----------------------------------------------------------------


def recording_task(seen: list) -> Task:
    # two param groups, the second at 10x the first: the trainer keeps that ratio
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
    opt = torch.optim.SGD([{"params": model[0].parameters(), "lr": 1e-3},
                           {"params": model[2].parameters(), "lr": 1e-2}], lr=0.5)

    def loss_fn(m, b):
        seen.append([g["lr"] for g in opt.param_groups])
        return F.mse_loss(m(b), b[:, :1])

    return Task(model, opt, lambda i: torch.ones(4, 3) * (i % 5) / 10, loss_fn)


@pytest.mark.parametrize("schedule", [
    dict(schedule="range", lre_min=-3.0, lre_max=-1.0, stop_on_climb=False),
    dict(schedule="step", lr=0.01, decay_steps=(30, 45), decay_lrs=(0.001, 0.0001)),
    dict(schedule="constant", lr=0.05),
])
def test_every_param_group_follows_the_schedule_keeping_its_ratio(tmp_path, schedule):
    seen = []
    summary, rows = logged(cfg_for(tmp_path, steps=60, log_chunk_steps=16, **schedule), recording_task(seen))
    lrs, lres = schedule_lrs(schedule["schedule"], 60, lre_min=schedule.get("lre_min", -3.0),
                             lre_max=schedule.get("lre_max", 0.0), lr=schedule.get("lr", 0.1),
                             decay_steps=schedule.get("decay_steps", ()), decay_lrs=schedule.get("decay_lrs", ()))
    seen = np.array(seen[1:])  # the first call is check_task's dry run, before any lr is set
    assert seen.shape == (60, 2)
    np.testing.assert_allclose(seen[:, 0], lrs, rtol=1e-12)
    np.testing.assert_allclose(seen[:, 1], 10 * lrs, rtol=1e-12)
    assert rows["step"].tolist() == list(range(60))
    np.testing.assert_array_equal(rows[keys.LR], lrs)
    np.testing.assert_array_equal(rows[keys.LRE], lres)
    assert summary[keys.FINAL_STEP] == 59
    if schedule["schedule"] == "step":
        np.testing.assert_array_equal(lrs, step_lrs(0.01, (30, 45), (0.001, 0.0001), 60))


def test_a_warm_up_built_in_make_and_a_frozen_group_keep_their_ratios(tmp_path):
    """LambdaLR at 0 in make moved every group's lr to 0; the ratios come from its initial_lr, and a group built at
    lr 0 (a frozen part) is never trained."""
    seen = []
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 1))
    opt = torch.optim.SGD([{"params": model[0].parameters(), "lr": 1e-3},
                           {"params": model[2].parameters(), "lr": 0.0},
                           {"params": model[4].parameters(), "lr": 1e-2}])
    torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, step / 100))  # a warm-up: every lr is 0 now
    frozen = [p.detach().clone() for p in model[2].parameters()]

    def loss_fn(m, b):
        seen.append([g["lr"] for g in opt.param_groups])
        return F.mse_loss(m(b), b[:, :1])

    task = Task(model, opt, lambda i: torch.ones(4, 3) * (i % 5) / 10, loss_fn)
    summary, rows = logged(cfg_for(tmp_path, schedule="range", lre_min=-3.0, lre_max=-1.0, steps=20,
                                   stop_on_climb=False), task)
    seen = np.array(seen[1:])  # after the dry run
    np.testing.assert_allclose(seen[:, 0], rows[keys.LR], rtol=1e-12)  # the lr logged is group 0's
    np.testing.assert_array_equal(seen[:, 1], 0.0)
    np.testing.assert_allclose(seen[:, 2], 10 * rows[keys.LR], rtol=1e-12)
    assert all(torch.equal(a, b) for a, b in zip(frozen, model[2].parameters()))


def test_evaluate_leaves_every_submodule_in_the_mode_it_was_in():
    """A BatchNorm the user froze in eval stays in eval; the rest, in train, stays in train."""
    from lrscan.pipeline.train.generic import TaskRun

    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Dropout(0.1), nn.Linear(4, 1))
    model.train()
    model[1].eval()
    before = [m.training for m in model.modules()]

    def evaluate(m):
        m.eval()  # as users write it, without putting anything back
        return {"dev_loss": float(F.mse_loss(m(torch.ones(4, 3)), torch.zeros(4, 1)))}

    run = TaskRun(Task(model, torch.optim.SGD(model.parameters(), lr=0.1), lambda i: torch.ones(4, 3),
                       lambda m, b: m(b).mean(), evaluate=evaluate))
    assert set(run.evaluate()) == {"dev_loss"}
    assert [m.training for m in model.modules()] == before == [True, True, False, True, True]


# -- accumulation and the GradScaler ------------------------------------------------------------------------


def linear_task(batch, k: int = 1, scaler=None, seed: int = 0) -> Task:
    torch.manual_seed(seed)
    model = nn.Linear(5, 1)
    return Task(model, torch.optim.SGD(model.parameters(), lr=0.1), batch,
                lambda m, b: F.mse_loss(m(b[0]), b[1]) * b[2], accumulation_steps=k, scaler=scaler)


def micro_batch(i: int, scale: float = 1.0):
    g = torch.Generator().manual_seed(i)
    X = torch.randn(8, 5, generator=g)
    return X, X.sum(1, keepdim=True), scale


def test_accumulation_is_one_step_over_the_k_micro_batches(tmp_path):
    cfg = cfg_for(tmp_path, schedule="constant", lr=0.05, steps=40, log_chunk_steps=16)
    two = linear_task(micro_batch, k=2)
    _, rows_two = logged(cfg, two)

    def merged(step):  # micro-batches 2s and 2s+1 as one batch of 16: the same mean loss and gradient
        a, b = micro_batch(2 * step), micro_batch(2 * step + 1)
        return torch.cat([a[0], b[0]]), torch.cat([a[1], b[1]]), 1.0

    one = linear_task(merged, k=1)
    _, rows_one = logged(cfg, one)
    np.testing.assert_allclose(rows_two[keys.LOSS], rows_one[keys.LOSS], rtol=1e-5)
    for p, q in zip(two.model.parameters(), one.model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_a_step_the_grad_scaler_skips_neither_advances_the_lr_nor_is_measured(tmp_path):
    overflow = {5, 6, 20}  # these micro-batches overflow the scaled gradients (the loss itself stays finite)
    drawn = []

    def batch(i):
        drawn.append(i)
        return micro_batch(i, 1e36 if i in overflow else 1.0)

    task = linear_task(batch, scaler=torch.amp.GradScaler("cpu"))
    seen_lrs = []
    inner = task.loss_fn
    task.loss_fn = lambda m, b: (seen_lrs.append(task.optimizer.param_groups[0]["lr"]), inner(m, b))[1]
    summary, rows = logged(cfg_for(tmp_path, schedule="range", lre_min=-4.0, lre_max=-2.0, steps=40,
                                   log_chunk_steps=16, stop_on_climb=False), task)
    lrs, _ = schedule_lrs("range", 40, lre_min=-4.0, lre_max=-2.0, lr=0.1, decay_steps=(), decay_lrs=())
    assert rows["step"].tolist() == list(range(40)) and summary[keys.FINAL_STEP] == 39
    np.testing.assert_array_equal(rows[keys.LR], lrs)
    assert np.all(rows[keys.LOSS] < 1e6), "a skipped attempt's loss was logged as a step"
    assert drawn[1:] == list(range(43))  # every micro-batch drawn once, the 3 skipped ones included
    attempts = seen_lrs[1:]
    # micro-batches 5 and 6 were skipped at step 5's lr, and 7 trained step 5 at that same lr
    assert attempts[5] == attempts[6] == attempts[7] == lrs[5] and attempts[8] == lrs[6]
    assert attempts[20] == attempts[21] == lrs[18]
    assert task.scaler.get_scale() == 65536.0 / 8


# -- stops keep the model of the stop step ----------------------------------------------------------------------


def train_by_hand(task: Task, lrs: np.ndarray, n_steps: int) -> None:
    """The plain autograd loop a user writes, one step at a time: the task after steps 0..n_steps-1."""
    groups = task.optimizer.param_groups
    ratios = [g["lr"] / groups[0]["lr"] for g in groups]
    it = None
    for s in range(n_steps):
        for g, r in zip(groups, ratios):
            g["lr"] = float(lrs[s]) * r
        task.optimizer.zero_grad(set_to_none=True)
        if callable(task.batches):
            b = task.batches(s)
        else:
            try:
                b = next(it)
            except (StopIteration, TypeError):
                it = iter(task.batches)
                b = next(it)
        task.loss_fn(task.model, b).backward()
        task.optimizer.step()


@pytest.mark.parametrize("batches", ["function", "loader"])
@pytest.mark.parametrize("stop", [
    dict(lre_min=-3.0, lre_max=3.0, climb_burn_in_steps=50, stop_on_nonfinite=False),  # a climb stop (Adam)
    dict(lre_min=-3.0, lre_max=3.0, stop_on_climb=False, optimizer="sgd", loss="poisson"),  # a non-finite loss
])
def test_an_early_stop_inside_a_chunk_keeps_the_model_of_the_stop_step(tmp_path, gru_file, batches, stop):
    spec = f"{gru_file}:make"
    stop = dict(stop)
    task_args = {"batches": batches, "optimizer": stop.pop("optimizer", "adam"), "loss": stop.pop("loss", "ce")}
    cfg = cfg_for(tmp_path, task=spec, task_args=task_args, steps=700, log_chunk_steps=256, run_id="stop1", seed=3,
                  **stop)
    summary = train(cfg)
    s = summary[keys.STOP_STEP]
    assert (s + 1) % 256 != 0 and s + 1 < 700, "the stop must fall inside a chunk for this test to mean anything"
    assert summary[keys.FINAL_STEP] == s
    assert summary[keys.STOP_REASON] == (keys.STOP_CLIMB if stop.get("stop_on_climb", True) else keys.STOP_NON_FINITE)
    expected = load_task(spec, 3, task_args)
    lrs, _ = schedule_lrs("range", 700, lre_min=stop["lre_min"], lre_max=stop["lre_max"], lr=0.1, decay_steps=(),
                          decay_lrs=())
    train_by_hand(expected, lrs, s + 1)
    state = checkpoint.load(checkpoint.ckpt_path(cfg.ckpt_dir, "stop1"))
    assert state["finished"] and state["step"] == s + 1
    for name, want in expected.model.state_dict().items():
        got = state["model"][name]
        assert torch.equal(got.isnan(), want.isnan()) and torch.equal(got.nan_to_num(), want.nan_to_num()), name


# -- evaluate ---------------------------------------------------------------------------------------------------


def test_evaluate_is_logged_at_eval_steps_summarised_and_leaves_training_alone(tmp_path, gru_file):
    spec = f"{gru_file}:make"
    quiet = cfg_for(tmp_path, task=spec, schedule="constant", lr=0.01, steps=300, log_chunk_steps=64)
    _, plain = logged(quiet)
    noisy = quiet.replace(task_args={"noisy_eval": True}, eval_every_steps=100, wandb_mode="offline",
                          run_id="eval1")
    summary, rows = logged(noisy)
    np.testing.assert_array_equal(rows[keys.LOSS], plain[keys.LOSS])  # evaluating drew random numbers: no matter
    [path] = sorted((tmp_path / "wandb").glob("offline-run-*-eval1/run-eval1.wandb"))
    rf = read_run_file(path)
    h = rf.history
    assert h["step"].tolist() == list(range(300))
    np.testing.assert_array_equal(h[keys.LOSS], rows[keys.LOSS])
    at = np.flatnonzero(np.isfinite(h[keys.DEV_LOSS]))
    assert h["step"][at].tolist() == [99, 199, 299]
    assert summary[keys.DEV_LOSS] == pytest.approx(h[keys.DEV_LOSS][at[-1]])
    # on_steps is handed what the logger was: the eval steps' values too, NaN on the other rows
    np.testing.assert_allclose(rows[keys.DEV_LOSS], h[keys.DEV_LOSS], rtol=1e-6, equal_nan=True)
    assert np.flatnonzero(np.isfinite(rows["dev_accuracy"])).tolist() == [99, 199, 299]
    assert summary["dev_accuracy"] == 0.5 and rf.summary[keys.DEV_LOSS] == pytest.approx(summary[keys.DEV_LOSS])


# -- the command line, and a SIGKILL then resume ------------------------------------------------------------------


def run_files(wandb_dir: Path, run_id: str) -> list[Path]:
    return sorted((wandb_dir / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))


def test_the_command_line_trains_a_task_file_with_its_arguments(tmp_path, gru_file):
    env = {**os.environ, "WANDB_DIR": str(tmp_path)}
    p = subprocess.run([sys.executable, "-m", "lrscan.pipeline.train", f"--task={gru_file}:make",
                        "--task_args={'width': 64}",
                        "--steps=120", "--lre_min=-4", "--lre_max=-2", "--run_id=cli1"], env=env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "Net with " in p.stdout and "Adam" in p.stdout and "dev_loss " in p.stdout
    rf = read_run_file(run_files(tmp_path, "cli1")[0])
    assert rf.config["task"] == f"{gru_file}:make" and rf.config["task_args"] == {"width": 64}
    assert rf.history["step"].tolist() == list(range(120)) and rf.history[keys.LRE][0] == -4.0
    assert rf.exit_code == 0 and math.isfinite(rf.summary[keys.DEV_LOSS])
    state = checkpoint.load(tmp_path / "checkpoints" / "cli1.pt")
    assert state["finished"] and state["model"]["gru.weight_hh_l0"].shape == (3 * 64, 64)


def _wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.mark.parametrize("batches", ["function", "loader"])
def test_a_killed_task_run_resumes_to_the_same_per_step_losses(tmp_path, gru_file, batches):
    env = {**os.environ, "WANDB_DIR": str(tmp_path)}
    cmd = [sys.executable, "-m", "lrscan.pipeline.train", f"--task={gru_file}:make",
           f"--task_args={{'batches': '{batches}'}}",
           "--schedule=constant", "--lr=0.01", "--steps=1000", "--ckpt_every_steps=200", "--log_chunk_steps=50"]
    subprocess.run(cmd + ["--run_id=whole"], env=env, cwd=tmp_path, check=True, capture_output=True, timeout=300)
    reference = read_run_file(run_files(tmp_path, "whole")[0]).history

    # the same run, its process group killed for real once its first checkpoint is on disk (stopped
    # there first with SIGSTOP, so the kill cannot land after the run's end)
    ckpt = tmp_path / "checkpoints" / "cut.pt"
    proc = subprocess.Popen(cmd + ["--run_id=cut"], env=env, cwd=tmp_path, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for(ckpt.exists, 120, "the first checkpoint")
    os.kill(proc.pid, signal.SIGSTOP)
    assert proc.poll() is None, "the run ended before it could be stopped mid-run"
    cut_at = checkpoint.load(ckpt)["step"]
    assert 0 < cut_at < 1000
    os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    resumed = subprocess.run(cmd + ["--run_id=cut", "--resume"], env=env, cwd=tmp_path, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming run cut at step {cut_at}" in resumed.stdout

    segments = [read_run_file(p).history for p in run_files(tmp_path, "cut")]
    assert len(segments) == 2
    steps = np.concatenate([s["step"] for s in segments])
    assert sorted(steps.tolist()) == list(range(1000)), "a lost or repeated step"
    order = np.argsort(steps)
    for k in (keys.LOSS, keys.LR, keys.LOG10_LOSS):
        np.testing.assert_array_equal(np.concatenate([s[k] for s in segments])[order], reference[k])
    whole, cut = (checkpoint.load(tmp_path / "checkpoints" / f"{r}.pt") for r in ("whole", "cut"))
    assert cut["finished"] and cut["summary"][keys.DEV_LOSS] == whole["summary"][keys.DEV_LOSS]
    for name, value in whole["model"].items():
        assert torch.equal(cut["model"][name], value), name


def test_a_sweep_sets_task_args_through_the_locked_config(tmp_path, gru_file):
    # what `wandb agent` does for a sweep over task_args: the locked config and the repr flag of one value
    import yaml

    params = tmp_path / "sweep-widths" / "config-wide1.yaml"
    params.parent.mkdir()
    params.write_text(yaml.safe_dump({"wandb_version": 1, "task_args": {"value": {"width": 12}}}))
    env = {**os.environ, "WANDB_DIR": str(tmp_path), "WANDB_SWEEP_ID": "widths", "WANDB_RUN_ID": "wide1",
           "WANDB_SWEEP_PARAM_PATH": str(params)}
    p = subprocess.run([sys.executable, "-m", "lrscan.pipeline.train", f"--task={gru_file}:make",
                        "--task_args={'width': 5}",
                        "--steps=30"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert read_run_file(run_files(tmp_path, "wide1")[0]).config["task_args"] == {"width": 12}
    state = checkpoint.load(tmp_path / "checkpoints" / "wide1.pt")
    assert state["model"]["gru.weight_hh_l0"].shape == (3 * 12, 12)
