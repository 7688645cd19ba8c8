"""The report folder: its files, its numbers, atomic writes, and the optional wandb analysis run."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import yaml  # noqa: E402

from analysis import plots, report  # noqa: E402
from analysis.blocks import block_means  # noqa: E402
from analysis.pick import pick_exponent  # noqa: E402
from analysis.report import write_report  # noqa: E402
from pipeline.errors import LrscanError  # noqa: E402
from tests.test_blocks import decay_history, make_loaded, range_history  # noqa: E402


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
            "decay_table.csv", *report.FIGURES.values()} == names
    assert sibling_leftovers(out) == []

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
    with pytest.raises(LrscanError, match="other files"):
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


def test_default_out_dir_is_new_per_analysis():
    import datetime as dt

    now = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    assert report.default_out_dir(name="lr_range-ab12", now=now) == Path("reports/lr_range-ab12-20260102-030405")
    assert report.default_out_dir(name="a/b c", now=now) == Path("reports/a_b_c-20260102-030405")
    assert report.default_out_dir(now=now) == Path("reports/20260102-030405")


@pytest.mark.slow
def test_log_to_wandb_offline(tmp_path, monkeypatch):
    from analysis.wandb_file import read_run_file

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
