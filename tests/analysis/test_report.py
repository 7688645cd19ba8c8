"""The report folder: its files, its numbers, atomic writes, and the optional wandb analysis run."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import yaml  # noqa: E402

from lrscan.analysis import plots, report  # noqa: E402
from lrscan.analysis.blocks import block_means  # noqa: E402
from lrscan.analysis.pick import pick_exponent  # noqa: E402
from lrscan.analysis.report import keys_lines, write_report  # noqa: E402
from lrscan.pipeline.errors import LrscanError  # noqa: E402
from tests.support.frames import decay_history, make_loaded, range_history  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def mixed_loaded() -> SimpleNamespace:
    """Three range-test seeds (one stopped by the climb rule) and a 2 x 2 decay grid of two seeds."""
    runs = [({"seed": s, "schedule": "range"}, range_history(s, stop_lre=-0.3 if s == 2 else None)) for s in (1, 2, 3)]
    runs += [({"seed": s, "schedule": "step", "steps": 3000, "decay_steps": [d], "decay_lrs": [lr]},
              decay_history(s, d, lr, steps=3000)) for s in (1, 2) for d in (1000, 2000) for lr in (0.01, 0.001)]
    loaded = make_loaded(runs, summaries={1: {"stop_reason": "climb", "stop_step": 899}})
    loaded.skipped_records, loaded.problems = 2, ["run-x.wandb: truncated last block"]
    return loaded


def sibling_leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith("."))


@pytest.mark.slow
def test_report_files_and_numbers(tmp_path):
    loaded = mixed_loaded()
    out = tmp_path / "reports" / "r1"
    result = write_report(out, loaded, block_steps=500, n_boot=300, seed=3, source="here", dpi=40)

    names = {p.name for p in out.iterdir()}
    assert {"summary.json", "report.md", "blocks.csv", "zoom.yaml", "range_curve.csv", "range_per_run.csv",
            "decay_table.csv", *report.FIGURES.values(), report.MARKER_FILE} == names
    assert sibling_leftovers(out) == []
    # the marker names every file the report holds: what a later --out may replace
    assert set(json.loads((out / report.MARKER_FILE).read_text())["files"]) == names - {report.MARKER_FILE}

    summary = json.loads((out / "summary.json").read_text())
    is_range = loaded.steps["schedule"] == "range"
    pick = pick_exponent(loaded.steps.loc[is_range], loaded.runs, n_boot=300, seed=3)
    assert summary["best_lre"] == pick.best_lre and summary["best_lr"] == pytest.approx(pick.best_lr)
    assert summary["best_lre_ci"] == list(pick.best_lre_ci)
    assert (summary["steepest_lre"], summary["valley_lre"]) == (pick.steepest_lre, pick.valley_lre)
    assert summary["counts"] == {"runs_read": 11, "steps_read": len(loaded.steps), "records_skipped": 2,
                                 "range_runs": 3, "decay_runs": 8}
    assert summary["problems"] == ["run-x.wandb: truncated last block"]
    assert [r["run_id"] for r in summary["per_run"]] == ["run000", "run001", "run002"]
    assert summary["per_run"][1]["stop_reason"] == "climb"
    assert summary["decay"]["best"]["decay_steps"] == "[1000]" and summary["decay"]["metric"] == "final_dev_loss"
    assert summary["blocks"]["block_steps"] == 500 and summary["blocks"]["partial_blocks_dropped"] == 1
    assert any("dropped 1 block" in note for note in summary["notes"])
    assert result.summary["best_lre"] == summary["best_lre"]

    # blocks.csv is block_means of every run
    written = pd.read_csv(out / "blocks.csv")
    with pytest.warns(UserWarning, match="dropped 1 block"):  # the climb-stopped range run's tail
        expected = block_means(loaded.steps, block_steps=500)
    assert len(written) == len(expected)
    pd.testing.assert_series_equal(written["log10_loss"], expected["log10_loss"], check_exact=False, rtol=1e-9)

    md = (out / "report.md").read_text()
    for target in re.findall(r"\]\(([^)]+)\)", md):
        assert (out / target).is_file(), target
    assert f"lre = {pick.best_lre:.3f}" in md
    # how the CI was made, and from how many seeds (3: too few, and it says so)
    assert summary["ci_method"] == {"method": "percentile bootstrap over seeds", "level": 0.95, "unit": "seed",
                                    "n_units": 3, "n_boot": 300, "distinct_resamples": 10, "enough_units": False}
    assert "percentile bootstrap over seeds (3 seeds, 300 resamples, 10 distinct)" in md and "too few seeds" in md
    assert any("at most 10 distinct resamples" in note for note in summary["notes"])
    # the decay grid in words and a table people read: 1000, not [1000]; no Python dict anywhere
    assert "Best config: **decay_steps 1000, decay_lrs 0.001**" in md
    assert "[1000]" not in md and "{'" not in md
    assert re.search(r"^\| 1000 \| 0\.001 \| ", md, re.M)
    printed = "\n".join(report.summary_lines(result))
    assert "decay grid: best decay_steps 1000, decay_lrs 0.001 (final_dev_loss " in printed and "{'" not in printed
    assert "CI: 95% percentile bootstrap over seeds (3 seeds" in printed

    zoom = yaml.safe_load((out / "zoom.yaml").read_text())
    assert zoom["parameters"]["lre_min"]["value"] < pick.best_lre < zoom["parameters"]["lre_max"]["value"]


def test_report_of_range_runs_only(tmp_path):
    loaded = make_loaded([({"seed": s, "schedule": "range"}, range_history(s)) for s in (1, 2)])
    write_report(tmp_path / "r", loaded, n_boot=50, dpi=40)
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["decay"] is None and summary["best_lre"] is not None
    assert not (tmp_path / "r" / report.FIGURES["blocks"]).exists()


def test_report_of_decay_runs_only(tmp_path):
    loaded = make_loaded([({"seed": 1, "schedule": "step", "steps": 2000, "decay_steps": [d], "decay_lrs": [0.01]},
                           decay_history(1, d, 0.01, steps=2000)) for d in (500, 1000)])
    write_report(tmp_path / "r", loaded, block_steps=500, dpi=40)
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["best_lre"] is None and summary["best_lre_ci"] is None and summary["per_run"] == []
    assert summary["decay"]["by"] == ["decay_steps"]
    assert not (tmp_path / "r" / report.FIGURES["heatmap"]).exists()  # one swept column: no grid to draw
    assert (tmp_path / "r" / report.FIGURES["blocks"]).is_file()


@pytest.mark.slow
def test_a_failure_leaves_nothing_half_written(tmp_path, monkeypatch):
    out = tmp_path / "r"
    loaded = mixed_loaded()
    write_report(out, loaded, block_steps=500, n_boot=50, dpi=40)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken(*args, **kwargs):
        raise RuntimeError("disk full while drawing")

    monkeypatch.setattr(plots, "plot_decay_heatmap", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        write_report(out, loaded, block_steps=500, n_boot=50, seed=9, dpi=40)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the earlier report, intact
    assert sibling_leftovers(out) == []

    fresh = tmp_path / "fresh"
    with pytest.raises(RuntimeError):
        write_report(fresh, loaded, block_steps=500, n_boot=50, dpi=40)
    assert not fresh.exists() and sibling_leftovers(fresh) == []


def test_bad_input_writes_nothing(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(LrscanError, match="did not write"):
        write_report(foreign, mixed_loaded())
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]

    tiny = make_loaded([({"seed": 1, "schedule": "range", "steps": 10}, range_history(1, steps=10))])
    with pytest.raises(LrscanError, match="skip"):
        write_report(tmp_path / "tiny", tiny, n_bins=2)
    assert not (tmp_path / "tiny").exists()

    empty = SimpleNamespace(steps=mixed_loaded().steps.iloc[:0], runs=None, skipped_records=0, problems=[])
    with pytest.raises(LrscanError, match="no steps"):
        write_report(tmp_path / "empty", empty)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def small_loaded() -> SimpleNamespace:
    return make_loaded([({"seed": s, "schedule": "range"}, range_history(s)) for s in (1, 2)])


def test_only_a_report_this_command_wrote_is_replaced(tmp_path):
    # a study's report/: its own summary.json and report.md, and the range and decay reports inside
    study = tmp_path / "study_report"
    write_report(study / "range", small_loaded(), n_boot=20, dpi=20)
    (study / "decay").mkdir()
    (study / "decay" / "summary.json").write_text("{}")
    (study / "summary.json").write_text("{}")
    (study / "report.md").write_text("# study")
    before = sorted(str(p.relative_to(study)) for p in study.rglob("*"))
    with pytest.raises(LrscanError, match=r"holds folders \(decay, range\) that this command did not write"):
        write_report(study, small_loaded(), n_boot=20, dpi=20)
    assert sorted(str(p.relative_to(study)) for p in study.rglob("*")) == before

    # a folder with a summary.json of someone else's (no marker) is not ours either
    other = tmp_path / "other"
    other.mkdir()
    (other / "summary.json").write_text("{}")
    with pytest.raises(LrscanError, match="did not write"):
        write_report(other, small_loaded(), n_boot=20, dpi=20)
    assert [p.name for p in other.iterdir()] == ["summary.json"]

    # our report with something the user added: replacing it would lose that
    ours = study / "range"
    (ours / "my notes.txt").write_text("keep me")
    with pytest.raises(LrscanError, match="my notes.txt added"):
        write_report(ours, small_loaded(), n_boot=20, dpi=20)
    assert (ours / "my notes.txt").read_text() == "keep me"
    (ours / "my notes.txt").unlink()
    (ours / "sub").mkdir()
    with pytest.raises(LrscanError, match="sub added"):
        write_report(ours, small_loaded(), n_boot=20, dpi=20)
    (ours / "sub").rmdir()

    # the study adopts its own report from before markers, never a folder holding anything else
    assert not report.adopt_unmarked_report(study) and not (study / report.MARKER_FILE).exists()
    legacy = tmp_path / "legacy"
    write_report(legacy, small_loaded(), n_boot=20, dpi=20)
    (legacy / report.MARKER_FILE).unlink()
    (legacy / "mine.txt").write_text("x")
    assert not report.adopt_unmarked_report(legacy)
    (legacy / "mine.txt").unlink()
    assert report.adopt_unmarked_report(legacy)
    write_report(legacy, small_loaded(), n_boot=20, dpi=20)

    # our report as written: replaced, and an empty folder is fine too
    write_report(ours, small_loaded(), n_boot=20, seed=5, dpi=20)
    assert json.loads((ours / "summary.json").read_text())["counts"]["range_runs"] == 2
    (tmp_path / "empty").mkdir()
    write_report(tmp_path / "empty", small_loaded(), n_boot=20, dpi=20)
    assert (tmp_path / "empty" / report.MARKER_FILE).is_file()


def test_replacing_a_report_never_leaves_the_folder_missing(tmp_path, monkeypatch):
    out = tmp_path / "r"
    write_report(out, small_loaded(), n_boot=20, dpi=20)
    # every rename (of a file or a folder) is checked: right after it, a whole report is at `out`
    seen: list[bool] = []
    real_replace, real_rename = os.replace, os.rename

    def checked(real):
        def call(src, dst, *args, **kwargs):
            real(src, dst, *args, **kwargs)
            seen.append(out.is_dir() and (out / "summary.json").is_file())
        return call

    monkeypatch.setattr(os, "replace", checked(real_replace))
    monkeypatch.setattr(os, "rename", checked(real_rename))
    write_report(out, small_loaded(), n_boot=30, dpi=20)
    monkeypatch.undo()
    assert seen and all(seen), "the report folder was gone for a moment"
    assert json.loads((out / "summary.json").read_text())["n_boot"] == 30  # the new report, whole
    assert sibling_leftovers(out) == []


def test_an_out_folder_that_cannot_be_written_is_found_before_the_analysis(tmp_path, monkeypatch):
    # /proc takes no new folder (permission bits would not tell: the tests may run as root)
    calls: list[str] = []
    monkeypatch.setattr(report, "pick_exponent", lambda *a, **k: calls.append("analysed"))
    for out in (Path("/proc/lrscan-report"), Path("/proc/lrscan-no/deeper/report")):
        with pytest.raises(LrscanError, match=r"cannot write in /proc \("):
            write_report(out, small_loaded(), n_boot=20, dpi=20)
    assert calls == []
    (tmp_path / "f").write_text("x")
    with pytest.raises(LrscanError, match="is a file, not a folder"):
        write_report(tmp_path / "f" / "r", small_loaded())
    assert calls == [] and sorted(p.name for p in tmp_path.iterdir()) == ["f"]  # the probe left nothing


def test_default_out_dir_is_new_per_analysis():
    import datetime as dt

    now = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    assert report.default_out_dir(name="lr_range-ab12", now=now) == Path("reports/lr_range-ab12-20260102-030405")
    assert report.default_out_dir(name="a/b c", now=now) == Path("reports/a_b_c-20260102-030405")
    assert report.default_out_dir(now=now) == Path("reports/20260102-030405")


@pytest.mark.slow
def test_log_to_wandb_offline(tmp_path, monkeypatch):
    from lrscan.pipeline.runlog import read_run_file

    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    (tmp_path / "wb").mkdir()
    out = tmp_path / "r"
    write_report(out, mixed_loaded(), block_steps=500, n_boot=50, dpi=40, log_to_wandb=True, wandb_mode="offline")

    import wandb

    # run.finish() can return before wandb-core has flushed the .wandb file (seen here: a reader
    # right after it found state 'running' and no job_type); teardown waits for the service
    wandb.teardown()
    logged = json.loads((out / "summary.json").read_text())["wandb_run"]
    assert logged["mode"] == "offline"
    files = list((tmp_path / "wb").rglob(f"run-{logged['id']}.wandb"))
    assert len(files) == 1
    run = read_run_file(files[0])
    assert run.job_type == "analysis" and run.state == "finished"
    assert run.summary["best_lre"] == pytest.approx(json.loads((out / "summary.json").read_text())["best_lre"])
    media = {p.name.split("_")[0] for p in files[0].parent.rglob("*.png")}
    assert media == {"range", "blocks", "heatmap"}  # every figure went up as a wandb.Image
    assert list(files[0].parent.rglob("summary_*.table.json")) and list(files[0].parent.rglob("per_run_*.table.json"))


def test_the_runs_table_says_what_fastais_keys_are() -> None:
    records = [
        {"run_id": "a", "loss_key": "raw_loss", "lr_key": "lr_0", "step_key": "_step", "schedule": "range",
         "schedule_from": "lr trace", "schedule_note": "lr rises geometrically from 0.0001 to 1 over steps 0-299"},
        {"run_id": "b", "loss_key": "train_loss_step", "lr_key": "lr-SGD", "step_key": "trainer/global_step",
         "schedule": "range", "schedule_from": "config", "schedule_note": None},
    ]
    assert keys_lines(records) == [
        "loss from raw_loss (fastai's loss of each batch, not its smoothed train_loss), lr from lr_0 (fastai's lr of "
        "param group 0), step from _step: 1 run (a)",
        "loss from train_loss_step, lr from lr-SGD, step from trainer/global_step: 1 run (b)",
        "schedule range, read from the lr trace (no schedule in the config): 1 run (a: lr rises geometrically from "
        "0.0001 to 1 over steps 0-299)",
    ]
