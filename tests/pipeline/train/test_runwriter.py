"""The logging process' side: its fast history path writes what wandb's own `run.log` writes."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import wandb

from lrscan.pipeline import keys
from lrscan.pipeline.runlog import read_run_file
from lrscan.pipeline.train import runwriter
from lrscan.pipeline.train.runwriter import _json_column, _json_number, history_writer
from tests.support.runfiles import records, wait_until_written

ROWS = [{keys.LR: 0.001 * (i + 1), keys.LRE: -3.0 + i, keys.LOSS: loss,
         keys.LOG10_LOSS: math.log10(loss) if loss > 0 and math.isfinite(loss) else float("nan")}
        for i, loss in enumerate([3.3, 2.0, 1.0, float("inf"), float("nan"), 7.0])]


def _offline_run(tmp_path: Path, run_id: str, **settings):
    return wandb.init(mode="offline", dir=tmp_path, id=run_id,
                      settings=wandb.Settings(console="off", x_disable_stats=True, **settings))


def _write_chunks(writer) -> None:
    """ROWS at steps 0, 10, ... in two chunks, with an eval step's extra values, through `writer`."""
    rows = [(step * 10, row) for step, row in enumerate(ROWS)]
    extra = {20: {keys.DEV_LOSS: 2.5}, 50: {keys.DEV_LOSS: float("nan")}}
    for chunk in (rows[:2], rows[2:]):
        steps = np.array([step for step, _ in chunk])
        columns = {k: np.array([row[k] for _, row in chunk]) for k in ROWS[0]}
        writer(steps, columns, {s: e for s, e in extra.items() if s in steps})


