"""analysis.grids: anyone's lr grids found among their runs and judged; python -m analysis on a user's own grid."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lrscan.analysis.__main__ import main as analysis_main
from lrscan.analysis.decide import RULE
from lrscan.analysis.grids import constant_lr_grids, judge_grids
from lrscan.analysis.sources import load_runs


def test_a_grid_is_runs_equal_in_every_hyperparameter_but_lr_and_seed():
    runs = pd.DataFrame({
        "run_id": list("abcdefghij"),
        "group": ["g1"] * 4 + ["g2", "g2", "g3", None, None, "g1"],
        "schedule": ["constant"] * 4 + ["constant", "constant", "constant", "constant", "constant", "range"],
        "lr": [0.1, 0.01, 0.1, 0.01, 0.1, 0.1, 0.3, 0.1, 0.01, np.nan],
        "seed": [1, 1, 1, 1, 1, 2, 1, 1, 1, 1],
        "batch_size": [16, 16, 32, 32, 16, 16, 16, 16, 16, 16],
        "state": ["finished"] * 10,
    })
    grids, notes = constant_lr_grids(runs)
    # batch size splits g1; g2 has one lr (no grid); runs without a group are one grid, never a group "nan"
    assert grids == {"g1 (batch_size 16)": ["a", "b"], "g1 (batch_size 32)": ["c", "d"],
                     "runs without a group (batch_size 16)": ["h", "i"]} and notes == []
    # running and crashed runs are left out, as the pick leaves them, and named
    states = runs.assign(state=["finished", "crashed", *["finished"] * 5, "running", "finished", "finished"])
    grids, notes = constant_lr_grids(states)
    assert grids == {"g1 (batch_size 32)": ["c", "d"]}  # a alone is left at batch size 16: no grid
    assert notes == ["constant-lr runs left out of the lr grids (crashed): b",
                     "constant-lr runs left out of the lr grids (running): h"]
    assert constant_lr_grids(states, include_running=True)[0] == {"g1 (batch_size 32)": ["c", "d"],
                                                                  "runs without a group (batch_size 16)": ["h", "i"]}


def test_a_grid_that_cannot_be_judged_is_a_note_and_the_others_are_judged():
    runs = pd.DataFrame({"run_id": list("abcdef"), "group": ["ok", "ok", "dup", "dup", "dup", "dup"],
                         "schedule": "constant", "lr": [0.1, 0.01, 0.1, 0.01, 0.1, 0.01], "seed": 1,
                         "state": "finished"})
    steps = pd.concat([pd.DataFrame({"run_id": r, "step": range(10), "lr": lr, "loss": 2.0 + lr})
                       for r, lr in zip(runs["run_id"], runs["lr"])], ignore_index=True)
    verdicts, notes = judge_grids(steps, runs)
    assert [v.group for v in verdicts] == ["ok"] and verdicts[0].chosen == "lr=0.01" and verdicts[0].steps == 10
    assert len(notes) == 1
    assert notes[0].startswith("lr grid dup: not judged: two or more runs of one candidate and seed")


GRID_SCRIPT = '''
import math, random, sys
import wandb
# a user's own lr x batch-size grid, as Lightning users log it: train_loss every step, val_loss at the end; no
# lrscan. 200 steps: shorter than a block of 1000. One more run crashed, and lr 1.0 diverged (NaN at the end).
def one(lr, seed, batch_size, exit_code=0, diverge=False):
    random.seed(seed)
    run = wandb.init(project="mine", group="my-lr-grid", config={"lr": lr, "seed": seed, "batch_size": batch_size},
                     reinit="create_new", settings=wandb.Settings(console="off"))
    hard = 0.2 * seed   # seed 2 is harder at every lr: paired seeds see through it
    for step in range(200):
        loss = 2 + hard + (math.log10(lr) + 1.5) ** 2 + random.gauss(0, 0.01) + 0.001 * (batch_size == 16)
        run.log({"lr": lr, "train_loss": float("nan") if diverge and step > 150 else loss})
    run.log({"val_loss": 2.1 + hard + (math.log10(lr) + 1.5) ** 2 + random.gauss(0, 0.003)})
    run.finish(exit_code=exit_code)
for batch_size in (16, 32):
    for lr in (0.003, 0.01, 0.03, 0.1):
        for seed in (1, 2, 3):
            one(lr, seed, batch_size)
    for seed in (1, 2, 3):
        one(1.0, seed, batch_size, diverge=True)
one(0.3, 1, 32, exit_code=1)
'''


@pytest.fixture(scope="module")
def user_grid(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("grid")
    env = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DIR": str(root), "PATH": "/usr/bin:/bin",
           "HOME": str(root)}
    done = subprocess.run([sys.executable, "-c", GRID_SCRIPT], cwd=root, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return root / "wandb"


@pytest.mark.slow
def test_python_m_analysis_judges_a_users_200_step_lr_by_batch_size_grid_with_no_flags(user_grid, tmp_path, capsys):
    out = tmp_path / "report"
    assert analysis_main([str(user_grid), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [g["group"] for g in summary["prove"]] == ["my-lr-grid (batch_size 16)", "my-lr-grid (batch_size 32)"]
    for grid in summary["prove"]:
        assert grid["criterion"] == "val_loss" and grid["steps"] == 200 and grid["seeds"] == [1, 2, 3]
        table = pd.DataFrame(grid["table"])
        assert table["lr"].tolist()[:2] == pytest.approx([0.03, 0.01]) and grid["chosen"] == "lr=0.03"
        # lr 1.0 diverged (NaN training losses; its val_loss was finite): last, never chosen
        assert table["name"].iloc[-1] == "lr=1" and table["status"].iloc[-1] == "diverged"
        assert grid["reference"] == "lr=0.03" and grid["chosen_by"] in ("told apart from every other",
                                                                           f"rule {RULE} among the tied")
    assert "constant-lr runs left out of the lr grids (crashed)" in " ".join(summary["notes"])
    assert any("no run has a full block of 1000 steps" in n for n in summary["notes"])
    report = (out / "report.md").read_text()
    assert "## Prove: my-lr-grid (batch_size 16)" in report and "Judged by val_loss" in report
    assert (out / "prove_loss_vs_lr.png").stat().st_size > 10_000 and (out / "prove_table_2.csv").is_file()
    printed = capsys.readouterr().out
    assert "lr grid my-lr-grid (batch_size 32): Judged by val_loss" in printed

    assert analysis_main([str(user_grid), "--out", str(tmp_path / "none"), "--no-prove"]) == 0
    assert json.loads((tmp_path / "none" / "summary.json").read_text())["prove"] == []
    assert analysis_main([str(user_grid), "--out", str(tmp_path / "tail"), "--held-out-key", "nope"]) == 0
    notes = json.loads((tmp_path / "tail" / "summary.json").read_text())["notes"]
    assert any("not judged: --held-out-key nope: 12 run(s) did not log it" in n for n in notes)


@pytest.mark.slow
def test_the_loaded_grid_judges_the_same_as_a_frame_of_its_final_losses(user_grid):
    loaded = load_runs(str(user_grid))
    verdicts, _ = judge_grids(loaded.steps, loaded.runs)
    runs = loaded.runs.set_index("run_id")
    table = verdicts[0].table.set_index("name")
    assert math.isclose(table.loc["lr=0.03", "mean"],
                        runs.loc[(runs["lr"] == 0.03) & (runs["batch_size"] == 16), "val_loss"].mean())
