"""analysis.sources.cloud: the cloud path through wandb 0.31's Public API.

The W&B cloud cannot be reached from the test machines and `wandb.Api()` must never be built in
tests, so the cloud path runs through wandb 0.31's own `Api.runs`, `Runs`, `Run`, `scan_history`
and `HistoryScan` over a fake of wandb-core and the W&B server (tests/support/public_api_fakes.py),
fed with real offline runs as `wandb sync` would hand them over. The cloud frames are checked
against the offline frames of the same runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pandas.testing import assert_frame_equal

from lrscan.analysis.sources import cloud, load_runs
from lrscan.analysis.sources.cloud import Retry
from lrscan.analysis.sources.frame import RUN_INFO_COLUMNS
from lrscan.pipeline.errors import LrscanError
from tests.conftest import make_words, train_argv
from tests.support.frames import expected_group_a_steps
from tests.support.public_api_fakes import (
    FakeApi,
    FakeBackend,
    FakeRun,
    OfflineApi,
    SyncedRun,
    core_error,
    http_error,
    sync_offline_run,
    synced_from_rows,
)
from tests.support.runfiles import SPECS, quiet_env, rows_of
from tests.support.user_runs import USER_RUNS, run_file


@pytest.fixture(scope="module")
def lrscan_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real range test as lrscan logs it (its logger process, its one-record summary): it diverges,
    so its last step logs Infinity and NaN, and it logs dev_loss every 50 steps."""
    from lrscan.pipeline.config import parse_args
    from lrscan.pipeline.train.loop import train

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
    with pytest.raises(LrscanError, match=rf"none of the 1 matching run\(s\) logged a loss.*scan_history returned 0 of "
                                          rf"the {n_steps} values of lr it lists.*; not cached"):
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
    # the default job type filter (all but analysis runs) is checked here, not by the server: a1, a2
    # and the analysis run n1 come back, in two pages of 2
    assert api.calls == 2 * [("me/lrscan", {"$and": [{"group": "A"}]}, 200)]
    assert cloud.notes == ["left out 1 of 3 runs: 1 by job_type!='analysis' (their job types: 'analysis' x1)"]
    everything = load_runs("me/lrscan", api=api, cache_dir=tmp_path)
    assert everything.runs["run_id"].tolist() == ["a1", "a2", "b1"]
    assert len(api.calls) == 2 + 2  # 4 runs, the server's pages hold 2


