"""range_test on a model of the test's own: real offline runs, the state left bit for bit, the analysis' pick."""

from __future__ import annotations

import copy
import dataclasses
import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from lrscan.analysis.pick import pick_exponent
from lrscan.analysis.sources import load_runs
from lrscan.pipeline import Task, range_test
from lrscan.pipeline.errors import LrscanError
from lrscan.pipeline.train.data import load_splits
from lrscan.pipeline.train.task import load_make
from tests.conftest import REPO
from tests.support.threads import call_in_thread

pytestmark = pytest.mark.slow

SMALL = {"lre_min": -4.0, "lre_max": 0.0, "steps": 80, "climb_burn_in_steps": 40}


def tiny_make(seed: int, *, data: str, scaler: bool = False, fail_after_calls: int | None = None) -> Task:
    """A small model with what a real one has: BatchNorm buffers, dropout, AdamW moments, its own random draws."""
    splits = load_splits(data, 3, 42)
    V = len(splits.vocab)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Embedding(V, 4), nn.Flatten(), nn.Linear(12, 16), nn.BatchNorm1d(16), nn.Tanh(),
                              nn.Dropout(0.1), nn.Linear(16, V))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    Xtr, Ytr = splits.train
    calls = [0]

    def batch(i):
        g = torch.Generator().manual_seed(seed * 1000 + i)
        ix = torch.randint(0, len(Xtr), (16,), generator=g)
        return Xtr[ix], Ytr[ix]

    def loss_fn(model, batch):
        calls[0] += 1
        if fail_after_calls is not None and calls[0] > fail_after_calls:
            raise RuntimeError("the task's loss failed")
        random.random(), np.random.random()  # a task's own draws move every global random state
        X, Y = batch
        return F.cross_entropy(model(X), Y)

    def evaluate(model):
        with torch.no_grad():
            return {"dev_loss": F.cross_entropy(model(splits.dev[0]), splits.dev[1]).item()}

    return Task(model=model, optimizer=optimizer, batches=batch, loss_fn=loss_fn, evaluate=evaluate,
                scaler=torch.amp.GradScaler("cpu") if scaler else None)


def used(task: Task, steps: int = 3) -> Task:
    """The task after a few steps of the user's own training: moments, gradients and a scaler that has scaled."""
    for i in range(steps):
        task.optimizer.zero_grad()
        loss = task.loss_fn(task.model, task.batches(i))
        (task.scaler.scale(loss) if task.scaler else loss).backward()
        if task.scaler:
            task.scaler.step(task.optimizer)
            task.scaler.update()
        else:
            task.optimizer.step()
    task.model[3].eval()  # a mix of modes: BatchNorm in eval, the rest in train
    return task


def state_of(task: Task) -> dict:
    """Everything range_test promises to leave as it was, copied."""
    model = task.model
    return {
        "tensors": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "modes": [m.training for m in model.modules()],
        "optimizer": copy.deepcopy(task.optimizer.state_dict()),
        "scaler": task.scaler.state_dict() if task.scaler else None,
        "rng": global_rng(),
    }


def global_rng() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "threads": torch.get_num_threads()}


def assert_same(a, b, where="state"):
    """Equal bit for bit, tensors included (torch.equal), recursively."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, np.ndarray):
        assert np.array_equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def test_a_range_test_leaves_the_model_optimizer_scaler_and_random_states_as_they_were(words_file, tmp_path):
    task = used(tiny_make(1, data=str(words_file), scaler=True))
    torch.set_num_threads(1)
    before = state_of(task)
    result = range_test(task, num_threads=2, **SMALL)
    assert_same(before, state_of(task))
    # the range test trained for real: the steps it measured, the lrs of the study's schedule, both ends
    assert len(result.steps) > 40 and result.steps["lr"].iloc[0] == pytest.approx(1e-4)
    assert np.isfinite(result.best_lre) and -4.0 <= result.best_lre <= 0.0
    # offline by default: the run is on disk under $WANDB_DIR
    assert list((tmp_path / "wandb").glob(f"offline-run-*-{result.run_ids[0]}/run-{result.run_ids[0]}.wandb"))


def test_a_range_test_that_raises_leaves_the_model_as_it_was(words_file):
    task = used(tiny_make(1, data=str(words_file), fail_after_calls=30))  # 3 steps here, the dry run, ~26 steps there
    before = state_of(task)
    with pytest.raises(RuntimeError, match="the task's loss failed"):
        range_test(task, **SMALL)
    assert_same(before, state_of(task))


def test_two_range_tests_of_one_model_measure_the_same_curve(words_file):
    """Lightning's test_multiple_lr_find_calls_gives_same_results: nothing a range test does leaks into the next."""
    task = tiny_make(1, data=str(words_file))
    first = range_test(task, wandb_mode="disabled", **SMALL)
    second = range_test(task, wandb_mode="disabled", **SMALL)
    assert first.steps["loss"].tolist() == second.steps["loss"].tolist()
    assert first.best_lre == second.best_lre


