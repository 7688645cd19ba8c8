"""analysis.sources.offline: real offline run folders: every shape of source, damage, resumed segments, gaps, runs
logged by other code (plain wandb scripts in the styles of the seed's loop, Lightning, the HF Trainer).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from lrscan.analysis.blocks import block_means, decay_summary
from lrscan.analysis.pick import pick_exponent
from lrscan.analysis.sources import load_runs
from lrscan.pipeline.errors import LrscanError
from tests.support.frames import expected_group_a_steps
from tests.support.runfiles import SPECS, copy_runs, make_run, rows_of
from tests.support.user_runs import BEST_LRE, expected_steps, logged


def test_sources_of_every_shape(runs_dir: Path) -> None:
    one_run_folder = next((runs_dir / "b1" / "wandb").glob("offline-run-*"))
    one_file = next(one_run_folder.glob("run-*.wandb"))
    for source in (runs_dir / "b1", one_run_folder, one_file, str(one_file)):
        assert load_runs(source).runs["run_id"].tolist() == ["b1"], source


def test_files_read_by_worker_processes_give_the_same_frames(runs_dir: Path, tmp_path: Path) -> None:
    # a damaged file among them as well: its error comes back from the worker as from this process
    source = copy_runs(runs_dir, tmp_path / "runs", *SPECS)
    (tmp_path / "runs" / "junk").mkdir()
    (tmp_path / "runs" / "junk" / "run-junk.wandb").write_bytes(b"not a wandb file")
    alone, parallel = (load_runs(source, job_type=None, workers=w) for w in (1, 2))
    assert_frame_equal(parallel.steps, alone.steps)
    assert_frame_equal(parallel.runs.drop(columns="path"), alone.runs.drop(columns="path"))
    assert parallel.problems == alone.problems and any("run-junk.wandb" in p for p in parallel.problems)
    assert parallel.notes == alone.notes


def test_dot_means_the_wandb_folder(runs_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(runs_dir / "a1")
    assert load_runs().runs["run_id"].tolist() == ["a1"]


def test_junk_among_good_runs_is_reported_not_fatal(runs_dir: Path, tmp_path: Path) -> None:
    copy_runs(runs_dir, tmp_path, "a1", "a2")
    (tmp_path / "run-junk.wandb").write_bytes(b"not a wandb file at all\n" * 50)
    (tmp_path / "notes.txt").write_text("run notes\n")
    loaded = load_runs(tmp_path, group="A")
    assert_frame_equal(loaded.steps, expected_group_a_steps())
    [problem] = loaded.problems
    assert "run-junk.wandb" in problem and "not a wandb run log" in problem


def test_damaged_and_torn_files_are_read_in_part(runs_dir: Path, tmp_path: Path) -> None:
    copy_runs(runs_dir, tmp_path, "a1", "a2")
    a2 = next(tmp_path.glob("a2/wandb/offline-run-*/run-a2.wandb"))
    data = a2.read_bytes()
    a2.write_bytes(data[: len(data) - 40])  # the exit record and more are gone: killed mid-write
    loaded = load_runs(tmp_path, group="A")
    runs = loaded.runs.set_index("run_id")
    assert runs.loc["a2", "state"] in ("running", "crashed") and pd.isna(runs.loc["a2", "exit_code"])
    assert runs.loc["a2", "n_steps"] >= 2
    expected = expected_group_a_steps().iloc[: 5 + runs.loc["a2", "n_steps"]]
    if runs.loc["a2", "n_steps"] < 3:
        expected = expected.drop(columns="dev_loss")  # logged on the lost step only
    assert_frame_equal(loaded.steps, expected)


def test_resumed_run_segments_are_merged(tmp_path: Path) -> None:
    first = make_run(tmp_path / "seg1", rows_of([-3.0, -2.0, -1.0, 0.0]), run_id="res1", group="R", config={"steps": 6})
    second_rows = rows_of([-0.5, 0.5, 1.0], start=3)  # resumed from a checkpoint at step 3
    second = make_run(tmp_path / "seg2", second_rows, run_id="res1", group="R", config={"steps": 6}, resume=True,
                      summary={"train_loss": 1.25})
    assert first.parent != second.parent
    loaded = load_runs(tmp_path)
    steps = loaded.steps
    assert steps["step"].tolist() == [0, 1, 2, 3, 4, 5]
    assert steps["lre"].tolist() == [-3.0, -2.0, -1.0, -0.5, 0.5, 1.0]  # step 3 from the later segment
    assert loaded.runs["n_steps"].tolist() == [6] and loaded.runs["train_loss"].tolist() == [1.25]
    assert len(loaded.problems) == 1 and "1 step(s)" in loaded.problems[0] and "res1" in loaded.problems[0]


@pytest.mark.parametrize("make_source, message", [
    (lambda tmp: tmp / "does-not-exist", "no such file or folder"),
    (lambda tmp: tmp, "no wandb runs in"),
    (lambda tmp: (tmp / "notes.txt").write_text("x") and tmp / "notes.txt", "is not a .wandb run file"),
    (lambda tmp: (tmp / "run-bad.wandb").write_bytes(b"garbage") and tmp, "no readable wandb run"),
])
def test_bad_sources(tmp_path: Path, make_source: Any, message: str) -> None:
    with pytest.raises(LrscanError, match=message):
        load_runs(make_source(tmp_path))


def test_a_history_with_a_hole_is_reported(tmp_path):
    import wandb as _wandb

    run = _wandb.init(mode="offline", dir=tmp_path, id="holey1", config={"schedule": "constant"}, job_type="train",
                      settings=_wandb.Settings(console="off", x_disable_stats=True))
    for step in list(range(0, 10)) + list(range(15, 20)):
        run.log({"lr": 0.1, "lre": -1.0, "loss": 2.0, "log10_loss": 0.3}, step=step)
    run.finish()
    _wandb.teardown()
    loaded = load_runs(tmp_path / "wandb")
    assert loaded.steps["step"].tolist() == list(range(0, 10)) + list(range(15, 20))
    assert any("holey1: 5 step(s) missing from its history, the first after step 9" in p for p in loaded.problems)


def wandb_leet_rows(path: Path) -> list[dict[str, Any]]:
    """Every history row of a run file as wandb's own reader gives it (`wandb leet inspect --json`)."""
    wandb_cli = Path(sys.executable).with_name("wandb")
    commands = subprocess.run([str(wandb_cli), "leet", "--help"], capture_output=True, text=True).stdout
    if not any(line.split()[:1] == ["inspect"] for line in commands.splitlines()):
        pytest.skip("this wandb has no `wandb leet inspect` (older releases); the newest pin compares with it")
    out = subprocess.run([str(wandb_cli), "leet", "inspect", "--json", str(path)], check=True, capture_output=True,
                         text=True).stdout
    records = [json.loads(line) for line in out.splitlines() if line.strip()]
    return [r["history"]["item"] for r in records if r.get("type") == "history"]