def test_cloud_scans_every_step_not_a_sample(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = rows_of(np.linspace(-3, 0, 2500).tolist(), dev_loss={100: 1.0, 2499: 0.5})
    backend = FakeBackend([synced_from_rows("long", rows, exported_through=1200)])
    monkeypatch.setattr(cloud, "SCAN_PAGE_STEPS", 1000)
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


def test_cloud_run_with_missing_keys_derives_them(tmp_path: Path) -> None:
    runs = [FakeRun("a1", SPECS["a1"]), FakeRun("a2", SPECS["a2"], drop_keys=("lre", "dev_loss"))]
    loaded = load_runs("me/lrscan", group="A", api=FakeApi(runs), cache_dir=tmp_path)
    expected = expected_group_a_steps().drop(columns="dev_loss")  # now no run logged it
    expected.loc[5:, "lre"] = np.log10(expected.loc[5:, "lr"])  # lre = log10(lr), derived
    assert_frame_equal(loaded.steps, expected)
    assert loaded.problems == []
    assert loaded.runs[["lr_key", "loss_key", "step_key"]].values.tolist() == 2 * [["lr", "loss", "_step"]]


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
    assert api.calls[0][1] == {"$and": [{"$or": [{"sweep": "swp1"}, {"group": "swp1"}]}]}
    # the server filtered them all out: one small listing counts what the project holds
    with pytest.raises(LrscanError, match=r"no runs in me/lrscan match group='Z', job_type!='analysis' "
                                          r"\(of its 4 runs, none passes these filters\)$"):
        load_runs("me/lrscan", group="Z", api=api, cache_dir=tmp_path)
    # a negated job type is checked here, so the runs it left out are counted
    with pytest.raises(LrscanError, match=r"no runs in me/lrscan match group='B', job_type!='train': left out 1 of 1 "
                                          r"runs: 1 by job_type!='train' \(their job types: 'train' x1\)$"):
        load_runs("me/lrscan", group="B", job_type="!train", api=api, cache_dir=tmp_path)
    with pytest.raises(LrscanError, match="cannot list the runs of me/other: Could not find project other"):
        load_runs("me/other", api=api, cache_dir=tmp_path)


@pytest.mark.parametrize("name", list(USER_RUNS))
def test_runs_of_your_own_code_load_from_the_cloud_as_offline(user_runs: dict[str, Path], name: str,
                                                              tmp_path: Path) -> None:
    # each script's offline run, "synced": its keys come from the run's history_keys, not from guessing
    backend = FakeBackend([sync_offline_run(run_file(user_runs[name]))])
    cloud = load_runs("me/lrscan", api=OfflineApi(backend), cache_dir=tmp_path)
    offline = load_runs(user_runs[name])
    assert_frame_equal(cloud.steps, offline.steps)
    # the schedule's fields, where it implies them (a range run's `lr` column is its summary's last lr)
    implied = ["lr", "decay_steps", "decay_lrs"] if name.startswith("step_decay") else ["lre_min", "lre_max"]
    shared = ["run_id", "n_steps", "first_step", "last_step", *RUN_INFO_COLUMNS, "schedule", *implied]
    shared = [c for c in shared if c in offline.runs.columns]
    assert_frame_equal(cloud.runs[shared], offline.runs[shared])
    assert cloud.problems == offline.problems and cloud.notes == offline.notes
    [(_, keys)] = backend.scans  # one keyed pass for these narrow runs: the keys chosen, nothing more
    assert keys is None


# -- the real cause of a failure, and retries of 429 / 5xx (wandb's own exception types) ----------


def two_runs() -> FakeBackend:
    return FakeBackend([synced_from_rows(run_id, rows_of([-3.0, -2.0, -1.0]), config={"schedule": "range"})
                        for run_id in ("r1", "r2")])


def test_a_run_whose_history_cannot_be_read_is_the_errors_cause(tmp_path: Path) -> None:
    backend = two_runs()
    backend.failures["scan r1"] = [core_error(403, "permission denied on run r1's history")]
    loaded = load_runs("me/lrscan", api=OfflineApi(backend), cache_dir=tmp_path, retry=Retry(sleep=no_wait))
    assert loaded.runs["run_id"].tolist() == ["r2"]  # the other run is still read
    assert loaded.problems == ["run r1: history not read: permission denied on run r1's history"]
    # none readable: the cause, never "none passes these filters"
    backend = FakeBackend([synced_from_rows("r1", rows_of([-3.0, -2.0]))])
    backend.failures["scan r1"] = [http_error(404, text="no history")]
    with pytest.raises(LrscanError, match=r"^me/lrscan: run r1: history not read: .*404") as caught:
        load_runs("me/lrscan", api=OfflineApi(backend), cache_dir=tmp_path, retry=Retry(sleep=no_wait))
    assert "filters" not in str(caught.value)


def no_wait(seconds: float) -> None:
    raise AssertionError(f"a retry where none was due (would wait {seconds} s)")


def test_429_and_5xx_are_retried_with_backoff_honouring_retry_after(tmp_path: Path) -> None:
    backend = two_runs()
    backend.failures["Runs"] = [core_error(503, "service unavailable"), http_error(429, retry_after="7")]
    backend.failures["scan r2"] = [http_error(502), http_error(500)]
    waits: list[float] = []
    retry = Retry(attempts=5, first_wait_seconds=1.5, max_wait_seconds=60, sleep=waits.append)
    loaded = load_runs("me/lrscan", api=OfflineApi(backend), cache_dir=tmp_path, retry=retry)
    assert loaded.runs["run_id"].tolist() == ["r1", "r2"] and loaded.problems == []
    assert loaded.steps.groupby("run_id", observed=True).size().tolist() == [3, 3]
    # listing: backoff 1.5 s, then the server's Retry-After; r2's scan: 1.5 s, then 3 s
    assert waits == [1.5, 7.0, 1.5, 3.0]


def test_a_429_that_never_ends_is_said_and_the_other_runs_are_read(tmp_path: Path) -> None:
    backend = two_runs()
    backend.failures["scan r1"] = [http_error(429, retry_after="120") for _ in range(3)]
    waits: list[float] = []
    retry = Retry(attempts=3, first_wait_seconds=1.0, max_wait_seconds=30, sleep=waits.append)
    loaded = load_runs("me/lrscan", api=OfflineApi(backend), cache_dir=tmp_path, retry=retry)
    assert loaded.runs["run_id"].tolist() == ["r2"]
    assert waits == [30, 30]  # Retry-After honoured up to the cap, bounded tries
    [problem] = loaded.problems
    assert problem.startswith("run r1: history not read: ")
    assert "HTTP 429; gave up after 3 tries in a row over 60 s" in problem
    # the listing itself: one line, the cause and the tries
    backend.failures["Runs"] = [core_error(500, "internal error") for _ in range(3)]
    with pytest.raises(LrscanError, match=r"cannot list the runs of me/lrscan: internal error \(HTTP 500; gave up "
                                          r"after 3 tries in a row over 3 s\)"):
        load_runs("me/lrscan", api=OfflineApi(backend), cache_dir=tmp_path,
                  retry=Retry(attempts=3, first_wait_seconds=1.0, sleep=lambda s: None))


def seven_steps() -> FakeBackend:
    return FakeBackend([synced_from_rows("r1", rows_of([-3.0 + 0.5 * i for i in range(7)]),
                                         config={"schedule": "range"})])


def test_a_failure_mid_scan_resumes_where_it_stopped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cloud, "SCAN_PAGE_STEPS", 2)  # pages of steps [0, 2), [2, 4), [4, 6), [6, 7)
    clean = load_runs("me/lrscan", api=OfflineApi(seven_steps()), cache_dir=tmp_path / "clean").steps
    backend = seven_steps()
    # the second page fails with a 503, and after the resume the third with a lost connection
    backend.failures["scan r1"] = [None, http_error(503), None, core_error(0, "Post \"https://api.wandb.ai/graphql\": "
                                                                          "read tcp: connection reset by peer")]
    waits: list[float] = []
    loaded = load_runs("me/lrscan", api=OfflineApi(backend), cache_dir=tmp_path / "flaky",
                       retry=Retry(first_wait_seconds=1.5, sleep=waits.append))
    assert_frame_equal(loaded.steps, clean)
    assert loaded.problems == []
    # every page read once: the scan went on from the step after its last row, never from step 0
    assert [(lo, hi) for run, lo, hi in backend.pages] == [(0, 2), (2, 4), (4, 6), (6, 7)]
    assert len(backend.scans) == 3  # the first scan and its two resumptions
    assert waits == [1.5, 1.5]  # rows came in between: the tries in a row start again


