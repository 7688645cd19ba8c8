"""The WaveNet example, tiny, on a word list made here: range test over seeds, exact batches, the trainer CLI."""

from __future__ import annotations

import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch

from examples.wavenet import make
from lrscan.analysis.sources import load_runs
from lrscan.pipeline import range_test
from lrscan.pipeline.errors import LrscanError
from tests.conftest import REPO

TINY = {"n_embd": 4, "n_hidden": 16, "block_size": 4, "batch_size": 16}


def tiny(words_file) -> dict:
    return {**TINY, "data": str(words_file)}


def test_it_is_the_lectures_model_with_adamw(real_names):
    task = make(1, data=str(real_names))
    assert sum(p.numel() for p in task.model.parameters()) == 76579  # makemore part 5's count
    assert type(task.optimizer).__name__ == "AdamW" and len(task.optimizer.param_groups) == 2


def test_a_batch_is_a_function_of_its_index(words_file):
    """Exact resume: batch i is the same whoever asks and whenever, and a make leaves the global RNG alone."""
    rng = torch.get_rng_state()
    a, b = make(1, **tiny(words_file)), make(1, **tiny(words_file))
    assert torch.equal(torch.get_rng_state(), rng)
    for i in (0, 7, 1000):
        assert all(torch.equal(x, y) for x, y in zip(a.batches(i), b.batches(i)))
    assert not torch.equal(a.batches(7)[0], a.batches(8)[0])
    assert not torch.equal(a.batches(7)[0], make(2, **tiny(words_file)).batches(7)[0])


def test_evaluate_gives_dev_and_test_loss_and_keeps_the_mode(words_file):
    task = make(1, **tiny(words_file))
    losses = task.evaluate(task.model)
    assert set(losses) == {"dev_loss", "test_loss"} and all(np.isfinite(v) for v in losses.values())
    assert task.model.training


def test_a_block_size_that_does_not_halve_to_one_is_one_line(words_file):
    with pytest.raises(LrscanError, match=r"^block_size=6: must be a power of 2"):
        make(1, **{**tiny(words_file), "block_size": 6})


@pytest.mark.slow
def test_range_test_over_two_seeds_gives_finite_picks_and_leaves_no_trace(words_file):
    states = (torch.get_rng_state(), np.random.get_state(), random.getstate())
    result = range_test(make, seeds=[1, 2], lre_min=-4.0, lre_max=0.0, steps=120, climb_burn_in_steps=60,
                        task_args=tiny(words_file), wandb_mode="disabled")
    after = (torch.get_rng_state(), np.random.get_state(), random.getstate())
    assert torch.equal(states[0], after[0]) and np.array_equal(states[1][1], after[1][1]) and states[2] == after[2]
    assert result.seeds == [1, 2] and len(set(result.run_ids)) == 2
    assert all(np.isfinite(v) for v in (result.best_lre, result.steepest_lre, result.valley_lre))
    assert result.ci is not None and result.ci[0] <= result.best_lre <= result.ci[1]
    assert set(result.steps["seed"]) == {1, 2}
    # the runs' config records the task, so the same runs can be made from the command line
    assert set(result.runs["run_id"]) == set(result.run_ids)

    # a Task made by hand: its weights, BatchNorm statistics and AdamW moments come back bit for bit
    task = make(3, **tiny(words_file))
    loss = task.loss_fn(task.model, task.batches(0))
    loss.backward()
    task.optimizer.step()
    before = ({k: v.clone() for k, v in task.model.state_dict().items()},
              {k: {n: t.clone() for n, t in s.items()} for k, s in task.optimizer.state_dict()["state"].items()})
    range_test(task, steps=60, climb_burn_in_steps=30, wandb_mode="disabled")
    assert all(torch.equal(v, task.model.state_dict()[k]) for k, v in before[0].items())
    now = task.optimizer.state_dict()["state"]
    assert all(torch.equal(t, now[k][n]) for k, s in before[1].items() for n, t in s.items())
    assert task.optimizer.param_groups[0]["lr"] == 1e-3


@pytest.mark.slow
def test_the_trainer_runs_it_from_the_command_line(words_file, tmp_path):
    task_args = str(tiny(words_file))
    argv = [sys.executable, "-m", "lrscan.pipeline.train", "--task=examples/wavenet.py:make",
            f"--task_args={task_args}",
            "--schedule=constant", "--lr=0.003", "--steps=60", "--run_id=wavenet1"]
    env = {**os.environ, "WANDB_DIR": str(tmp_path), "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = load_runs(tmp_path / "wandb")
    steps = loaded.steps.sort_values("step")
    assert steps["step"].tolist() == list(range(60)) and np.isfinite(steps["loss"]).all()
    assert steps["loss"].iloc[-10:].mean() < steps["loss"].iloc[:10].mean()  # AdamW at 3e-3 learns
    run = loaded.runs.iloc[0]
    assert run["task"] == "examples/wavenet.py:make" and np.isfinite(run["dev_loss"]) and np.isfinite(run["test_loss"])


def test_it_finds_its_data_as_the_trainer_does_from_any_folder(tmp_path, monkeypatch):
    """$LRSCAN_DATA (then data/names.txt here, then the set-up's copy), through the trainer's own default_data_path."""
    (tmp_path / "ab.txt").write_text("ab\nba\naab\nbba\nabab\n" * 20)
    elsewhere = tmp_path / "notebook"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("LRSCAN_DATA", str(tmp_path / "ab.txt"))
    assert make(1, **TINY).model[-1].out_features == 3  # a, b and the end mark: the list $LRSCAN_DATA names
    monkeypatch.setenv("LRSCAN_DATA", str(tmp_path / "missing.txt"))
    with pytest.raises(LrscanError, match=f"data file '{tmp_path / 'missing.txt'}' does not exist"):
        make(1, **TINY)
    monkeypatch.delenv("LRSCAN_DATA")
    from lrscan.pipeline.config import SETUP_DATA

    if SETUP_DATA.is_file():  # after `make data`: the set-up's copy, from a folder without data/
        assert make(1, **TINY).model[-1].out_features == 27


@pytest.mark.slow
def test_the_script_runs_from_another_folder(words_file, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    script = str(REPO / "examples" / "wavenet.py")
    env = {**os.environ, "LRSCAN_DATA": str(words_file), "WANDB_DIR": str(tmp_path), "WANDB_MODE": "disabled"}
    done = subprocess.run([sys.executable, script, "--steps=40", "--seeds=1", "--lre_min=-3", "--lre_max=-1"],
                          cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "pick (min_loss of loss)" in done.stdout and (elsewhere / "wavenet.png").is_file()
    env["LRSCAN_DATA"] = str(tmp_path / "missing.txt")
    done = subprocess.run([sys.executable, script, "--steps=40", "--seeds=1"], cwd=elsewhere, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr[-3000:]
    assert f"data file '{tmp_path / 'missing.txt'}' does not exist" in done.stderr
