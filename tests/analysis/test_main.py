"""`python -m analysis` on real offline wandb runs: the loader, the report, the CLI's errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lrscan.analysis.__main__ import main
from lrscan.pipeline.config import TrainConfig
from tests.conftest import REPO
from tests.support.frames import make_loaded
from tests.support.user_runs import BEST_LRE as USER_BEST_LRE
from tests.support.user_runs import logged

BEST_LRE = -1.2
RANGE_GROUP, DECAY_GROUP = "lr_range-test", "decay-test"
RANGE_STEPS, DECAY_STEPS = 400, 1000


def range_curve(seed: int, stop_lre: float | None = None) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    lre = np.linspace(-3.0, 0.0, RANGE_STEPS)
    loss = 2.0 + (lre - BEST_LRE) ** 2 + rng.normal(0, 0.05, RANGE_STEPS)
    frame = pd.DataFrame({"step": np.arange(RANGE_STEPS), "lr": 10.0 ** lre, "lre": lre, "loss": loss})
    return frame if stop_lre is None else frame.loc[frame["lre"] <= stop_lre]


def decay_curve(decay_step: int) -> pd.DataFrame:
    step = np.arange(DECAY_STEPS)
    lr = np.where(step < decay_step, 0.1, 0.01)
    settling = 0.05 * np.exp(-np.maximum(step - decay_step, 0) / 200)  # an earlier drop has settled further
    noise = np.random.default_rng(decay_step).normal(0, 0.02, DECAY_STEPS)
    loss = 2.1 + 0.5 * lr + settling + np.exp(-step / 200) + noise
    return pd.DataFrame({"step": step, "lr": lr, "lre": np.log10(lr), "loss": loss})


def log_run(folder: Path, run_id: str, group: str, config: dict, history: pd.DataFrame, summary: dict) -> None:
    """One offline run as the trainer writes it: every TrainConfig field, 4 keys per step, explicit steps."""
    import wandb

    config = TrainConfig.from_mapping({**config, "run_id": run_id}).to_dict()
    run = wandb.init(mode="offline", dir=folder, id=run_id, project="lrscan", group=group, job_type="train",
                     config=config, settings=wandb.Settings(console="off", x_disable_stats=True), reinit="create_new")
    for row in history.itertuples(index=False):
        run.log({"lr": row.lr, "lre": row.lre, "loss": row.loss, "log10_loss": float(np.log10(row.loss))},
                step=int(row.step))
    run.summary.update(summary)
    run.finish()


@pytest.fixture(scope="module")
def runs_folder(tmp_path_factory) -> tuple[Path, list[tuple[dict, pd.DataFrame]]]:
    folder = tmp_path_factory.mktemp("source")
    made: list[tuple[dict, pd.DataFrame]] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_SILENT", "true")
        mp.setenv("WANDB_MODE", "offline")
        mp.setenv("WANDB_DIR", str(folder))
        for seed in (1, 2, 3):
            stopped = seed == 3
            hist = range_curve(seed, stop_lre=-0.3 if stopped else None)
            config = {"seed": seed, "schedule": "range", "steps": RANGE_STEPS}
            summary = {"train_loss": 2.0, "final_step": int(hist["step"].max())}
            if stopped:
                summary.update(stop_reason="climb", stop_step=int(hist["step"].max()))
            log_run(folder, f"range{seed}", RANGE_GROUP, config, hist, summary)
            made.append((config, hist))
        for decay_step in (300, 600):
            hist = decay_curve(decay_step)
            config = {"seed": 1, "schedule": "step", "steps": DECAY_STEPS, "decay_steps": [decay_step],
                      "decay_lrs": [0.01]}
            tail = float(hist["loss"].iloc[-100:].mean())
            log_run(folder, f"decay{decay_step}", DECAY_GROUP, config, hist,
                    {"train_loss": tail, "dev_loss": tail + 0.05, "test_loss": tail + 0.06,
                     "final_step": DECAY_STEPS - 1})
            made.append((config, hist))
        import wandb

        wandb.teardown()  # run.finish() may return before wandb-core has flushed the files; this waits
    return folder, made


def test_synthetic_frames_have_the_loaders_shape(runs_folder):
    from lrscan.analysis.sources import load_runs

    folder, made = runs_folder
    real = load_runs(folder)
    fake = make_loaded(made)
    assert set(real.steps.columns) == set(fake.steps.columns)
    for column in fake.steps.columns:
        assert real.steps[column].dtype.kind == fake.steps[column].dtype.kind or (
            isinstance(real.steps[column].dtype, pd.CategoricalDtype)
            and isinstance(fake.steps[column].dtype, pd.CategoricalDtype)
        ), column
    assert real.steps["run_id"].astype(str).unique().tolist() == ["decay300", "decay600", "range1", "range2", "range3"]
    assert {"run_id", "lr", "seed", "decay_steps", "dev_loss", "stop_reason"} <= set(real.runs.columns)


@pytest.mark.slow
def test_cli_end_to_end(runs_folder, tmp_path):
    folder, _ = runs_folder
    out = tmp_path / "report"
    env = {**os.environ, "WANDB_SILENT": "true", "WANDB_DIR": str(tmp_path / "analysis_runs"), "WANDB_MODE": "offline"}
    (tmp_path / "analysis_runs").mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "lrscan.analysis", str(folder), "--out", str(out), "--block-steps", "250",
         "--bin-width", "0.1", "--n-boot", "200", "--log-to-wandb", "--wandb-mode", "offline"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert abs(summary["best_lre"] - BEST_LRE) <= 0.1
    low, high = summary["best_lre_ci"]
    assert low <= summary["best_lre"] <= high
    assert summary["counts"]["runs_read"] == 5 and summary["counts"]["range_runs"] == 3
    assert summary["counts"]["steps_read"] == 2 * RANGE_STEPS + len(range_curve(3, -0.3)) + 2 * DECAY_STEPS
    stops = {r["run_id"]: r["stop_reason"] for r in summary["per_run"]}
    assert stops == {"range1": None, "range2": None, "range3": "climb"}
    assert summary["decay"]["best"]["decay_steps"] == "[300]"
    assert summary["wandb_run"]["mode"] == "offline"
    assert list((tmp_path / "analysis_runs").rglob(f"run-{summary['wandb_run']['id']}.wandb"))
    printed = done.stdout
    assert f"picked lre {summary['best_lre']:.3f}" in printed and "CI [" in printed
    assert "suggesters: min_loss" in printed and "read 5 runs" in printed


def test_cli_filters_and_default_out(runs_folder, tmp_path, monkeypatch, capsys):
    folder, _ = runs_folder
    monkeypatch.chdir(tmp_path)
    assert main([str(folder), "--group", RANGE_GROUP, "--n-boot", "50"]) == 0
    printed = capsys.readouterr().out
    assert "read 3 runs" in printed and "decay grid" not in printed
    reports = list((tmp_path / "reports").glob(f"{RANGE_GROUP}-*"))
    assert len(reports) == 1
    assert json.loads((reports[0] / "summary.json").read_text())["filters"]["group"] == RANGE_GROUP


@pytest.mark.parametrize("argv, message", [
    (["{tmp}/no_such_folder"], "no_such_folder"),
    (["{src}", "--group", "no-such-group"], "no-such-group"),
    (["{src}", "--block-steps", "0"], "--block-steps"),
    (["{src}", "--bin-width", "0.1", "--n-bins", "10"], "not both"),
    (["{src}", "--n-boot", "-3"], "--n-boot: must be >= 0"),
    (["{src}", "--seed", "-1"], "--seed: must be >= 0"),
    (["{src}", "--bin-width", "1e-9"], "lre bins"),
    (["{src}", "--wandb-mode", "sideways"], "--wandb-mode"),
])
def test_bad_input_is_one_line_and_exit_2(runs_folder, tmp_path, capsys, argv, message):
    folder, _ = runs_folder
    out = tmp_path / "out"
    argv = [a.format(tmp=tmp_path, src=folder) for a in argv] + ["--out", str(out)]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("lrscan analyze: error:") and message in err
    assert not out.exists()


@pytest.mark.parametrize("out", ["/proc/lrscan-no/x", "/proc/lrscan-report"])
def test_an_out_folder_that_cannot_be_made_is_one_line_before_the_analysis(runs_folder, capsys, out):
    # /proc/lrscan-report: its parent exists and takes no folder (once a mkdtemp traceback after the analysis)
    folder, _ = runs_folder
    with pytest.raises(SystemExit) as exit_info:
        main([str(folder), "--n-boot", "10", "--out", out])
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert exit_info.value.code == 2 and err.splitlines() == [err] and "cannot write in /proc (" in err
    assert captured.out == ""
    # checked first: with a filter that matches nothing as well, the --out is what it names
    with pytest.raises(SystemExit):
        main([str(folder), "--group", "no-such-group", "--out", out])
    assert "cannot write in /proc" in capsys.readouterr().err


def test_out_pointed_at_a_study_report_folder_deletes_nothing(runs_folder, tmp_path, capsys):
    """A study's report/ holds its own summary.json beside range/ and decay/: never ours to replace."""
    folder, _ = runs_folder
    study_report = tmp_path / "study" / "report"
    assert main([str(folder), "--group", RANGE_GROUP, "--n-boot", "10", "--out", str(study_report / "range")]) == 0
    assert main([str(folder), "--group", DECAY_GROUP, "--out", str(study_report / "decay")]) == 0
    (study_report / "summary.json").write_text("{}")
    (study_report / "report.md").write_text("# the study")
    before = sorted(str(p.relative_to(study_report)) for p in study_report.rglob("*"))
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main([str(folder), "--n-boot", "10", "--out", str(study_report)])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and err.splitlines() == [err] and "did not write" in err
    assert sorted(str(p.relative_to(study_report)) for p in study_report.rglob("*")) == before
    # its own earlier report, the CLI replaces
    assert main([str(folder), "--group", RANGE_GROUP, "--n-boot", "20", "--out", str(study_report / "range")]) == 0
    assert json.loads((study_report / "range" / "summary.json").read_text())["n_boot"] == 20