def test_one_retry_deadline_for_the_whole_load(tmp_path: Path) -> None:
    backend = FakeBackend([synced_from_rows(run_id, rows_of([-3.0, -2.0, -1.0]), config={"schedule": "range"})
                           for run_id in ("r1", "r2", "r3")])
    backend.failures = {"Runs": [http_error(503)], "scan r1": [http_error(503), http_error(502)],
                        "scan r2": [http_error(500)], "scan r3": [http_error(503)]}
    now = [0.0]
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    retry = Retry(attempts=10, first_wait_seconds=2.0, deadline_seconds=10.0, sleep=sleep, clock=lambda: now[0])
    loaded = load_runs("me/lrscan", api=OfflineApi(backend), cache_dir=tmp_path, retry=retry)
    # listing 2 s, r1 2 + 4 s, r2 2 s: 10 s spent; r3's first wait would pass the load's deadline
    assert waits == [2.0, 2.0, 4.0, 2.0] and now[0] == 10.0
    assert loaded.runs["run_id"].tolist() == ["r1", "r2"]
    [problem] = loaded.problems
    assert problem.startswith("run r3: history not read: 503 Server Error")
    assert problem.endswith("(HTTP 503; gave up: the 10 s this load allows for retries are spent)")


def test_connection_errors_and_timeouts_are_retried_like_5xx(tmp_path: Path) -> None:
    import requests
    from wandb.sdk.lib.service.service_connection import WandbApiFailedError

    backend = two_runs()
    backend.failures["Runs"] = [requests.ConnectionError("('Connection aborted.', RemoteDisconnected())")]
    backend.failures["scan r1"] = [
        requests.exceptions.ReadTimeout("HTTPSConnectionPool(host='api.wandb.ai'): Read timed out."),
        WandbApiFailedError("Failed to execute API request: the service process is busy and did not respond in time."),
        core_error(0, 'Post "https://api.wandb.ai/graphql": dial tcp 35.186.228.49:443: connect: connection refused'),
        TimeoutError("timed out"),
    ]
    waits: list[float] = []
    loaded = load_runs("me/lrscan", api=OfflineApi(backend), cache_dir=tmp_path,
                       retry=Retry(first_wait_seconds=1.0, sleep=waits.append))
    assert loaded.runs["run_id"].tolist() == ["r1", "r2"] and loaded.problems == []
    assert waits == [1.0, 1.0, 2.0, 4.0, 8.0]
    # what would fail the same way again is not retried
    backend = two_runs()
    backend.failures["scan r1"] = [WandbApiFailedError("Failed to execute API request: the service process is not "
                                                       "running.")]
    loaded = load_runs("me/lrscan", api=OfflineApi(backend), cache_dir=tmp_path / "dead",
                       retry=Retry(sleep=no_wait))
    assert loaded.problems == ["run r1: history not read: Failed to execute API request: the service process is "
                               "not running."]


