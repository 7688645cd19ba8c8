"""`python -m pipeline.study` finds the word list before anything runs: given, cached, downloaded, or one line."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from tests.conftest import REPO

DEAD_URL = "http://127.0.0.1:9/names.txt"  # nothing listens on the discard port: offline, refused at once


def _study(tmp_path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """The study's CLI from an empty folder, as an installed lrscan: its code without a checkout's data/ beside
    it, no $LRSCAN_DATA, its own per-user cache."""
    work, src = tmp_path / "work", tmp_path / "src"
    work.mkdir(exist_ok=True)
    for name in ("lrscan", "pipeline", "analysis"):
        if not (src / name).exists():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    base = {k: v for k, v in os.environ.items() if k not in ("LRSCAN_DATA", "XDG_CACHE_HOME")}
    base |= {"PYTHONPATH": str(src), "HOME": str(tmp_path / "home"), "LRSCAN_DATA_URL": DEAD_URL, **env}
    return subprocess.run([sys.executable, "-m", "lrscan.pipeline.study", "--out=study", *args], cwd=work, env=base,
                          capture_output=True, text=True, timeout=120)


def test_offline_with_no_word_list_says_the_three_ways_and_launches_nothing(tmp_path):
    p = _study(tmp_path)
    assert p.returncode == 2
    assert p.stderr.startswith("lrscan study: error: no word list: ") and p.stderr.count("\n") == 1, p.stderr
    for way in ("--data=PATH", "LRSCAN_DATA=PATH", str(tmp_path / "home" / ".cache" / "lrscan" / "names.txt")):
        assert way in p.stderr
    assert list((tmp_path / "work").iterdir()) == []  # no study folder, no runs


def test_a_given_word_list_that_is_missing_is_one_line(tmp_path):
    p = _study(tmp_path, f"--data={tmp_path / 'nope.txt'}")
    assert p.returncode == 2 and "does not exist" in p.stderr and p.stderr.count("\n") == 1, p.stderr
    assert list((tmp_path / "work").iterdir()) == []
