"""Fixtures of the sweep room's tests."""

import pytest


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run the test inside its own tmp_path: sweeps write `runs/` and read `fake.py` relative to the cwd."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
