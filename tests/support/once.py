"""Test inputs slow to make (real library runs), made once per suite run and shared by every xdist worker.

pytest-xdist runs a session fixture once per worker. For inputs that take tens of seconds (the real
Lightning and HF Trainer runs, the user-script runs) that is the worker count times the cost, and
the copies race for the same two cores. xdist's documented recipe: the first worker to ask makes the
input in the run's base folder (the parent of every worker's own temp folder), under a file lock,
and leaves a note of what it made; the others wait on the lock and read the note. A run without
workers makes it in its own temp folder as before.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from filelock import FileLock


def made_once(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, name: str,
              make: Callable[[Path], dict[str, Path]]) -> dict[str, Path]:
    """`make(folder)`'s {key: path}, made by the first worker of this run that asks; the others read it."""
    if not hasattr(request.config, "workerinput"):  # no xdist workers: this process's own temp folder
        return make(tmp_path_factory.mktemp(name))
    root = tmp_path_factory.getbasetemp().parent  # this run's folder, above every worker's popen-gw<i>
    note = root / f"{name}.json"
    with FileLock(root / f"{name}.lock"):
        if not note.is_file():
            folder = root / name
            shutil.rmtree(folder, ignore_errors=True)  # what a worker that failed halfway left
            folder.mkdir()
            made = make(folder)
            note.write_text(json.dumps({key: str(path) for key, path in made.items()}))
    return {key: Path(path) for key, path in json.loads(note.read_text()).items()}
