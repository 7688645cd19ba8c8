"""analysis.sources.load_runs: real offline run folders, and the cloud path through wandb 0.31's Public API.

The W&B cloud cannot be reached from the test machines and `wandb.Api()` must never be built in
tests, so the cloud path runs through wandb 0.31's own `Api.runs`, `Runs`, `Run`, `scan_history`
and `HistoryScan` over a fake of wandb-core and the W&B server (tests/public_api_fakes.py), fed
with real offline runs as `wandb sync` would hand them over. The cloud frames are checked against
the offline frames of the same runs.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from analysis import sources
from analysis.sources import load_runs
from pipeline.errors import LrscanError
from tests.conftest import make_words, train_argv
from tests.support.public_api_fakes import (
    FakeApi,
    FakeBackend,
    FakeRun,
    OfflineApi,
    SyncedRun,
    sync_offline_run,
    synced_from_rows,
)
from tests.support.runfiles import make_run, quiet_env

__all__ = ["FakeApi", "FakeRun"]  # tests/test_study.py imports them from here


def rows_of(lres: Sequence[float], start: int = 0, **extra: Mapping[int, float]) -> list[tuple[int, dict[str, float]]]:
    """Trainer-like rows; `extra={"dev_loss": {2: 1.5}}` adds a key on some steps only."""
    rows = []
    for i, lre in enumerate(lres):
        step = start + i
        loss = 2.0 + 0.25 * i
        row = {"lr": 10.0**lre, "lre": lre, "loss": loss, "log10_loss": math.log10(loss)}
        for key, by_step in extra.items():
            if step in by_step:
                row[key] = by_step[step]
        rows.append((step, row))
    return rows


# one spec per run: the same data feeds the offline runs and the cloud fakes
SPECS: dict[str, dict[str, Any]] = {
    "a1": dict(name="alpha-1", group="A", tags=("x", "y"),
               config={"steps": 5, "schedule": "range", "lre_min": -3.0, "lre_max": 0.0, "decay_steps": [100000], "stop_on_climb": True},
               rows=rows_of([-3.0, -2.25, -1.5, -0.75, 0.0], smooth_loss={0: 2.0, 1: 2.1, 2: 2.2, 3: 2.3, 4: 2.4}),
               summary={"train_loss": 2.5, "final_step": 4}),
    "a2": dict(name="alpha-2", group="A", tags=("x",),
               config={"steps": 3, "schedule": "range", "lre_min": -2.0, "lre_max": 0.5, "decay_steps": [100000, 150000], "stop_on_climb": False},
               rows=rows_of([-2.0, -1.0, 0.5], dev_loss={2: 1.5}),
               summary={"train_loss": 2.0, "final_step": 2, "stop_reason": "climb"}, exit_code=1),
    "b1": dict(name="beta", group="B", tags=("y",), sweep_id="swp1",
               config={"steps": 2, "schedule": "constant", "lr": 0.1},
               rows=rows_of([-1.0, -1.0]), summary={"train_loss": 3.0}),
    "n1": dict(name="notes", group="A", job_type="analysis", config={}, rows=[(0, {"report_seconds": 1.0})]),
}


def make_spec_run(root: Path, run_id: str, spec: Mapping[str, Any]) -> Path:
    return make_run(root / run_id, spec["rows"], run_id=run_id, name=spec["name"], group=spec["group"],
                    tags=spec.get("tags", ()), job_type=spec.get("job_type", "train"), config=spec["config"],
                    summary=spec.get("summary"), exit_code=spec.get("exit_code"), sweep_id=spec.get("sweep_id"))


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    for run_id, spec in SPECS.items():
        make_spec_run(root, run_id, spec)
    return root


def copy_runs(runs_dir: Path, dest: Path, *run_ids: str) -> Path:
    for run_id in run_ids:
        shutil.copytree(runs_dir / run_id, dest / run_id, symlinks=True)
    return dest


def cat(values: Sequence[Any], categories: Sequence[Any], dtype: Any = None) -> pd.Categorical:
    return pd.Categorical(values, dtype=pd.CategoricalDtype(pd.Index(categories, dtype=dtype)))


def expected_group_a_steps() -> pd.DataFrame:
    """load_runs(group="A").steps, written out by hand."""
    a1, a2 = 5 * ["a1"], 3 * ["a2"]
    lre = [-3.0, -2.25, -1.5, -0.75, 0.0, -2.0, -1.0, 0.5]
    loss = [2.0, 2.25, 2.5, 2.75, 3.0, 2.0, 2.25, 2.5]
    return pd.DataFrame({
        "run_id": cat(a1 + a2, ["a1", "a2"]),
        "run_name": cat(5 * ["alpha-1"] + 3 * ["alpha-2"], ["alpha-1", "alpha-2"]),
        "group": cat(8 * ["A"], ["A"]),
        "sweep": cat(8 * [""], [""]),
        "steps": cat(5 * [5] + 3 * [3], [3, 5], np.int64),
        "schedule": cat(8 * ["range"], ["range"]),
        "lre_min": cat(5 * [-3.0] + 3 * [-2.0], [-3.0, -2.0], np.float64),
        "lre_max": cat(5 * [0.0] + 3 * [0.5], [0.0, 0.5], np.float64),
        "decay_steps": cat(5 * ["[100000]"] + 3 * ["[100000, 150000]"], ["[100000, 150000]", "[100000]"]),
        "stop_on_climb": cat(5 * [True] + 3 * [False], [False, True], bool),
        "step": np.array([0, 1, 2, 3, 4, 0, 1, 2], np.int64),
        "lr": 10.0 ** np.array(lre),
        "lre": np.array(lre),
        "loss": np.array(loss, np.float32),
        "log10_loss": np.log10(np.array(loss)).astype(np.float32),
        "smooth_loss": np.array([2.0, 2.1, 2.2, 2.3, 2.4, np.nan, np.nan, np.nan], np.float32),
        "dev_loss": np.array([np.nan] * 7 + [1.5], np.float32),
    })


# -- offline ------------------------------------------------------------------------------------


def test_tidy_frame_is_exactly_the_logged_steps(runs_dir: Path) -> None:
    loaded = load_runs(runs_dir, group="A")
    assert_frame_equal(loaded.steps, expected_group_a_steps())
    assert loaded.skipped_records == 0 and loaded.problems == []


def test_runs_frame(runs_dir: Path) -> None:
    runs = load_runs(runs_dir).runs
    assert list(runs.columns[:12]) == ["run_id", "run_name", "group", "sweep", "tags", "job_type", "state",
                                       "exit_code", "path", "n_steps", "first_step", "last_step"]
    assert runs["run_id"].tolist() == ["a1", "a2", "b1"]
    assert runs["tags"].tolist() == ["x,y", "x", "y"]
    assert runs["sweep"].tolist() == ["", "", "swp1"]
    assert runs["state"].tolist() == ["finished", "crashed", "finished"]
    assert runs["exit_code"].tolist() == [0, 1, 0] and runs["exit_code"].dtype == "Int64"
    assert runs["n_steps"].tolist() == [5, 3, 2] and runs["last_step"].tolist() == [4, 2, 1]
    assert runs["lre_min"].dtype == np.float64 and runs["lre_min"].tolist()[:2] == [-3.0, -2.0]
    assert runs["lr"].tolist()[2] == 0.1  # the config field, not the last logged lr
    assert runs["final_step"].dtype == "Int64" and runs["final_step"].tolist() == [4, 2, pd.NA]
    assert runs["train_loss"].tolist() == [2.5, 2.0, 3.0]
    assert runs["stop_reason"].tolist()[1] == "climb"
    summary_at = list(runs.columns).index("train_loss")
    assert list(runs.columns).index("decay_steps") < summary_at  # config fields, then summary keys
    assert all(Path(p).name == f"run-{i}.wandb" for p, i in zip(runs["path"], runs["run_id"]))


@pytest.mark.parametrize("filters, expected", [
    ({}, ["a1", "a2", "b1"]),
    ({"job_type": None}, ["a1", "a2", "b1", "n1"]),
    ({"group": "B"}, ["b1"]),
    ({"sweep": "swp1"}, ["b1"]),
    ({"sweep": "A"}, ["a1", "a2"]),  # a sweep's group key
    ({"tags": ("x", "y")}, ["a1"]),
    ({"tags": "y"}, ["a1", "b1"]),
    ({"state": "crashed"}, ["a2"]),
    ({"state": ("finished", "crashed"), "group": "A"}, ["a1", "a2"]),
])
def test_filters(runs_dir: Path, filters: dict, expected: list[str]) -> None:
    loaded = load_runs(runs_dir, **filters)
    assert loaded.runs["run_id"].tolist() == expected
    assert loaded.steps["run_id"].unique().tolist() == expected


def test_sources_of_every_shape(runs_dir: Path) -> None:
    one_run_folder = next((runs_dir / "b1" / "wandb").glob("offline-run-*"))
    one_file = next(one_run_folder.glob("run-*.wandb"))
    for source in (runs_dir / "b1", one_run_folder, one_file, str(one_file)):
        assert load_runs(source).runs["run_id"].tolist() == ["b1"], source


def test_dot_means_the_wandb_folder(runs_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(runs_dir / "a1")
    assert load_runs().runs["run_id"].tolist() == ["a1"]


def test_junk_among_good_runs_is_reported_not_fatal(runs_dir: Path, tmp_path: Path) -> None:
    copy_runs(runs_dir, tmp_path, "a1", "a2")
    (tmp_path / "run-junk.wandb").write_bytes(b"not a wandb file at all\n" * 50)
    (tmp_path / "notes.txt").write_text("run notes\n")
    loaded = load_runs(tmp_path, group="A")
    assert_frame_equal(loaded.steps, expected_group_a_steps())
    assert len(loaded.problems) == 1 and "run-junk.wandb" in loaded.problems[0] and "not a wandb run log" in loaded.problems[0]


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


def test_explicit_keys(runs_dir: Path) -> None:
    steps = load_runs(runs_dir, group="A", keys=["loss", "dev_loss"]).steps
    assert list(steps.columns[-3:]) == ["step", "loss", "dev_loss"]
    assert steps["dev_loss"].dtype == np.float32


@pytest.mark.parametrize("make_source, message", [
    (lambda tmp: tmp / "does-not-exist", "no such file or folder"),
    (lambda tmp: tmp, "no wandb runs in"),
    (lambda tmp: (tmp / "notes.txt").write_text("x") and tmp / "notes.txt", "is not a .wandb run file"),
    (lambda tmp: (tmp / "run-bad.wandb").write_bytes(b"garbage") and tmp, "no readable wandb run"),
])
def test_bad_sources(tmp_path: Path, make_source: Any, message: str) -> None:
    with pytest.raises(LrscanError, match=message):
        load_runs(make_source(tmp_path))


def test_no_run_matches_the_filters(runs_dir: Path) -> None:
    with pytest.raises(LrscanError, match=r"no runs in .* match group='Z'"):
        load_runs(runs_dir, group="Z")


def test_runs_without_the_expected_keys(runs_dir: Path) -> None:
    with pytest.raises(LrscanError, match="none of the 1 matching runs logged any of lr, lre, loss, log10_loss"):
        load_runs(runs_dir, job_type="analysis")
    loaded = load_runs(runs_dir, group="A", job_type=None)  # one bad run among good ones: reported
    assert loaded.runs["run_id"].tolist() == ["a1", "a2", "n1"]
    assert loaded.problems == ["run n1: no values logged for lr, lre, loss, log10_loss"]


# -- config values ----------------------------------------------------------------------------------


def test_bool_config_values_are_parsed_not_taken_for_truthy(tmp_path: Path) -> None:
    # a sweep's `--stop_on_climb=False`, a hand-written config: the string "False" is not True
    for run_id, flag in (("f1", "False"), ("f2", "true"), ("f3", 0), ("f4", "1")):
        make_run(tmp_path / run_id, rows_of([-1.0]), run_id=run_id, group="F", config={"stop_on_climb": flag})
    make_run(tmp_path / "odd", rows_of([-1.0]), run_id="odd", group="O", config={"stop_on_climb": "maybe"})
    loaded = load_runs(tmp_path, group="F")
    assert loaded.runs["stop_on_climb"].tolist() == [False, True, False, True]
    assert loaded.runs["stop_on_climb"].dtype == bool
    assert loaded.steps["stop_on_climb"].tolist() == [False, True, False, True]
    odd = load_runs(tmp_path, group="O")  # neither: kept as given, not guessed
    assert odd.runs["stop_on_climb"].tolist() == ["maybe"] and odd.steps["stop_on_climb"].tolist() == ["maybe"]


# -- cloud: wandb 0.31's own Api/Runs/Run/HistoryScan over a fake server (tests/public_api_fakes.py) --


@pytest.fixture(scope="module")
def lrscan_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real range test as lrscan logs it (its logger process, its one-record summary): it diverges,
    so its last step logs Infinity and NaN, and it logs dev_loss every 50 steps."""
    from pipeline.config import parse_args
    from pipeline.train.loop import train

    root = tmp_path_factory.mktemp("lrscan_run")
    words = root / "words.txt"
    words.write_text("\n".join(make_words()) + "\n")
    with quiet_env(), pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_DIR", str(root))
        mp.chdir(root)
        train(parse_args(train_argv(words, "--steps=300", "--lre_min=1", "--lre_max=40", "--stop_on_climb=False",
                                    "--eval_every_steps=50", "--run_id=cloud1", f"--ckpt_dir={root / 'ckpt'}")))
    [path] = root.glob("wandb/offline-run-*-cloud1/run-cloud1.wandb")
    return path