def test_the_result_is_the_analysis_pick_of_the_logged_runs(words_file, tmp_path):
    """Several seeds: every step is in W&B, and the analysis reading those runs back picks what range_test returned."""
    result = range_test(tiny_make, seeds=[1, 2], task_args={"data": str(words_file)}, **SMALL)
    assert result.seeds == [1, 2] and len(result.run_ids) == 2 and result.runs["run_id"].tolist() == result.run_ids
    assert {"step", "lr", "lre", "loss", "log10_loss", "smooth_loss", "run_id", "seed"} <= set(result.steps.columns)
    loaded = load_runs(tmp_path / "wandb", group=result.group)
    assert sorted(loaded.runs["run_id"]) == sorted(result.run_ids)
    for run_id, ours in result.steps.groupby("run_id"):
        theirs = loaded.steps[loaded.steps["run_id"] == run_id].sort_values("step")
        assert theirs["step"].tolist() == ours["step"].tolist()
        np.testing.assert_allclose(theirs["loss"].to_numpy(), ours["loss"].to_numpy(), rtol=1e-6)  # float32 there
        np.testing.assert_array_equal(theirs["lre"].to_numpy(), ours["lre"].to_numpy())
    again = pick_exponent(loaded.steps, loaded.runs)
    assert again.best_lre == result.best_lre and again.best_lre_ci == pytest.approx(result.ci)
    # two seeds: a CI, and the analysis' word that two are few
    low, high = result.ci
    assert low <= result.best_lre <= high and result.ci_lr == pytest.approx((10**low, 10**high))
    assert any("only 2 seeds" in note for note in result.notes)
    assert result.steepest_lr == pytest.approx(10**result.steepest_lre) and np.isfinite(result.valley_lre)
    assert set(result.suggestions) == {"min_loss", "fastai_minimum", "steepest", "valley"}
    assert result.suggestions["minimum"] == result.suggestions["min_loss"] == result.best_lr  # the old name reads
    assert result.suggestions["fastai_minimum"] == pytest.approx(result.best_lr / 10)  # fastai's minimum: / 10
    assert "pick (min_loss of loss): lre" in str(result)


def test_a_range_test_runs_in_a_thread_other_than_the_main_one(words_file, tmp_path):
    """A notebook kernel's worker, Ray, Gradio: no signal handler where Python forbids one, the same curve as in
    the main thread, the process's handlers untouched, the run logged offline."""
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    here = range_test(tiny_make(1, data=str(words_file)), wandb_mode="disabled", **SMALL)
    there = call_in_thread(lambda: range_test(tiny_make(1, data=str(words_file)), **SMALL))
    assert there.steps["loss"].tolist() == here.steps["loss"].tolist() and there.best_lre == here.best_lre
    assert list((tmp_path / "wandb").glob(f"offline-run-*-{there.run_ids[0]}/run-{there.run_ids[0]}.wandb"))
    assert {s: signal.getsignal(s) for s in handlers} == handlers


def test_one_seed_has_no_ci_and_says_so(words_file):
    result = range_test(tiny_make, seed=3, task_args={"data": str(words_file)}, wandb_mode="disabled", **SMALL)
    assert result.seeds == [3] and result.ci is None and result.ci_lr is None
    assert any("only one seed" in note for note in result.notes) and "95% CI none" in str(result)