def test_a_loss_logged_as_nan_is_a_row_as_in_wandbs_own_reading(tmp_path: Path) -> None:
    rows = rows_of([-3.0 + 3.0 * i / 1999 for i in range(2000)])
    rows[234][1].update(loss=float("nan"), log10_loss=float("nan"))
    rows[1500] = (1500, {"lr": rows[1500][1]["lr"], "lre": rows[1500][1]["lre"]})  # lr only: no loss logged
    path = make_run(tmp_path, rows, run_id="nanloss1", config={"schedule": "range", "steps": 2000})
    steps = load_runs(path).steps
    theirs = pd.DataFrame([row for row in wandb_leet_rows(path) if "loss" in row]).replace("NaN", np.nan)
    assert len(theirs) == len(steps) == 1999  # the NaN row is there; the lr-only row is not a loss row
    np.testing.assert_array_equal(steps["step"].to_numpy(), theirs["_step"].to_numpy(np.int64))
    for key in ("lr", "lre", "loss", "log10_loss"):  # the frame's losses are float32, its lrs float64
        expected = theirs[key].to_numpy(np.float64).astype(steps[key].dtype)
        np.testing.assert_array_equal(steps[key].to_numpy(), expected, err_msg=key)
    at = steps.set_index("step").loc[234]
    assert np.isnan(at["loss"]) and at["lr"] == rows[234][1]["lr"]
    # the pick treats it as a step not measured; the block mean with a NaN inside is NaN, as torch's mean
    blocks = block_means(steps, "loss", 1000, keep_partial=True).set_index("block")
    assert np.isnan(blocks.loc[0, "loss"]) and np.isfinite(blocks.loc[1, "loss"])
    pick = pick_exponent(steps, n_boot=0)
    assert pick.per_run["last_step"].iloc[0] == 1999


# -- runs you logged yourself: plain wandb scripts in other code's styles (tests/support/user_runs.py) --


