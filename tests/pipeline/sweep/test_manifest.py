"""A sweep folder's record: sweep.yaml and sweep.json written once, the manifest one row per point from the claims."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from lrscan.pipeline.errors import LrscanError
from lrscan.pipeline.sweep.claims import ClaimStore, worker_id
from lrscan.pipeline.sweep.command import run_id_for
from lrscan.pipeline.sweep.manifest import (
    MANIFEST,
    manifest_rows,
    prepare_folder,
    read_manifest,
    sweep_folder,
    write_manifest,
)
from lrscan.pipeline.sweep.spec import load_sweep
from tests.pipeline.sweep.fakes import write_sweep


def test_the_manifest_has_one_row_per_point_as_its_claims_say_and_reads_back(tmp_path):
    sweep = load_sweep(write_sweep(tmp_path, "x: {values: [1, 2, 3]}\n"))
    folder = sweep_folder(str(tmp_path / "runs"), sweep)
    prepare_folder(folder, sweep)
    store = ClaimStore(folder, 60.0)
    try:
        # point 0 finished at its first attempt; point 1 failed once, then is running again; point 2 never ran
        info = {"started_at": "2026-01-01T00:00:00+00:00", "log": "logs/a.log"}
        store.claim(0, 0, info)
        store.end(0, 0, {"state": "finished", "exit_code": 0, "ended_at": "2026-01-01T00:01:00+00:00", "seconds": 60.0})
        store.claim(1, 0, info)
        store.end(1, 0, {"state": "failed", "exit_code": 3, "ended_at": "2026-01-01T00:00:02+00:00", "seconds": 2.0})
        store.claim(1, 1, info)
        write_manifest(folder, manifest_rows(sweep, store.states(len(sweep.points))))
    finally:
        store.close()
    assert sorted(os.listdir(folder)) == ["claims", "logs", MANIFEST, "sweep.json", "sweep.yaml"]  # no temp file left
    rows = read_manifest(folder)
    expected = pd.DataFrame({
        "index": [0, 1, 2], "run_id": [run_id_for(sweep.key, i) for i in range(3)],
        "state": ["finished", "running", "pending"], "attempts": [1, 2, 0],
        "exit_code": pd.array([0, None, None], dtype="Int64"), "seconds": [60.0, None, None],
        "worker": [worker_id(), worker_id(), None], "log": ["logs/a.log", "logs/a.log", None],
    })
    pd.testing.assert_frame_equal(rows[list(expected.columns)], expected)
    assert rows["config"].tolist() == [{"x": 1}, {"x": 2}, {"x": 3}]


def test_the_sweep_is_recorded_once_and_a_later_runner_does_not_rewrite_it(tmp_path):
    path = write_sweep(tmp_path, "x: {values: [1, 2]}\n", extra="name: fakename\n")
    sweep = load_sweep(path)
    folder = sweep_folder(str(tmp_path / "runs"), sweep)
    prepare_folder(folder, sweep)
    assert (tmp_path / "runs" / sweep.key / "sweep.yaml").read_text() == path.read_text()
    meta = json.loads((tmp_path / "runs" / sweep.key / "sweep.json").read_text())
    assert meta == {"key": sweep.key, "name": "fakename", "method": "grid", "program": "fake.py",
                    "command": ["${env}", "python3", "${program}", "${args}"], "points": 2, "seed": 0,
                    "yaml": str(path)}
    # the same sweep (same key) from a copy with another comment: the first runner's record stays
    copy = tmp_path / "copy" / path.name
    copy.parent.mkdir()
    copy.write_text("# a copy\n" + path.read_text())
    again = load_sweep(copy)
    assert again.key == sweep.key
    prepare_folder(folder, again)
    assert (tmp_path / "runs" / sweep.key / "sweep.yaml").read_text() == path.read_text()


def test_a_folder_without_a_manifest_is_one_clear_error(tmp_path):
    with pytest.raises(LrscanError, match=f"no {MANIFEST} in .*not a sweep folder, or the sweep never started"):
        read_manifest(tmp_path)