def test_retry_after_zero_still_waits_the_backoff(tmp_path: Path) -> None:
    backend = two_runs()
    backend.failures["scan r1"] = [http_error(429, retry_after="0") for _ in range(3)]
    waits: list[float] = []
    loaded = load_runs("me/lrscan", api=OfflineApi(backend), cache_dir=tmp_path,
                       retry=Retry(first_wait_seconds=1.5, sleep=waits.append))
    assert loaded.runs["run_id"].tolist() == ["r1", "r2"]
    assert waits == [1.5, 3.0, 6.0]  # not three immediate retries
    assert Retry(first_wait_seconds=1.5).wait_seconds(1, -30.0) == 1.5  # an HTTP date in the past: the same
    assert Retry(first_wait_seconds=1.5).wait_seconds(1, 7.0) == 7.0  # a longer Retry-After is honoured


def test_http_status_is_found_in_the_public_apis_exceptions() -> None:
    from wandb.errors import CommError

    assert cloud.http_status(CommError("HTTP 429", http_error(429, retry_after="3"))) == (429, 3.0)
    assert cloud.http_status(CommError("boom", core_error(502, "bad gateway"))) == (502, None)
    assert cloud.http_status(ValueError("no status")) == (None, None)
    status, seconds = cloud.http_status(http_error(503, retry_after="Wed, 21 Oct 2099 07:28:00 GMT"))
    assert status == 503 and seconds > 1e6
    assert cloud.transient(CommError("HTTP 429", http_error(429, retry_after="3"))) == ("HTTP 429", 3.0)
    assert cloud.transient(http_error(404)) is None and cloud.transient(ValueError("bad reply")) is None
    assert cloud.transient(CommError("boom", ConnectionResetError(104, "reset"))) == ("connection lost", None)


def test_a_loss_logged_as_nan_is_a_row_from_the_cloud_as_offline(tmp_path: Path) -> None:
    rows = rows_of([-3.0, -2.5, -2.0, -1.5, -1.0])
    rows[2][1].update(loss=float("nan"), log10_loss=float("nan"))
    rows[3] = (3, {"lr": rows[3][1]["lr"], "lre": rows[3][1]["lre"]})  # no loss logged at step 3
    for exported_through in (None, 0):  # parquet (NaN as a float) and live (the token "NaN")
        backend = FakeBackend([synced_from_rows("n1", rows, exported_through=exported_through)])
        steps = load_runs("me/lrscan", api=OfflineApi(backend), cache_dir=tmp_path / str(exported_through)).steps
        assert steps["step"].tolist() == [0, 1, 2, 4]
        assert np.isnan(steps["loss"].iloc[2]) and steps["lr"].iloc[2] == rows[2][1]["lr"]
    # from the cache as well
    cached = load_runs("me/lrscan", api=OfflineApi(backend), cache_dir=tmp_path / "0").steps
    assert cached["step"].tolist() == [0, 1, 2, 4]