def synced_specs(runs_dir: Path, **fields_by_id: Mapping[str, Any]) -> list[SyncedRun]:
    """The SPECS runs, synced from their real .wandb files."""
    return [sync_offline_run(next((runs_dir / run_id).glob("wandb/offline-run-*/run-*.wandb")),
                             **fields_by_id.get(run_id, {})) for run_id in SPECS]


@pytest.mark.parametrize("exported_through", [None, 100, 0], ids=["exported", "live-tail", "all-live"])
def test_an_offline_lrscan_run_synced_to_the_cloud_loads_every_step(lrscan_run: Path, tmp_path: Path,
                                                                    exported_through: int | None) -> None:
    synced = sync_offline_run(lrscan_run, exported_through=exported_through)
    # what a sync sends as the run's summary: what lrscan set, none of the per-step keys
    assert {"train_loss", "dev_loss", "final_step", "stop_reason"} <= set(synced.summary)
    assert not {"lr", "lre", "loss", "log10_loss", "smooth_loss"} & set(synced.summary)
    backend = FakeBackend([synced])
    cloud = load_runs("me/lrscan", api=OfflineApi(backend), cache_dir=tmp_path)
    offline = load_runs(lrscan_run)
    assert_frame_equal(cloud.steps, offline.steps)
    assert_frame_equal(cloud.runs.drop(columns="path"), offline.runs.drop(columns="path"))
    assert cloud.problems == []
    steps = cloud.steps
    assert steps["step"].tolist() == sorted(synced.rows) and len(steps) > 250
    assert steps["dev_loss"].notna().sum() == sum("dev_loss" in row for row in synced.rows.values()) == 5
    assert np.isinf(steps["loss"].iloc[-1]) and np.isnan(steps["smooth_loss"].iloc[-1])  # diverged
    # one scan_history pass for every key (keys=None), one page: page_size counts steps
    assert backend.scans == [("cloud1", None)]
    assert backend.pages == [("cloud1", 0, len(synced.rows))]