def test_a_range_tests_runs_end_without_a_held_out_pass_unless_asked(words_file, capsys):
    # its last model trained at the range's top lr: nothing judges it, torch-lr-finder makes no such pass either
    args = {"seed": 3, "task_args": {"data": str(words_file)}, "wandb_mode": "disabled", **SMALL}
    result = range_test(tiny_make, **args)
    assert "dev_loss" not in result.runs.columns
    assert "no held-out pass at the end (final_eval off)" in capsys.readouterr().out
    asked = range_test(tiny_make, final_eval=True, **args)
    assert np.isfinite(asked.runs["dev_loss"]).all() and "final_eval off" not in capsys.readouterr().out
    pd.testing.assert_frame_equal(result.steps.drop(columns="run_id"), asked.steps.drop(columns="run_id"))  # same steps


def test_plot_and_repick_use_the_analysis(words_file):
    import matplotlib

    matplotlib.use("Agg")
    result = range_test(tiny_make(1, data=str(words_file)), wandb_mode="disabled", **SMALL)
    ax = result.plot()
    assert ax.get_xlabel().startswith("lr exponent") and "pick lre" in ax.get_title()
    assert result.plot(x="lr").get_xscale() == "log"
    coarse = result.repick(n_bins=10, n_boot=0)
    assert len(coarse.pick.curve) <= 10 and coarse.steps is result.steps and len(result.pick.curve) > 10


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"stepz": 10}, r"^range_test: unknown keyword\(s\) 'stepz'\. Valid keywords: lre_min, lre_max, start_lr, end_lr, "
                    r"steps, seeds, pick_on, pick_args, data, .*step_mode, .*wandb_mode"),
    ({"lre_min": -4.0, "start_lr": 1e-4}, r"^range_test: lre_min=-4.0 and start_lr=0.0001 name the same end of the "
                                          r"range: give one \(lre_min = log10\(start_lr\)\)$"),
    ({"lre_max": -1.0, "end_lr": 0.1}, r"lre_max=-1.0 and end_lr=0.1 name the same end"),
    ({"start_lr": 0.0}, r"^range_test: start_lr=0.0: expected a learning rate > 0"),
    ({"start_lr": 1.0, "end_lr": 1e-3}, r"lre_min=0.0 > lre_max=-3.0"),
    ({"step_mode": "log"}, r"step_mode='log': expected one of exp, linear"),
    ({"pick_on": "dev_loss", "eval_every_steps": 0}, r"pick_on='dev_loss' is logged on eval steps only, and "
                                                     r"eval_every_steps=0 makes none"),
    ({"pick_on": "dev_loss", "pick_args": {"column": "loss"}}, r"pick_on='dev_loss' and pick_args=\{'column'"),
    ({"schedule": "step"}, r"^range_test: schedule='step' is not a keyword here: range_test always runs"),
    ({"seeds": [1, 2]}, r"^range_test: seeds=\[1, 2\] needs a function make\(seed\) -> Task, one model per seed; "
                        r"a Task is one model$"),
    ({"seeds": [1, 1]}, r"seed\(s\) \[1\] repeated"),
    ({"seed": 1, "seeds": [1]}, r"give one of them$"),
    ({"task_args": {"width": 3}}, r"a Task is already made$"),
    ({"lre_min": 1.0, "lre_max": 0.0}, r"lre_min=1.0 > lre_max=0.0"),
    ({"pick_args": {"n_binz": 3}}, r"pick_args has unknown key\(s\) 'n_binz'\. Valid keys: column, bin_width, n_bins"),
    ({"device": "cuda"}, r"^range_test: device='cuda' but the model is on cpu: a task trains where its model is"),
])
def test_bad_input_is_one_line_before_any_run(words_file, tmp_path, kwargs, message):
    task = tiny_make(1, data=str(words_file))
    before = state_of(task)
    with pytest.raises(LrscanError, match=message) as raised:
        range_test(task, **kwargs)
    assert "\n" not in str(raised.value)
    assert not (tmp_path / "wandb").exists()
    assert_same(before, state_of(task))


def test_a_range_test_too_short_for_a_pick_says_where_its_runs_are(words_file, tmp_path):
    with pytest.raises(LrscanError, match=r"^range_test: no pick from runs \w+ \(W&B group 'short'\): only 2 lre bin"):
        range_test(tiny_make(1, data=str(words_file)), steps=2, wandb_group="short")
    assert len(load_runs(tmp_path / "wandb", group="short").runs) == 1


def test_a_function_that_returns_no_task_is_one_line(tmp_path):
    with pytest.raises(LrscanError, match=r"^range_test: <lambda>\(seed=1, \.\.\.\) returned int 3, not a pipeline"):
        range_test(lambda seed: 3, seeds=[1, 2])
    assert not (tmp_path / "wandb").exists()