def test_python_api_is_importable_from_analysis_and_lazy():
    code = (
        "import sys, analysis\n"
        "assert 'matplotlib' not in sys.modules and 'wandb' not in sys.modules, 'lrscan.analysis must stay light'\n"
        "from lrscan.analysis import (load_runs, block_means, pick_exponent, decay_summary, zoom_sweep, write_report,\n"
        "                      plot_loss_vs_lre, plot_loss_vs_lr, plot_block_means, plot_decay_heatmap)\n"
        "assert callable(load_runs) and callable(plot_decay_heatmap)\n"
        "try:\n"
        "    analysis.no_such_name\n"
        "except AttributeError:\n"
        "    print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


# -- runs you logged yourself: plain wandb scripts in other code's styles (tests/support/user_runs.py) --


def run_cli(*argv: str | Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_SILENT": "true", "WANDB_MODE": "offline"}
    return subprocess.run([sys.executable, "-m", "lrscan.analysis", *map(str, argv)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("name, keys, whole_blocks", [
    ("seed_loop", ("loss", "lr", "_step"), 1),                                   # steps 0-999
    ("lightning", ("loss_step", "lr-SGD", "trainer/global_step"), 4),            # 0-799: blocks of 800 // 4
    ("hf_trainer", ("train/loss", "train/learning_rate", "train/global_step"), 2),  # every 10th of 10-2000
    ("alternating", ("loss", "lr", "_step"), 2),                                 # the odd steps of 0-1999
])
def test_cli_picks_from_a_range_test_of_your_own_code(user_runs, tmp_path, name, keys, whole_blocks):
    done = run_cli(user_runs[name], "--out", tmp_path / "report", "--n-boot", "0")
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert abs(summary["best_lre"] - USER_BEST_LRE) <= 0.15
    [run] = summary["runs"]
    assert (run["loss_key"], run["lr_key"], run["step_key"], run["schedule"], run["schedule_from"]) == (
        *keys, "range", "lr trace")
    assert f"runs: loss from {keys[0]}, lr from {keys[1]}, step from {keys[2]}: 1 run" in done.stdout
    assert summary["problems"] == [] and summary["blocks"]["rows"] == whole_blocks
    assert f"loss from {keys[0]}, lr from {keys[1]}" in (tmp_path / "report" / "report.md").read_text()


@pytest.mark.slow
def test_cli_summarises_step_decays_without_a_config(user_runs, tmp_path):
    for name in ("step_decay_600", "step_decay_1200"):
        shutil.copytree(user_runs[name], tmp_path / "runs" / name)
    done = run_cli(tmp_path / "runs", "--out", tmp_path / "report")
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    # the decay with the lowest mean log10 loss over its last block (steps 1000-1999), as the scripts logged it
    final = {steps: np.mean(np.log10([r["loss"] for r in logged(tmp_path / "runs" / name)[1000:]]))
             for steps, name in (("[600]", "step_decay_600"), ("[1200]", "step_decay_1200"))}
    assert summary["best_lre"] is None and summary["decay"]["by"] == ["decay_steps"]
    assert summary["decay"]["best"]["decay_steps"] == min(final, key=final.get)
    assert {r["run_id"]: r["schedule"] for r in summary["runs"]} == {"decay600": "step", "decay1200": "step"}
    blocks = pd.read_csv(tmp_path / "report" / "blocks.csv")
    assert blocks.groupby("run_id")["block"].apply(list).to_dict() == {"decay1200": [0, 1], "decay600": [0, 1]}
    assert "schedule step, read from the lr trace (no schedule in the config): 2 runs" in done.stdout


@pytest.mark.slow
def test_cli_names_the_real_cause_in_one_line(user_runs, tmp_path):
    import wandb

    lres = np.linspace(-3, 0, 300)
    run = wandb.init(mode="offline", dir=tmp_path, id="mine1", settings=wandb.Settings(console="off"))
    for lre in lres:
        run.log({"my/lr": 10.0**lre, "my/loss": 2.0 + (lre - BEST_LRE) ** 2})  # no step, no job type
    run.finish()
    wandb.teardown()
    source = tmp_path / "wandb"
    done = run_cli(source, "--out", tmp_path / "report")
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and not (tmp_path / "report").exists()
    assert done.stderr.startswith("lrscan analyze: error: none of the 1 matching run(s) logged a loss to analyse: "
                                  "run mine1: "
                                  "no loss and no lr logged (looked for loss: loss, log10_loss, train/loss")
    assert "it logged my/loss, my/lr); --loss-key and --lr-key name other keys" in done.stderr
    done = run_cli(source, "--out", tmp_path / "report", "--job-type", "train")
    assert done.returncode == 2 and done.stderr == (
        f"lrscan analyze: error: no runs in {source} match job_type='train': left out 1 of 1 runs: "
        f"1 by job_type='train' "
        f"(their job types: '' x1)\n")
    done = run_cli(source, "--out", tmp_path / "report", "--loss-key", "my/loss", "--lr-key", "my/lr", "--n-boot", "0")
    assert done.returncode == 0, done.stderr
    assert abs(json.loads((tmp_path / "report" / "summary.json").read_text())["best_lre"] - BEST_LRE) <= 0.1
    # a loss but no lr it can find: no schedule, so no pick; a run shorter than a block still gets block means
    # (a quarter of its length), and the report says why the run is not a range test
    done = run_cli(source, "--out", tmp_path / "report2", "--loss-key", "my/loss")
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "report2" / "summary.json").read_text())
    assert summary["problems"] == ["run mine1: no lr logged (looked for lr: lr, lre, learning_rate, "
                                   "train/learning_rate, lr_0, lr-<Optimizer>; it logged my/loss, my/lr); --lr-key "
                                   "names another key"]
    assert "no run has a full block of 1000 steps (the longest has 300): blocks of 75 steps" in done.stdout
    assert f"problem: {summary['problems'][0]}" in done.stdout


LIVE_RUN = '''
import math, os, signal, sys, time
import wandb
run = wandb.init(mode="offline", dir=sys.argv[1], id="live1", project="lrscan", group=sys.argv[2], job_type="train",
                 config={"schedule": "range", "lre_min": -3.0, "lre_max": 0.0, "steps": 400, "seed": 4},
                 settings=wandb.Settings(console="off", x_disable_stats=True, x_transaction_log_flush_interval=0.1))
for step in range(150):  # the first 150 of its 400 steps: the loss still falling, nowhere near the minimum
    lre = -3.0 + 3.0 * step / 399
    loss = 0.5 + 0.1 * step / 150
    run.log({"lr": 10 ** lre, "lre": lre, "loss": loss, "log10_loss": math.log10(loss)}, step=step)
time.sleep(1.0)  # flushed to the .wandb file, then killed: no exit record, as a run still training
os.kill(os.getpid(), signal.SIGKILL)
'''


def test_runs_still_running_are_named_and_left_out_of_the_pick_unless_asked(runs_folder, tmp_path, capsys):
    folder, _ = runs_folder
    source = tmp_path / "source"
    shutil.copytree(folder, source, symlinks=True)
    script = tmp_path / "live.py"
    script.write_text(LIVE_RUN)
    env = {**os.environ, "WANDB_SILENT": "true", "WANDB_MODE": "offline"}
    done = subprocess.run([sys.executable, str(script), str(source), RANGE_GROUP], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == -9, done.stderr
    # default: read, named in report.md and summary.json, left out of the pick
    assert main([str(source), "--group", RANGE_GROUP, "--out", str(tmp_path / "r1"), "--n-boot", "0"]) == 0
    summary = json.loads((tmp_path / "r1" / "summary.json").read_text())
    assert summary["running"] == {"runs": ["live1"], "in_pick": False} and summary["left_out_running"] == ["live1"]
    assert summary["counts"]["runs_read"] == 4 and summary["n_runs"] == 3
    assert "live1" not in {r["run_id"] for r in summary["per_run"]}
    note = "left out of the pick: 1 range run(s) still running (live1)"
    assert any(note in n for n in summary["notes"]) and note in (tmp_path / "r1" / "report.md").read_text()
    assert abs(summary["best_lre"] - BEST_LRE) <= 0.1
    # --state running asks for them: in the pick, and said so
    assert main([str(source), "--group", RANGE_GROUP, "--state", "finished,running", "--out", str(tmp_path / "r2"),
                 "--n-boot", "0"]) == 0
    summary = json.loads((tmp_path / "r2" / "summary.json").read_text())
    assert summary["running"] == {"runs": ["live1"], "in_pick": True} and summary["left_out_running"] == []
    assert summary["n_runs"] == 4 and "live1" in {r["run_id"] for r in summary["per_run"]}
    assert any("still running, in the pick as asked" in n for n in summary["notes"])
    # only running runs and not asked for: one line, the cause
    only = tmp_path / "only"
    shutil.copytree(next(source.glob("wandb/offline-run-*-live1")), only / "wandb" / "offline-run-live1")
    with pytest.raises(SystemExit) as exited:
        main([str(only), "--out", str(tmp_path / "r3")])
    assert exited.value.code == 2
    assert "every range-test run is still running (live1)" in capsys.readouterr().err


def test_cli_reads_fastais_runs_and_says_which_keys_in_the_runs_table(tmp_path):
    # real WandbCallback runs (tests/fixtures/user_runs/fastai): raw_loss and lr_0, not the smoothed train_loss
    done = run_cli(REPO / "tests" / "fixtures" / "user_runs" / "fastai", "--out", tmp_path / "report", "--n-boot", "0",
                   "--block-steps", "100")
    assert done.returncode == 0, done.stderr
    line = ("loss from raw_loss (fastai's loss of each batch, not its smoothed train_loss), lr from lr_0 (fastai's lr "
            "of param group 0), step from _step: 2 runs (fastai_one_cycle, fastai_range)")
    assert f"runs: {line}" in done.stdout and f"- {line}" in (tmp_path / "report" / "report.md").read_text()
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    schedules = {r["run_id"]: r["schedule"] for r in summary["runs"]}
    assert schedules == {"fastai_one_cycle": "other", "fastai_range": "range"}
    assert summary["n_runs"] == 1 and -2.5 < summary["best_lre"] < -1.0  # the range run only; it diverged near lr 0.5
