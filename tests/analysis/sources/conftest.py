"""Fixtures of the loader's tests: the SPECS runs, written once per module as real offline runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.runfiles import SPECS, make_spec_run


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    for run_id, spec in SPECS.items():
        make_spec_run(root, run_id, spec)
    return root