def test_the_package_exports_the_api():
    from lrscan import pipeline
    from lrscan.pipeline.study.range_test import RangeTestResult

    assert pipeline.RangeTestResult is RangeTestResult and "range_test" in dir(pipeline)
    assert Path(pipeline.range_test.__code__.co_filename).name == "range_test.py"


# -- one seed, one curve: whichever route, whichever seeds ran before --------------------------------------------

UNSEEDED = textwrap.dedent('''
    """A make that seeds nothing: its data, init, batches and dropout all come from the global generators."""
    import numpy as np
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    from lrscan.pipeline.train.task import Task


    def make(seed):
        X = torch.from_numpy(np.random.randn(256, 4).astype("float32"))
        Y = (X.sum(1, keepdim=True) > 0).float()
        model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Dropout(0.2), nn.Linear(16, 1))

        def batch(i):
            ix = torch.randint(0, len(X), (32,))
            return X[ix], Y[ix]

        return Task(model, torch.optim.SGD(model.parameters(), lr=0.1), batch,
                    lambda m, b: F.binary_cross_entropy_with_logits(m(b[0]), b[1]))
''')
ROUTE = {"lre_min": -3.0, "lre_max": 1.0, "steps": 60, "climb_burn_in_steps": 30, "num_threads": 1}


def losses_by_seed(result) -> dict[int, np.ndarray]:
    return {int(seed): rows.sort_values("step")["loss"].to_numpy() for seed, rows in result.steps.groupby("seed")}


def test_a_seed_gives_one_curve_by_every_route_and_in_any_seed_order(tmp_path):
    (tmp_path / "unseeded_task.py").write_text(UNSEEDED)
    spec = f"{tmp_path}/unseeded_task.py:make"
    make = load_make(spec)
    forward = losses_by_seed(range_test(make, seeds=[1, 2], wandb_mode="disabled", **ROUTE))
    torch.manual_seed(7), np.random.seed(7)  # whatever state the caller is in
    backward = losses_by_seed(range_test(make, seeds=[2, 1], wandb_mode="disabled", **ROUTE))
    by_spec = losses_by_seed(range_test(spec, seeds=[2], wandb_mode="disabled", **ROUTE))
    for seed in (1, 2):
        np.testing.assert_array_equal(forward[seed], backward[seed])
    np.testing.assert_array_equal(forward[2], by_spec[2])
    assert not np.array_equal(forward[1][:len(forward[2])], forward[2][:len(forward[1])])
    # the command line: python -m pipeline.train --task=file.py:make --seed=2
    flags = [f"--{k}={v}" for k, v in ROUTE.items()]
    env = {**os.environ, "WANDB_DIR": str(tmp_path / "cli"), "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    done = subprocess.run([sys.executable, "-m", "lrscan.pipeline.train", f"--task={spec}", "--seed=2", "--run_id=cli2",
                           "--schedule=range", "--ckpt_every_steps=0", *flags], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    cli = load_runs(tmp_path / "cli" / "wandb").steps.sort_values("step")["loss"].to_numpy()
    np.testing.assert_allclose(cli, forward[2], rtol=1e-6)  # float32 in the .wandb file


# -- what evaluate returns: in result.steps, and picked on -------------------------------------------------------


