"""The study end to end on a tiny size, and its faults done for real: kills, damaged files, divergence, secrets."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from analysis.report import write_report
from analysis.sources import load_runs
from pipeline.study import SIZES, Size, Study
from tests.conftest import REPO

pytestmark = pytest.mark.slow

SMALL = {"n_embd": {"value": 2}, "n_hidden": {"value": 16}, "samples": {"value": 0}}
# the range grid: lre_max 0 (a normal test) and 40 (lr up to 1e40: diverges) x two seeds
TINY = Size(
    range_overrides={**SMALL, "steps": {"value": 300}, "lre_min": {"value": -3.0}, "lre_max": {"values": [0.0, 40.0]},
                     "seed": {"values": [1, 2]}, "climb_burn_in_steps": {"value": 30}, "stop_on_climb": {"value": False}},
    decay_overrides={**SMALL, "steps": {"value": 400}, "decay_steps": {"values": [[100], [200]]},
                     "decay_lrs": {"values": [[0.01]]}, "eval_every_steps": {"value": 200}},
    block_steps=100,
)


def tiny_study(out: Path, **kw) -> Study:
    return Study(size=kw.pop("size", TINY), out=out, workers=2, wandb_mode="offline", project="", entity="",
                 range_yaml=REPO / "sweeps" / "lr_range.yaml", decay_yaml=REPO / "sweeps" / "decay_grid.yaml",
                 n_boot=200, **kw)


@pytest.fixture
def data_env(words_file, monkeypatch):
    monkeypatch.setenv("LRSCAN_DATA", str(words_file))
    return words_file


SECRET = "lrscansecret" + "0123456789abcdef" * 2
STUDY_CODE = "import sys; from pathlib import Path; from tests.test_study import tiny_study; tiny_study(Path(sys.argv[1])).run()"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """One tiny study, run as a user runs it (a process of its own) with WANDB_API_KEY set."""
    root = tmp_path_factory.mktemp("study")
    from tests.conftest import make_words

    words = root / "words.txt"
    words.write_text("\n".join(make_words()) + "\n")
    out = root / "study"
    env = {**os.environ, "LRSCAN_DATA": str(words), "WANDB_API_KEY": SECRET, "WANDB_SILENT": "true", "WANDB_MODE": "offline"}
    p = subprocess.run([sys.executable, "-c", STUDY_CODE, str(out)], cwd=REPO, env=env, capture_output=True, timeout=900)
    assert p.returncode == 0, p.stderr.decode()[-3000:]
    return {"out": out, "words": words, "stdout": p.stdout + p.stderr,
            "summary": json.loads((out / "report" / "summary.json").read_text())}


def test_tiny_study_end_to_end(study, monkeypatch):
    out, summary = study["out"], study["summary"]
    monkeypatch.setenv("LRSCAN_DATA", str(study["words"]))
    assert b"picked lre =" in study["stdout"]
    assert -3.0 <= summary["best_lre"] <= 0.0
    low, high = summary["best_lre_ci"]
    assert low <= summary["best_lre"] <= high
    assert set(summary["suggesters"]) == {"minimum", "steepest", "valley"}
    assert summary["range"]["counts"]["runs_read"] == 4 and summary["decay"]["counts"]["runs_read"] == 2
    assert len(summary["commands"]) == 4
    report = (out / "report" / "report.md").read_text()
    assert "Picked exponent" in report and "python -m pipeline.sweep" in report
    assert (out / "report" / "range" / "range_loss_vs_lre.png").stat().st_size > 10_000
    # the decay grid ran at the picked lr
    decay_yaml = (out / "stages" / "decay_grid.yaml").read_text()
    assert f"value: {round(10 ** summary['best_lre'], 6)}" in decay_yaml
    # a second run of the same command runs nothing again and keeps the pick
    manifests = sorted((out / "sweeps").glob("*/manifest.jsonl"))
    before = [m.read_text() for m in manifests]
    again = tiny_study(out).run()
    assert again["best_lre"] == pytest.approx(summary["best_lre"])
    after = [json.loads(line) for m in manifests for line in m.read_text().splitlines()]
    assert all(row["attempts"] == 1 for row in after), "a finished point ran again"
    assert len(before) == 2


def _manifest_rows(folder: Path) -> list[dict]:
    rows = []
    for m in folder.glob("sweeps/*/manifest.jsonl"):
        rows += [json.loads(line) for line in m.read_text().splitlines() if line.strip()]
    return rows


def test_killed_study_resumes_without_running_a_point_twice(data_env, tmp_path):
    out = tmp_path / "study"
    env = {**os.environ, "LRSCAN_DATA": str(data_env)}
    code = ("import sys; from pathlib import Path; from tests.test_study import tiny_study; "
            "tiny_study(Path(sys.argv[1])).run()")
    proc = subprocess.Popen([sys.executable, "-c", code, str(out)], cwd=REPO, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # kill it (all of it) once the decay sweep has started a point
    deadline = time.monotonic() + 240
    while not any(r.get("state") == "running" and "decay" in r.get("run_id", "") for r in _manifest_rows(out)):
        assert time.monotonic() < deadline, "the decay sweep never started"
        assert proc.poll() is None, "the study ended before it could be killed"
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    summary = tiny_study(out).run()
    rows = _manifest_rows(out)
    assert len(rows) == 6 and all(r["state"] == "finished" for r in rows)
    range_rows = [r for r in rows if "lr_range" in r["run_id"]]
    assert all(r["attempts"] == 1 for r in range_rows), "a finished range point ran again"
    # every run's history has each step exactly once, across all its segments
    loaded = load_runs(out / "sweeps", job_type=None)
    per_run = loaded.steps.groupby("run_id", observed=True)["step"].agg(["count", "nunique", "min", "max"])
    assert (per_run["count"] == per_run["nunique"]).all() and (per_run["min"] == 0).all()
    assert summary["best_lre"] is not None


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_damaged_files_among_good_ones_keep_the_pick(study, tmp_path):
    out = study["out"]
    folder = next((out / "sweeps").glob("lr_range-*"))
    clean = write_report(tmp_path / "clean", load_runs(folder / "wandb"), block_steps=100, n_boot=200)
    # a truncated decay run (not range data) and a range run flipped after its history
    damaged = tmp_path / "damaged"
    shutil.copytree(folder / "wandb", damaged)
    decay_file = next((out / "sweeps").glob("decay_grid-*/wandb/offline-run-*/run-*.wandb"))
    cut = damaged / "offline-run-truncated" / decay_file.name
    cut.parent.mkdir()
    cut.write_bytes(decay_file.read_bytes()[: decay_file.stat().st_size // 2 + 123])
    flipped = next(damaged.glob("offline-run-*/run-*.wandb"))
    _flip_byte(flipped, flipped.stat().st_size - 40)  # in the closing records, after the history
    loaded = load_runs(damaged, job_type=None)
    assert loaded.skipped_records >= 1 and loaded.problems
    report = write_report(tmp_path / "report", load_runs(damaged), block_steps=100, n_boot=200)
    assert report.summary["best_lre"] == clean.summary["best_lre"]
    assert report.summary["best_lre_ci"] == clean.summary["best_lre_ci"]
    assert report.summary["counts"]["records_skipped"] >= 1


def test_diverged_runs_are_recorded_excluded_and_shown(study):
    summary = study["summary"]
    per_run = summary["range"]["per_run"]
    diverged = [r for r in per_run if r.get("stop_reason") == "non_finite"]
    assert len(diverged) == 2 and all(r.get("lre_max") in (40, 40.0, None) for r in diverged)
    # the pick comes from where the loss was measured and finite, not from the blown-up tail
    assert -3.0 <= summary["best_lre"] <= 1.0
    text = (study["out"] / "report" / "range" / "report.md").read_text()
    assert "non_finite" in text


def test_api_key_never_lands_on_disk(study):
    assert SECRET.encode() not in study["stdout"]
    leaks = [f for f in study["out"].rglob("*") if f.is_file() and SECRET.encode() in f.read_bytes()]
    assert not leaks, f"the API key is in {leaks}"


def test_study_sizes_and_bad_input(tmp_path):
    assert set(SIZES) == {"demo", "full"}
    p = subprocess.run([sys.executable, "-m", "pipeline.study", "--wandb_mode=online", f"--out={tmp_path / 's'}"],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "needs --project" in p.stderr and not (tmp_path / "s").exists()


def test_online_study_analyses_from_the_public_api(study, tmp_path, monkeypatch):
    """The cloud is unreachable here: the study's online analysis reads fakes with the Public API's
    shape, built from the offline study's own runs, and must pick what the offline analysis picked."""
    from analysis.wandb_file import read_run_file
    from pipeline.sweep import load_sweep
    from tests.test_sources import FakeApi, FakeRun

    monkeypatch.setenv("LRSCAN_CACHE", str(tmp_path / "cache"))
    out = study["out"]
    sweep = load_sweep(out / "stages" / "lr_range.yaml")
    runs = []
    for path in sorted((out / "sweeps" / sweep.key / "wandb").glob("offline-run-*/run-*.wandb")):
        rf = read_run_file(path, keys=["lr", "lre", "loss", "log10_loss", "smooth_loss"])
        names = [k for k in rf.history if k != "step"]
        rows = [(int(s), {k: float(rf.history[k][i]) for k in names}) for i, s in enumerate(rf.history["step"])]
        spec = {"name": rf.name, "group": rf.group, "tags": rf.tags, "job_type": rf.job_type, "config": rf.config,
                "rows": rows, "summary": rf.summary, "exit_code": rf.exit_code}
        runs.append(FakeRun(rf.run_id, spec))
    api = FakeApi(runs)
    online = Study(size=TINY, out=tmp_path / "online", workers=1, wandb_mode="online", project="lrscan", entity="me",
                   range_yaml=REPO / "sweeps" / "lr_range.yaml", decay_yaml=REPO / "sweeps" / "decay_grid.yaml",
                   n_boot=200, api=api)
    report = online._analyse(sweep, "range")
    assert api.calls and api.calls[0][0] == "me/lrscan"
    offline = json.loads((out / "report" / "range" / "summary.json").read_text())
    assert report.summary["best_lre"] == pytest.approx(offline["best_lre"])
    assert report.summary["counts"]["runs_read"] == offline["counts"]["runs_read"] == 4
    assert any("python -m analysis me/lrscan --group" in c for c in online.commands)
