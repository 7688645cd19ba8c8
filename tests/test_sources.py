"""analysis.sources.load_runs: real offline run folders, and the cloud path through fakes of the Public API.

The W&B cloud cannot be reached from the test machines and `wandb.Api()` must never be built in
tests, so the cloud path runs against `FakeApi`/`FakeRun` below: objects with the Public API's
shape (`api.runs(path, filters=, per_page=)` paging lazily through a list; `run.id .name .group
.tags .config .summary_metrics .state .sweep .job_type .heartbeat_at .scan_history(keys=,
page_size=)`), whose `scan_history` keeps the real one's rule of returning only the rows that hold
every requested key. The cloud frames are checked against the offline frames of the same runs.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from analysis.sources import load_runs
from pipeline.errors import LrscanError
from tests.test_wandb_file import make_run


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


# -- cloud, through fakes of the Public API ------------------------------------------------------


class FakeSweep:
    def __init__(self, sweep_id: str) -> None:
        self.id = sweep_id


class FakeRun:
    """A finished (or running) run as `wandb.Api().runs()` yields it."""

    def __init__(self, run_id: str, spec: Mapping[str, Any], state: str = "", drop_keys: Sequence[str] = ()) -> None:
        self.id = run_id
        self.name = spec["name"]
        self.group = spec["group"]
        self.tags = list(spec.get("tags", ()))
        self.job_type = spec.get("job_type", "train")
        self.config = {**spec["config"], "_wandb": {"cli_version": "0.31.0"}}
        self.state = state or ("finished" if not spec.get("exit_code") else "crashed")
        self.sweep = FakeSweep(spec["sweep_id"]) if spec.get("sweep_id") else None
        self.heartbeat_at = "2026-11-25T01:00:00"
        self.rows = [{"_step": step, **{k: v for k, v in row.items() if k not in drop_keys}} for step, row in spec["rows"]]
        summary: dict[str, Any] = {}
        for row in self.rows:
            summary.update(row)
        self.summary_metrics = {**summary, **(spec.get("summary") or {}), "_runtime": 3.0}
        self.scans: list[list[str]] = []
        self.pages_served = 0

    def scan_history(self, keys: Sequence[str] | None = None, page_size: int = 1000, **kw: Any) -> Iterator[dict]:
        self.scans.append(list(keys or []))
        # like the real one: only rows that hold every requested key, served page by page
        rows = [{k: r[k] for k in keys} for r in self.rows if all(k in r for k in keys)] if keys else list(self.rows)
        for start in range(0, len(rows), page_size):
            self.pages_served += 1
            yield from rows[start : start + page_size]

    def history(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("run.history() samples 500 rows: load_runs must use scan_history")


class FakeRuns:
    """`api.runs()`: lazy, fetched page by page."""

    def __init__(self, runs: list[FakeRun], per_page: int, page_limit: int) -> None:
        self._runs, self._page = runs, min(per_page, page_limit)
        self.pages_fetched = 0

    def __iter__(self) -> Iterator[FakeRun]:
        for start in range(0, len(self._runs), self._page):
            self.pages_fetched += 1
            yield from self._runs[start : start + self._page]


class FakeApi:
    def __init__(self, runs: list[FakeRun], page_limit: int = 2) -> None:
        self._runs, self._page_limit = runs, page_limit
        self.calls: list[tuple[str, Any, int]] = []
        self.options: list[dict[str, Any]] = []
        self.listings: list[FakeRuns] = []

    def runs(self, path: str, filters: Any = None, per_page: int = 50, **kwargs: Any) -> FakeRuns:
        self.calls.append((path, filters, per_page))
        self.options.append(kwargs)
        listing = FakeRuns(self._runs, per_page, self._page_limit)
        self.listings.append(listing)
        return listing


def fake_runs(**overrides: Any) -> list[FakeRun]:
    return [FakeRun(run_id, spec, **overrides.get(run_id, {})) for run_id, spec in SPECS.items()]


def test_cloud_frame_equals_the_offline_frame(runs_dir: Path, tmp_path: Path) -> None:
    api = FakeApi(fake_runs())
    cloud = load_runs("me/lrscan", group="A", api=api, cache_dir=tmp_path)
    assert_frame_equal(cloud.steps, expected_group_a_steps())
    offline = load_runs(runs_dir, group="A")
    drop = ["path", "state", "exit_code"]  # a crashed run has no exit code on the cloud listing
    assert_frame_equal(cloud.runs.drop(columns=drop), offline.runs.drop(columns=drop), check_like=True)
    assert api.calls == [("me/lrscan", {"$and": [{"group": "A"}, {"jobType": "train"}]}, 200)]
    assert api.options == [{"lazy": False}]  # config and summary in the listing, not a request per run
    assert api.listings[0].pages_fetched == 2  # 4 runs, 2 a page


def test_cloud_scans_every_step_not_a_sample(tmp_path: Path) -> None:
    spec = dict(SPECS["a1"], rows=rows_of(np.linspace(-3, 0, 2500).tolist(), dev_loss={100: 1.0, 2499: 0.5}))
    run = FakeRun("long", spec)
    loaded = load_runs("me/lrscan", api=FakeApi([run]), cache_dir=tmp_path)
    assert loaded.steps["step"].tolist() == list(range(2500))
    assert loaded.steps["dev_loss"].notna().sum() == 2
    # the per-step keys in one scan, a key logged on some steps only in its own (scan_history drops
    # the rows that lack any requested key); smooth_loss is not in the summary: never logged
    assert run.scans == [["_step", "lr", "lre", "loss", "log10_loss"], ["_step", "dev_loss"]]
    assert run.pages_served == 1 + 1  # page_size 10000 asked for


def test_cloud_run_with_missing_keys(tmp_path: Path) -> None:
    api = FakeApi(fake_runs(a2={"drop_keys": ("lre", "dev_loss")}))
    loaded = load_runs("me/lrscan", group="A", api=api, cache_dir=tmp_path)
    expected = expected_group_a_steps().drop(columns="dev_loss")  # now no run logged it
    expected.loc[5:, "lre"] = np.nan
    assert_frame_equal(loaded.steps, expected)
    assert loaded.problems == ["run a2: no values logged for lre"]


def test_cloud_cache_hit_skips_scan_history(tmp_path: Path) -> None:
    runs = fake_runs(b1={"state": "running"})
    api = FakeApi(runs)
    first = load_runs("me/lrscan", api=api, cache_dir=tmp_path / "cache")
    scans = {run.id: len(run.scans) for run in runs}
    assert list((tmp_path / "cache" / "me" / "lrscan").glob("a1-*.pkl"))  # pyarrow absent here: pickle
    second = load_runs("me/lrscan", api=api, cache_dir=tmp_path / "cache")
    assert_frame_equal(second.steps, first.steps)
    assert_frame_equal(second.runs, first.runs)
    assert len(runs[0].scans) == scans["a1"] and len(runs[1].scans) == scans["a2"]  # finished or crashed: cached
    assert len(runs[2].scans) == 2 * scans["b1"]  # still running: read again


def test_cloud_cache_is_keyed_by_heartbeat(tmp_path: Path) -> None:
    runs = fake_runs()
    load_runs("me/lrscan", group="B", api=FakeApi(runs), cache_dir=tmp_path)
    runs[2].heartbeat_at = "2026-11-26T00:00:00"  # the run was resumed and changed
    runs[2].rows = runs[2].rows[:1]
    loaded = load_runs("me/lrscan", group="B", api=FakeApi(runs), cache_dir=tmp_path)
    assert loaded.steps["step"].tolist() == [0]


def test_cloud_sweep_path_and_errors(tmp_path: Path) -> None:
    api = FakeApi(fake_runs())
    assert load_runs("me/lrscan/swp1", api=api, cache_dir=tmp_path).runs["run_id"].tolist() == ["b1"]
    assert api.calls[0][1] == {"$and": [{"$or": [{"sweep": "swp1"}, {"group": "swp1"}]}, {"jobType": "train"}]}
    with pytest.raises(LrscanError, match="no runs in me/lrscan match group='Z'"):
        load_runs("me/lrscan", group="Z", api=api, cache_dir=tmp_path)

    class BrokenApi:
        def runs(self, *args: Any, **kwargs: Any) -> Any:
            raise ValueError("Could not find project lrscan")

    with pytest.raises(LrscanError, match="cannot list the runs of me/lrscan: Could not find project"):
        load_runs("me/lrscan", api=BrokenApi(), cache_dir=tmp_path)


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