def test_a_history_short_of_what_the_run_lists_is_not_cached(lrscan_run: Path, tmp_path: Path) -> None:
    backend = FakeBackend([sync_offline_run(lrscan_run)])
    api = OfflineApi(backend)
    serve = backend.scan_page
    n_steps = len(backend.runs["cloud1"].rows)
    backend.scan_page = lambda request: []  # W&B has not exported the history yet: every page empty
    with pytest.raises(LrscanError, match=rf"none of the 1 matching runs .*scan_history returned 0 of the {n_steps} "
                                          r"values of lr it lists.*; not cached"):
        load_runs("me/lrscan", api=api, cache_dir=tmp_path)
    backend.scan_page = lambda request: serve(request)[:100]  # part of it
    loaded = load_runs("me/lrscan", api=api, cache_dir=tmp_path)
    assert len(loaded.steps) == 100 and f"scan_history returned 100 of the {n_steps} values of lr" in loaded.problems[0]
    backend.scan_page = serve
    loaded = load_runs("me/lrscan", api=api, cache_dir=tmp_path)
    assert len(loaded.steps) == n_steps and loaded.problems == []
    assert len(backend.scans) == 3  # each short history was read again
    assert_frame_equal(load_runs("me/lrscan", api=api, cache_dir=tmp_path).steps, loaded.steps)
    assert len(backend.scans) == 3  # the whole one came from the cache


