"""The study's prove stage: flags, prove.yaml (a sweep whose points pack), the report sentence, a SIGKILL resume."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import wandb
import yaml

from lrscan.analysis.decide import RULE
from lrscan.analysis.judge import TABLE_COLUMNS
from lrscan.pipeline.config import TrainConfig, expand_coupled
from lrscan.pipeline.errors import LrscanError
from lrscan.pipeline.packing import pack_key
from lrscan.pipeline.study.prove_stage import (
    check_prove_flags,
    decay_grid_steps,
    default_prove_steps,
    prove_parameters,
    write_prove_yaml,
)
from lrscan.pipeline.sweep import load_sweep
from tests.conftest import REPO, make_words

CANDIDATES = pd.DataFrame({"name": ["fastai_minimum", "min_loss"],
                           "suggested_by": ["fastai_minimum, valley", "min_loss"],
                           "lr": [0.01, 0.1], "lre": [-2.0, -1.0]})


def test_flags_are_checked_in_one_line():
    assert check_prove_flags(None, "3", "") == (None, (1, 2, 3), ())
    assert check_prove_flags(500, "4,7", "0.003, 0.01") == (500, (4, 7), (0.003, 0.01))
    assert check_prove_flags(10, 2, [0.1]) == (10, (1, 2), (0.1,))
    for bad in [(0, "3", ""), (10, "0", ""), (10, "1,1", ""), (10, "x", ""), (10, "3", "0.1,-2"), (10, "3", "a")]:
        with pytest.raises(LrscanError, match="--prove-"):
            check_prove_flags(*bad)


def test_the_default_budget_is_a_third_of_the_decay_grid():
    assert default_prove_steps(12000) == 4000 and default_prove_steps(200000) == 66667 and default_prove_steps(1) == 1
    base = yaml.safe_load((REPO / "sweeps" / "decay_grid.yaml").read_text())
    assert decay_grid_steps(base, {}) == 200000
    assert decay_grid_steps(base, {"steps": {"value": 12000}}) == 12000


def test_prove_yaml_is_a_constant_lr_by_seed_grid_whose_points_pack(tmp_path):
    parameters = {"n_hidden": {"value": 16}, **prove_parameters(CANDIDATES, seeds=[1, 2, 3], steps=400)}
    path = write_prove_yaml(REPO / "sweeps" / "decay_grid.yaml", tmp_path / "prove.yaml", parameters, "test")
    text = path.read_text()
    assert write_prove_yaml(REPO / "sweeps" / "decay_grid.yaml", path, parameters, "test").read_text() == text
    sweep = load_sweep(path)
    assert sweep.key.startswith("prove-") and len(sweep.points) == 6
    configs = []
    for point in sweep.points:
        fields = {}
        for key, value in point.items():
            fields.update(expand_coupled(key, value))
        configs.append(TrainConfig(**fields))
    assert {c.schedule for c in configs} == {"constant"} and {c.steps for c in configs} == {400}
    assert {c.eval_every_steps for c in configs} == {100} and {c.n_hidden for c in configs} == {16}
    assert sorted((c.lr, c.seed) for c in configs) == sorted((lr, s) for lr in (0.01, 0.1) for s in (1, 2, 3))
    named = {c.lr: (c.wandb_name, c.wandb_tags) for c in configs}
    assert named[0.01] == ("prove-fastai_minimum-lr0.01", ("prove", "fastai_minimum", "valley"))
    assert len({pack_key(c) for c in configs}) == 1  # they differ in lr, seed and names only: one pack
    assert "decay_steps" not in sweep.config["parameters"] and "lr" not in sweep.config["parameters"]


STUDY_CODE = ("import sys; from pathlib import Path; from tests.pipeline.study.test_study import tiny_study; "
              "s = tiny_study(Path(sys.argv[1]), prove=True, prove_steps=1500, prove_seeds=2); s.run()")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_study_killed_in_the_prove_stage_resumes_with_the_same_command(tmp_path):
    words = tmp_path / "words.txt"
    words.write_text("\n".join(make_words()) + "\n")
    out = tmp_path / "study"
    # the study's caller has a wandb service of its own (a notebook that called wandb.init): the killed points'
    # runs must not stay "in use" there for the study that resumes them
    wandb.setup()
    env = {**os.environ, "LRSCAN_DATA": str(words), "WANDB_SILENT": "true", "WANDB_MODE": "offline"}
    assert env.get("WANDB_SERVICE"), "wandb.setup() left no service token to pass on"
    argv = [sys.executable, "-c", STUDY_CODE, str(out)]
    first = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)
    seen = []
    for line in first.stdout:
        seen.append(line)
        if "] prove:" in line:
            break
    assert any("] prove:" in s for s in seen), "".join(seen)[-3000:]
    deadline = time.monotonic() + 120
    while not list((out / "sweeps").glob("prove-*/wandb/*/run-*.wandb")) and time.monotonic() < deadline:
        time.sleep(0.2)
    prove_dir = next((out / "sweeps").glob("prove-*"))
    time.sleep(2.0)
    os.killpg(first.pid, signal.SIGKILL)  # the whole study, its runner and its pack, mid-stage
    first.wait(timeout=60)
    first.stdout.close()
    manifest = [json.loads(x) for x in (prove_dir / "manifest.jsonl").read_text().splitlines() if x.strip()]
    assert not all(m["state"] == "finished" for m in manifest), "the prove stage had finished before the kill"
    state = json.loads((out / "state.json").read_text())
    yaml_text = (out / "stages" / "prove.yaml").read_text()

    second = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert (out / "stages" / "prove.yaml").read_text() == yaml_text  # the same candidates, the same sweep
    assert json.loads((out / "state.json").read_text())["prove_candidates"] == state["prove_candidates"]
    summary = json.loads((out / "report" / "summary.json").read_text())
    chosen = next(e for e in summary["prove"] if e["name"] == summary["prove_decision"]["chosen"])
    assert summary["chosen_lr"] == chosen["lr"] and summary["rule"] == RULE
    assert summary["chosen_by"] == summary["prove_decision"]["chosen_by"]
    assert {e["status"] for e in summary["prove"]} <= {"pick", "leader", "told apart", "tied", "too few seeds",
                                                       "diverged", "ranking contradicted by the pairing"}
    assert summary["decay"]["lr"] == summary["chosen_lr"]
    n = len(state["prove_candidates"])
    assert len(summary["prove"]) == n and all(e["seeds"] == [1, 2] for e in summary["prove"])
    assert list(summary["prove"][0]) == TABLE_COLUMNS
    # each candidate x seed is one run, resumed in place: its id is the point's, never a second run
    runs = {re.sub(r"^offline-run-\d{8}_\d{6}-", "", p.name) for p in prove_dir.joinpath("wandb").glob("offline-run-*")}
    assert runs == {f"{prove_dir.name}-{i:04d}" for i in range(2 * n)}
    decay = yaml.safe_load((out / "stages" / "decay_grid.yaml").read_text())
    assert decay["parameters"]["lr"]["value"] == summary["chosen_lr"]
    report = (out / "report" / "report.md").read_text()
    assert report.startswith("Judged by dev_loss") and "after 1500 steps: " in report.splitlines()[0]
    assert report.splitlines()[1] == summary["prove_decision"]["opening"]
    assert (out / "report" / "prove" / "prove_loss_vs_lr.png").is_file()
    assert (out / "report" / "prove_range_candidates.png").is_file()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_zoom_runs_the_zoom_sweep_and_proves_its_candidates(tmp_path, monkeypatch):
    from tests.pipeline.study.test_study import tiny_study

    words = tmp_path / "words.txt"
    words.write_text("\n".join(make_words()) + "\n")
    monkeypatch.setenv("LRSCAN_DATA", str(words))
    with pytest.raises(LrscanError, match="--zoom proves"):
        tiny_study(tmp_path / "x", prove=False, zoom=True)
    out = tmp_path / "study"
    summary = tiny_study(out, prove=True, zoom=True, prove_steps=60, prove_seeds=1).run()
    zoomed = json.loads((out / "report" / "zoom" / "summary.json").read_text())
    assert (out / "stages" / "lr_zoom.yaml").read_text() == (out / "report" / "range" / "zoom.yaml").read_text()
    assert zoomed["counts"]["range_runs"] == 3  # the zoom sweep's three seeds
    min_loss = next(e for e in summary["prove"] if e["name"] == "min_loss")
    assert min_loss["lre"] == pytest.approx(zoomed["best_lre"])
    assert summary["chosen_by"] == summary["prove_decision"]["chosen_by"]