def _run_file(root: Path, run_id: str) -> Path:
    [path] = (root / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb")
    wait_until_written(path)
    return path


def _comparable(record) -> tuple:
    """A record as the tests compare it: its kind, and for history and summary its values by key (wandb-core
    writes a row's items in no fixed order), the wall-clock keys left out."""
    kind = record.WhichOneof("record_type")
    if kind == "history":
        items = {item.key or ".".join(item.nested_key): item.value_json for item in record.history.item}
        return kind, {k: v for k, v in items.items() if k not in ("_timestamp", "_runtime")}
    if kind == "summary":
        return kind, {item.key or ".".join(item.nested_key): item.value_json for item in record.summary.update}
    return (kind,)


def _finish(run) -> None:
    run.finish()
    wandb.teardown()  # finish() may return before wandb-core has written the file


def test_fast_path_writes_what_run_log_writes(tmp_path):
    runs = {}
    for run_id, use_fast in (("viaLog", False), ("viaFast", True)):
        run = _offline_run(tmp_path, run_id)
        rows = [(step * 10, row) for step, row in enumerate(ROWS)]
        extra = {20: {keys.DEV_LOSS: 2.5}, 50: {keys.DEV_LOSS: float("nan")}}  # an eval step's extra value
        if use_fast:
            write = history_writer(run)
            for chunk in (rows[:2], rows[2:]):
                steps = np.array([step for step, _ in chunk])
                columns = {k: np.array([row[k] for _, row in chunk]) for k in ROWS[0]}
                write(steps, columns, {s: e for s, e in extra.items() if s in steps})
        else:
            for step, row in rows:
                run.log({**row, **extra.get(step, {})}, step=step)
        _finish(run)
        [path] = (tmp_path / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb")
        runs[run_id] = read_run_file(path).history
    a, b = runs["viaLog"], runs["viaFast"]
    assert a["step"].tolist() == b["step"].tolist() == [0, 10, 20, 30, 40, 50]
    for k in (keys.LR, keys.LRE, keys.LOSS, keys.LOG10_LOSS, keys.DEV_LOSS):
        np.testing.assert_array_equal(a[k], b[k])


ON_A_TESTED_RELEASE = pytest.mark.skipif(
    ".".join(wandb.__version__.split(".")[:2]) not in runwriter.FAST_PATH_WANDB,
    reason=f"the fast path runs only on the wandb releases it was tested with, not {wandb.__version__}")


@ON_A_TESTED_RELEASE
def test_fast_path_is_in_use_with_this_wandb(tmp_path):
    run = _offline_run(tmp_path, "probe1")
    try:
        writer = history_writer(run)
        assert writer.fast, writer.why
    finally:
        run.finish()


@ON_A_TESTED_RELEASE
def test_fallback_writes_the_same_records_as_the_fast_path(tmp_path):
    # the same run id in two folders: the two files differ only where the clock shows
    files = {}
    for fast in (True, False):
        root = tmp_path / ("fast" if fast else "slow")
        run = _offline_run(root, "same1", x_server_side_derived_summary=True)
        writer = history_writer(run, fast=fast)
        assert writer.fast is fast
        _write_chunks(writer)
        run.summary.update({keys.TRAIN_LOSS: 1.5})
        _finish(run)
        files[fast] = [_comparable(r) for _, _, r in records(_run_file(root, "same1").read_bytes())]
    assert files[False] == files[True]
    histories = [values for kind, *values in files[True] if kind == "history"]
    assert [h[0]["_step"] for h in histories] == [str(s * 10) for s in range(len(ROWS))]
    # the start-up self-check's row never reaches the run
    assert not any(k.startswith("lrscan_check") for h in histories for k in h[0])


def test_untested_wandb_release_logs_through_run_log(tmp_path, monkeypatch):
    monkeypatch.setattr(wandb, "__version__", "0.99.0")
    run = _offline_run(tmp_path, "newer1")
    writer = history_writer(run)
    assert not writer.fast
    assert "wandb 0.99.0 is not a release it was tested with" in writer.why
    _write_chunks(writer)
    _finish(run)
    history = read_run_file(_run_file(tmp_path, "newer1")).history
    assert history["step"].tolist() == [0, 10, 20, 30, 40, 50]
    np.testing.assert_array_equal(history[keys.LOSS], [row[keys.LOSS] for row in ROWS])


class _Renamed:
    """wandb's interface as a release that renamed `_asyncer` would have it: everything else forwarded."""

    def __init__(self, inner) -> None:
        self._inner = inner

    def __getattr__(self, name: str):
        if name == "_asyncer":
            raise AttributeError(name)
        return getattr(self._inner, name)


def test_a_renamed_private_attribute_logs_through_run_log(tmp_path):
    run = _offline_run(tmp_path, "renamed1")
    real = run._interface
    run._interface = _Renamed(real)
    try:
        writer = history_writer(run)
        assert not writer.fast
        assert "_asyncer" in writer.why or "not a release it was tested with" in writer.why
        _write_chunks(writer)
    finally:
        run._interface = real
    _finish(run)
    assert read_run_file(_run_file(tmp_path, "renamed1")).history["step"].tolist() == [0, 10, 20, 30, 40, 50]


@ON_A_TESTED_RELEASE
def test_self_check_catches_a_wire_format_change_and_falls_back(tmp_path, capfd):
    # wandb's typed history values (a newer wire form) make run.log's record differ from ours: the
    # self-check sees it at start-up and every row goes through run.log, correct
    run = _offline_run(tmp_path, "typed1", x_history_value_encoding="json,typed")
    writer = history_writer(run)
    assert not writer.fast
    assert "differs from run.log's" in writer.why
    assert "fast history path failed its self-check" in capfd.readouterr().err
    _write_chunks(writer)
    _finish(run)
    history = read_run_file(_run_file(tmp_path, "typed1")).history
    assert history["step"].tolist() == [0, 10, 20, 30, 40, 50]
    np.testing.assert_array_equal(history[keys.LR], [row[keys.LR] for row in ROWS])
    assert not any(k.startswith("lrscan_check") for k in history)


@pytest.mark.parametrize("v, text", [(0.1, "0.1"), (-1.0, "-1.0"), (float("nan"), "NaN"), (float("inf"), "Infinity"),
                                     (float("-inf"), "-Infinity"), (3, "3")])
def test_json_numbers_in_wandbs_dialect(v, text):
    assert _json_number(v) == text


def test_json_columns_match_the_numbers_one_by_one():
    values = np.array([0.1, -1.0, float("nan"), float("inf"), float("-inf"), 1e-300, 2.0 ** 70])
    assert _json_column(values) == [_json_number(v) for v in values.tolist()]
    assert _json_column(np.array([3, 4])) == ["3", "4"]


SPARED_INIT = """
import sys, wandb
from lrscan.pipeline.train.runwriter import spare_init_work
at_import = "wandb.sdk.launch" in sys.modules  # wandb 0.28 imports it with wandb itself
if sys.argv[2] == "spared":
    spare_init_work(wandb)
    spare_init_work(wandb)  # a second call (the launcher's, then each run's) keeps the one listing
for k in range(2):
    run = wandb.init(mode="offline", dir=sys.argv[1], id=f"{sys.argv[2]}{k}", reinit="create_new",
                     settings=wandb.Settings(console="off", x_disable_stats=True))
    run.finish()
wandb.teardown()
print(at_import, "wandb.sdk.launch" in sys.modules)
"""


def test_a_logger_process_opens_runs_that_record_what_wandb_records_without_its_unused_work(tmp_path):
    # in processes of their own: what spare_init_work changes lasts for the process
    imported = {}
    for how in ("plain", "spared"):
        done = subprocess.run([sys.executable, "-c", SPARED_INIT, str(tmp_path), how], capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
        imported[how] = done.stdout.split()[-2:]
    # W&B Launch's module (the Public API, pydantic) is not imported for the runs; nothing else is asked of it
    assert imported["plain"][1] == "True" and imported["spared"][1] == imported["spared"][0]
    # every run keeps the list of installed packages wandb makes, the same whether listed once or per run
    listed = {p.parent.parent.name.rsplit("-", 1)[1]: p.read_text()
              for p in (tmp_path / "wandb").glob("offline-run-*/files/requirements.txt")}
    assert sorted(listed) == ["plain0", "plain1", "spared0", "spared1"]
    assert len(set(listed.values())) == 1 and "wandb==" in listed["spared1"]