@pytest.mark.parametrize("name, keys", [
    ("seed_loop", ["loss", "lr", "_step"]),
    ("lightning", ["loss_step", "lr-SGD", "trainer/global_step"]),
    ("hf_trainer", ["train/loss", "train/learning_rate", "train/global_step"]),
    ("alternating", ["loss", "lr", "_step"]),
])
def test_a_range_test_of_your_own_code_is_read_and_picked(user_runs: dict[str, Path], name: str,
                                                          keys: list[str]) -> None:
    loaded = load_runs(user_runs[name])
    info = loaded.runs[["loss_key", "lr_key", "step_key", "schedule", "schedule_from"]]
    assert info.values.tolist() == [[*keys, "range", "lr trace"]]
    assert loaded.problems == [] and loaded.notes == []  # logged every 10 steps or on odd steps: nothing missing
    # one row per logged loss, with the lr in force at its step; lre and log10_loss derived
    steps = loaded.steps
    assert_frame_equal(steps[["step", "lr", "loss"]], expected_steps(name, user_runs[name]))
    assert np.allclose(steps["lre"], np.log10(steps["lr"]))
    assert np.allclose(steps["log10_loss"], np.log10(steps["loss"]))
    pick = pick_exponent(steps, loaded.runs, n_boot=0)
    assert abs(pick.best_lre - BEST_LRE) <= 0.15


def test_a_step_decay_without_a_config_is_read_as_one_and_summarised(user_runs: dict[str, Path],
                                                                     tmp_path: Path) -> None:
    for name in ("step_decay_600", "step_decay_1200"):
        shutil.copytree(user_runs[name], tmp_path / name)
    loaded = load_runs(tmp_path)
    schedule = loaded.runs[["run_id", "schedule_from", "schedule", "lr", "decay_steps", "decay_lrs"]]
    assert schedule.values.tolist() == [["decay1200", "lr trace", "step", 0.1, "[1200]", "[0.01]"],
                                        ["decay600", "lr trace", "step", 0.1, "[600]", "[0.01]"]]
    summary = decay_summary(loaded.steps, loaded.runs, block_steps=1000)
    # the last block (steps 1000-1999), from what the scripts logged
    final = {run_id: float(np.mean(np.log10([r["loss"] for r in logged(tmp_path / name)[1000:]], dtype=np.float32)))
             for run_id, name in (("[600]", "step_decay_600"), ("[1200]", "step_decay_1200"))}
    table = summary.table.set_index("decay_steps")
    assert summary.by == ["decay_steps"] and table["final_block"].tolist() == [1, 1]
    assert table["final_block_loss"].to_dict() == pytest.approx(final, rel=1e-6)
    assert summary.best["decay_steps"] == min(final, key=final.get)


def test_a_schedule_it_cannot_name_is_left_out_of_the_pick_and_shown_in_the_blocks(user_runs: dict[str, Path],
                                                                                   tmp_path: Path) -> None:
    for name in ("seed_loop", "cosine"):
        shutil.copytree(user_runs[name], tmp_path / name)
    loaded = load_runs(tmp_path)
    [note] = loaded.notes
    assert note.startswith("run cosine1: lr rises to 0.1 then falls") and note.endswith(
        "and its config names no schedule: left out of the exponent pick, shown in the block means")
    assert loaded.runs.set_index("run_id")["schedule"].to_dict() == {"cosine1": "other", "seedloop1": "range"}
    assert pick_exponent(loaded.steps, loaded.runs, n_boot=0).per_run["run_id"].tolist() == ["seedloop1"]
    assert block_means(loaded.steps)["run_id"].unique().tolist() == ["cosine1", "seedloop1"]


def test_keys_named_by_the_caller(tmp_path: Path) -> None:
    lres = np.linspace(-3, 0, 300)
    rows = [(i, {"my/lr": 10.0**lre, "my/loss": 2.0 + (lre - BEST_LRE) ** 2}) for i, lre in enumerate(lres)]
    make_run(tmp_path, rows, run_id="mine1", job_type=None)
    with pytest.raises(LrscanError) as error:
        load_runs(tmp_path)
    assert str(error.value) == (
        "none of the 1 matching run(s) logged a loss to analyse: run mine1: no loss and no lr logged (looked for "
        "loss: loss, log10_loss, train/loss, raw_loss, train_loss, training_loss, loss_step, train/loss_step, "
        "raw_loss_step, train_loss_step, training_loss_step; lr: lr, lre, learning_rate, train/learning_rate, lr_0, "
        "lr-<Optimizer>; it logged my/loss, my/lr); --loss-key and --lr-key name other keys")
    loaded = load_runs(tmp_path, loss_key="my/loss", lr_key="my/lr")
    assert loaded.runs[["loss_key", "lr_key"]].values.tolist() == [["my/loss", "my/lr"]]
    assert abs(pick_exponent(loaded.steps, loaded.runs, n_boot=0).best_lre - BEST_LRE) <= 0.1
    with pytest.raises(LrscanError, match=r"run mine1: no loss logged \(looked for loss: my/typo; it logged"):
        load_runs(tmp_path, loss_key="my/typo", lr_key="my/lr")
