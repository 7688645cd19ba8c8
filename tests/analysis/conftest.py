"""Fixtures of the analysis tests: runs logged by other people's code and by real training libraries, made once."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.library_runs import write_library_runs
from tests.support.once import made_once
from tests.support.user_runs import write_user_runs


@pytest.fixture(scope="session")
def user_runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{name: folder} of the user-script runs; each folder holds one offline run and its logged.json."""
    return made_once(request, tmp_path_factory, "user_runs", write_user_runs)


@pytest.fixture(scope="session")
def library_runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{run id: run file} of the runs the real Lightning and HF Trainer wrote (tests/support/library_runs.py)."""
    pytest.importorskip("pytorch_lightning")
    pytest.importorskip("transformers")
    return made_once(request, tmp_path_factory, "library_runs", write_library_runs)
