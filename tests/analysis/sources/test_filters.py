"""analysis.sources.filters: which runs load_runs keeps, offline (the cloud twin is in test_cloud.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lrscan.analysis.sources import load_runs
from lrscan.pipeline.errors import LrscanError
from tests.support.runfiles import make_run, rows_of


@pytest.mark.parametrize("filters, expected", [
    ({}, ["a1", "a2", "b1"]),  # every run but lrscan's analysis runs
    ({"job_type": None}, ["a1", "a2", "b1", "n1"]),
    ({"job_type": "train"}, ["a1", "a2", "b1"]),
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
    assert loaded.steps["run_id"].unique().tolist() == [r for r in expected if r != "n1"]  # n1 logged no loss


@pytest.mark.parametrize("job_type", ["analysis", "!train"])
def test_a_job_type_keeps_or_leaves_out_one_type_and_says_so(runs_dir: Path, job_type: str) -> None:
    loaded = load_runs(runs_dir, job_type=job_type, keys=["report_seconds"])
    assert loaded.runs["run_id"].tolist() == ["n1"]
    assert loaded.notes == [f"left out 3 of 4 runs: 3 by job_type{'=' if job_type == 'analysis' else '!='}"
                            f"{job_type.lstrip('!')!r} (their job types: 'train' x3)"]


def test_runs_without_a_job_type_are_read_and_a_filter_says_what_it_left_out(tmp_path: Path) -> None:
    # nearly every W&B user's run has no job type
    for run_id in ("u1", "u2"):
        make_run(tmp_path / run_id, rows_of([-3.0, -2.0, -1.0]), run_id=run_id, job_type=None)
    assert load_runs(tmp_path).runs["run_id"].tolist() == ["u1", "u2"]
    with pytest.raises(LrscanError, match=r"^no runs in .* match job_type='train': left out 2 of 2 runs: 2 by "
                                          r"job_type='train' \(their job types: '' x2\)$"):
        load_runs(tmp_path, job_type="train")


def test_no_run_matches_the_filters(runs_dir: Path) -> None:
    with pytest.raises(LrscanError, match=r"no runs in .* match group='Z', job_type!='analysis': left out 4 of 4 runs: "
                                          r"4 by group='Z'$"):
        load_runs(runs_dir, group="Z")