def test_cloud_frame_equals_the_offline_frame(runs_dir: Path, tmp_path: Path) -> None:
    api = OfflineApi(FakeBackend(synced_specs(runs_dir), page_limit=2))
    cloud = load_runs("me/lrscan", group="A", api=api, cache_dir=tmp_path)
    assert_frame_equal(cloud.steps, expected_group_a_steps())
    offline = load_runs(runs_dir, group="A")
    drop = ["path", "state", "exit_code"]  # a2 exited 1: "failed" on W&B, with no exit code in the listing
    assert_frame_equal(cloud.runs.drop(columns=drop), offline.runs.drop(columns=drop))
    assert cloud.runs["state"].tolist() == ["finished", "failed"]
    assert api.calls == [("me/lrscan", {"$and": [{"group": "A"}, {"jobType": "train"}]}, 200)]
    everything = load_runs("me/lrscan", api=api, cache_dir=tmp_path)
    assert everything.runs["run_id"].tolist() == ["a1", "a2", "b1"]
    assert len(api.calls) == 1 + 2  # 3 runs, the server's pages hold 2


def test_cloud_scans_every_step_not_a_sample(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = rows_of(np.linspace(-3, 0, 2500).tolist(), dev_loss={100: 1.0, 2499: 0.5})
    backend = FakeBackend([synced_from_rows("long", rows, exported_through=1200)])
    monkeypatch.setattr(sources, "SCAN_PAGE_STEPS", 1000)
    loaded = load_runs("me/lrscan", api=OfflineApi(backend), cache_dir=tmp_path)
    assert loaded.steps["step"].tolist() == list(range(2500))
    assert loaded.steps["dev_loss"].notna().sum() == 2
    assert backend.scans == [("long", None)]  # one pass; asking for dev_loss with the others keeps 2 rows
    assert backend.pages == [("long", 0, 1000), ("long", 1000, 2000), ("long", 2000, 2500)]


def test_a_wide_run_is_read_in_keyed_passes_without_losing_rows(tmp_path: Path) -> None:
    # 40 more logged keys: the whole-run download would be mostly waste, so keyed scans; the
    # per-step keys together, dev_loss alone (the live steps come from sampledHistory, which keeps
    # only the rows holding every key asked for)
    rows = [(step, {**row, **{f"grad_norm/{i}": 0.5 for i in range(40)}})
            for step, row in rows_of(np.linspace(-3, 0, 300).tolist(), dev_loss={100: 1.0, 299: 0.5})]
    backend = FakeBackend([synced_from_rows("wide", rows, exported_through=150)])
    loaded = load_runs("me/lrscan", api=OfflineApi(backend), cache_dir=tmp_path)
    assert loaded.steps["step"].tolist() == list(range(300)) and loaded.steps["lre"].notna().all()
    assert loaded.steps["dev_loss"].notna().sum() == 2 and loaded.problems == []
    assert backend.scans == [("wide", ["_step", "lr", "lre", "loss", "log10_loss"]), ("wide", ["_step", "dev_loss"])]


def test_cloud_run_with_missing_keys(tmp_path: Path) -> None:
    runs = [FakeRun("a1", SPECS["a1"]), FakeRun("a2", SPECS["a2"], drop_keys=("lre", "dev_loss"))]
    loaded = load_runs("me/lrscan", group="A", api=FakeApi(runs), cache_dir=tmp_path)
    expected = expected_group_a_steps().drop(columns="dev_loss")  # now no run logged it
    expected.loc[5:, "lre"] = np.nan
    assert_frame_equal(loaded.steps, expected)
    assert loaded.problems == ["run a2: no values logged for lre"]


def test_cloud_cache_hit_skips_scan_history(runs_dir: Path, tmp_path: Path) -> None:
    backend = FakeBackend(synced_specs(runs_dir, b1={"state": "running"}))
    api = OfflineApi(backend)
    first = load_runs("me/lrscan", api=api, cache_dir=tmp_path / "cache")
    assert [run_id for run_id, _ in backend.scans] == ["a1", "a2", "b1"]
    assert list((tmp_path / "cache" / "me" / "lrscan").glob("a1-*.pkl"))  # pyarrow absent here: pickle
    second = load_runs("me/lrscan", api=api, cache_dir=tmp_path / "cache")
    assert_frame_equal(second.steps, first.steps)
    assert_frame_equal(second.runs, first.runs)
    assert [run_id for run_id, _ in backend.scans] == ["a1", "a2", "b1", "b1"]  # ended: cached; running: read again


def test_a_reused_api_sees_runs_that_changed(tmp_path: Path) -> None:
    # wandb.Api keeps each listing it made (its `runs` memo) and would hand out the old runs again
    run = synced_from_rows("grow", rows_of([-3.0, -2.0]), state="running")
    api = OfflineApi(FakeBackend([run]))
    first = load_runs("me/lrscan", api=api, cache_dir=tmp_path)
    assert first.runs["state"].tolist() == ["running"] and first.runs["n_steps"].tolist() == [2]
    run.rows.update(synced_from_rows("grow", rows_of([-1.0, 0.0], start=2)).rows)
    run.state, run.heartbeat_at = "finished", "2026-11-25T02:00:00Z"
    later = load_runs("me/lrscan", api=api, cache_dir=tmp_path)
    assert later.runs["state"].tolist() == ["finished"] and later.runs["n_steps"].tolist() == [4]


def test_cloud_cache_is_keyed_by_heartbeat(runs_dir: Path, tmp_path: Path) -> None:
    runs = synced_specs(runs_dir)
    load_runs("me/lrscan", group="B", api=OfflineApi(FakeBackend(runs)), cache_dir=tmp_path)
    runs[2].heartbeat_at = "2026-11-26T00:00:00Z"  # the run was resumed and changed
    runs[2].rows = {0: runs[2].rows[0]}
    loaded = load_runs("me/lrscan", group="B", api=OfflineApi(FakeBackend(runs)), cache_dir=tmp_path)
    assert loaded.steps["step"].tolist() == [0]


def test_cloud_sweep_path_and_errors(runs_dir: Path, tmp_path: Path) -> None:
    api = OfflineApi(FakeBackend(synced_specs(runs_dir)))
    assert load_runs("me/lrscan/swp1", api=api, cache_dir=tmp_path).runs["run_id"].tolist() == ["b1"]
    assert api.calls[0][1] == {"$and": [{"$or": [{"sweep": "swp1"}, {"group": "swp1"}]}, {"jobType": "train"}]}
    with pytest.raises(LrscanError, match="no runs in me/lrscan match group='Z'"):
        load_runs("me/lrscan", group="Z", api=api, cache_dir=tmp_path)
    with pytest.raises(LrscanError, match="cannot list the runs of me/other: Could not find project other"):
        load_runs("me/other", api=api, cache_dir=tmp_path)


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