def test_dev_loss_is_in_the_steps_and_pick_on_picks_on_it(words_file, tmp_path):
    result = range_test(tiny_make, seeds=[1], task_args={"data": str(words_file)}, pick_on="dev_loss", **SMALL)
    steps = result.steps
    assert np.isfinite(steps["dev_loss"]).all()  # torch-lr-finder's val_loader mode: evaluated at every step
    assert result.pick.column == "dev_loss" and result.pick_args["column"] == "dev_loss"
    assert "pick (min_loss of dev_loss)" in str(result)
    again = pick_exponent(steps, result.runs, column="dev_loss")
    assert again.best_lre == result.best_lre and not np.array_equal(steps["dev_loss"], steps["loss"])
    # the same values as W&B has them
    loaded = load_runs(tmp_path / "wandb", group=result.group).steps
    for run_id, ours in steps.groupby("run_id"):
        theirs = loaded[loaded["run_id"] == run_id].sort_values("step")
        np.testing.assert_allclose(theirs["dev_loss"].to_numpy(), ours["dev_loss"].to_numpy(), rtol=1e-6)
    # every 4th step: dev_loss there only, NaN elsewhere, and the pick reads the measured rows
    sparse = range_test(tiny_make, seeds=[1], task_args={"data": str(words_file)}, pick_on="dev_loss",
                        eval_every_steps=4, wandb_mode="disabled", **SMALL)
    measured = sparse.steps.loc[sparse.steps["dev_loss"].notna(), "step"].to_numpy()
    assert measured.tolist() == list(range(3, int(sparse.steps["step"].max()) + 1, 4))
    assert sparse.pick.n_steps <= len(measured) and np.isfinite(sparse.best_lre)
    # on the loss (the default), dev_loss rides along in the steps at the eval steps
    plain = range_test(tiny_make, seeds=[1], task_args={"data": str(words_file)}, eval_every_steps=10,
                       wandb_mode="disabled", **SMALL)
    assert plain.pick.column == "loss" and plain.steps["dev_loss"].notna().sum() == len(plain.steps) // 10


def test_pick_on_an_evaluate_value_needs_an_evaluate(words_file, tmp_path):
    task = dataclasses.replace(tiny_make(1, data=str(words_file)), evaluate=None)
    with pytest.raises(LrscanError, match=r"^range_test: pick_on='dev_loss' needs a task with evaluate\(model\)"):
        range_test(task, pick_on="dev_loss", **SMALL)
    assert not (tmp_path / "wandb").exists()
    with pytest.raises(LrscanError, match=r"pick_on='dev_acc', but run \w+ logged no 'dev_acc' \(its columns: "):
        range_test(tiny_make(1, data=str(words_file)), pick_on="dev_acc", wandb_mode="disabled", **SMALL)


# -- the words users know: start_lr/end_lr, step_mode, apply -------------------------------------------------------


def test_start_lr_end_lr_linear_steps_and_apply(words_file):
    args = {"task_args": {"data": str(words_file)}, "steps": 80, "climb_burn_in_steps": 40, "wandb_mode": "disabled",
            "stop_on_climb": False}
    in_lr = range_test(tiny_make, start_lr=1e-4, end_lr=1.0, **args)
    in_lre = range_test(tiny_make, lre_min=-4.0, lre_max=0.0, **args)
    np.testing.assert_array_equal(in_lr.steps["lre"], in_lre.steps["lre"])
    np.testing.assert_array_equal(in_lr.steps["loss"], in_lre.steps["loss"])
    assert in_lr.steps["lre"].iloc[0] == -4.0 and in_lr.steps["lre"].iloc[-1] == 0.0
    # linear: evenly spaced in lr from the first to the last, the pick read in lre as ever
    linear = range_test(tiny_make, start_lr=1e-4, end_lr=1.0, step_mode="linear", **args)
    lrs = linear.steps.sort_values("step")["lr"].to_numpy()
    np.testing.assert_allclose(lrs, np.linspace(1e-4, 1.0, 80)[:len(lrs)], rtol=1e-12)
    np.testing.assert_array_equal(linear.steps.sort_values("step")["lre"].to_numpy(), np.log10(lrs))
    assert np.log10(1e-4) <= linear.best_lre <= 0.0
    # apply: the pick on every param group, keeping the ratios the groups were built with (a warm-up's
    # initial_lr, a frozen group at 0), and initial_lr moved with it
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2), nn.Linear(2, 2))
    opt = torch.optim.AdamW([{"params": model[0].parameters(), "lr": 1e-3},
                             {"params": model[1].parameters(), "lr": 0.0},
                             {"params": model[2].parameters(), "lr": 1e-2}])
    torch.optim.lr_scheduler.LambdaLR(opt, lambda step: step / 10)
    assert in_lr.apply(opt) == in_lr.best_lr
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([in_lr.best_lr, 0.0, 10 * in_lr.best_lr])
    assert [g["initial_lr"] for g in opt.param_groups] == pytest.approx([in_lr.best_lr, 0.0, 10 * in_lr.best_lr])
    in_lr.apply(opt, "valley")
    assert opt.param_groups[2]["lr"] == pytest.approx(10 * in_lr.valley_lr)
    with pytest.raises(LrscanError, match=r"apply\(suggester='best'\): expected one of min_loss, fastai_minimum"):
        in_lr.apply(opt, "best")
