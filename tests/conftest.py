"""Shared fixtures: tiny word lists made here, quiet offline wandb, the real names.txt where present."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

# One intra-op thread per test process, set before anything imports torch (its OpenMP pool reads this once), and
# inherited by the xdist workers and every process a test starts: the suite runs 4 workers on 2 cores, and torch's
# default (a thread per core) in each has OpenMP threads spin for cores another worker holds. A test about threads
# sets its own; a user's OMP_NUM_THREADS wins.
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parent.parent
SHARED_NAMES = REPO.parent / "shared" / "data" / "names.txt"


SHARED_RUNS = frozenset({"library_runs", "user_runs"})  # tests/analysis/conftest.py: written once, read by many


@pytest.hookimpl(trylast=True)  # after pytest-xdist's own hook, which tags a grouped test's id
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # the tests that read runs written once per `make test` (tests/support/once.py) go to one worker: the others then
    # run other tests instead of waiting on its lock while it writes them
    for item in items:
        for name in SHARED_RUNS.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.xdist_group(name))
    if getattr(config.option, "loadgroup", False):
        keep_xdist_groups(items)


def keep_xdist_groups(items: list[pytest.Item]) -> None:
    """Tag each test marked `xdist_group(name)` with "@name", as pytest-xdist's --dist=loadgroup does, where it did
    not take. xdist 3.8 sets `item._nodeid`, which pytest 9 no longer reads (an item's id is `item._id`): the groups
    were ignored, and a costly module fixture meant to run once (a study, written runs) ran on every worker that
    drew one of its tests (measured: test_study.py's study four times in one `make test`)."""
    try:
        from _pytest.nodeid import NodeId
    except ImportError:  # pytest 8: xdist's own tag works
        return
    for item in items:
        names = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                        for m in item.iter_markers("xdist_group")})
        tag = "@" + "_".join(names)
        if names and not item.nodeid.endswith(tag):
            item._id = NodeId.parse(item.nodeid + tag)


def make_words(n: int = 300, seed: int = 0) -> list[str]:
    """Pronounceable fake names over a-z, so every split sees every letter."""
    rng = random.Random(seed)
    consonants, vowels = "bcdfghjklmnpqrstvwxyz", "aeiou"
    words = ["".join(rng.choice(consonants) + rng.choice(vowels) for _ in range(rng.randint(1, 4))) for _ in range(n)]
    words[:26] = list("abcdefghijklmnopqrstuvwxyz")  # the training split will almost surely hold them all
    return words


@pytest.fixture
def words_file(tmp_path: Path) -> Path:
    path = tmp_path / "words.txt"
    path.write_text("\n".join(make_words()) + "\n")
    return path


@pytest.fixture
def real_names() -> Path:
    if not SHARED_NAMES.is_file():
        pytest.skip("../shared/data/names.txt is not present")
    return SHARED_NAMES


@pytest.fixture(autouse=True)
def quiet_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # every test gets its own WANDB_DIR; nothing reaches the network or the user's ./wandb
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    for var in ("WANDB_RUN_ID", "WANDB_RESUME", "WANDB_SWEEP_ID", "WANDB_SWEEP_PARAM_PATH", "WANDB_RUN_GROUP",
                "WANDB_TAGS"):
        monkeypatch.delenv(var, raising=False)


def train_argv(data: Path, *extra: str) -> list[str]:
    """A small, fast training run: tiny model, few steps."""
    return [f"--data={data}", "--n_embd=2", "--n_hidden=16", "--samples=0", *extra]
