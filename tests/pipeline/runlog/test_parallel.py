"""pipeline.runlog.parallel: files read by worker processes equal files read here; freed arrays return memory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lrscan.pipeline.errors import LrscanError
from lrscan.pipeline.runlog import read_files, read_logged
from tests.support.runfiles import make_run, rows_of

REPO = Path(__file__).resolve().parents[3]
KEYS = ["lr", "lre", "loss", "log10_loss", "dev_loss", "never_logged"]


def test_workers_read_what_this_process_reads(tmp_path: Path) -> None:
    files = [make_run(tmp_path / f"r{i}", rows_of([-3.0 + 0.1 * j for j in range(20 + 10 * i)], dev_loss={5: 1.5}),
                      run_id=f"r{i}", config={"seed": i}) for i in range(3)]
    broken = tmp_path / "run-broken.wandb"
    broken.write_bytes(b"not a wandb file")
    paths = [files[2], broken, files[0], files[1]]
    here = [read_logged(p, KEYS) for p in paths]
    there = read_files(paths, KEYS, workers=2)  # two fresh interpreters, files dealt biggest first
    assert [type(r) for r in there] == [type(r) for r in here]
    assert isinstance(there[1], LrscanError) and "not a wandb run log" in str(there[1])
    for ours, theirs in zip(here, there):
        if isinstance(ours, LrscanError):
            continue
        assert (theirs.run_id, theirs.config, theirs.summary, theirs.state) == (ours.run_id, ours.config, ours.summary,
                                                                                ours.state)
        assert theirs.history.keys() == ours.history.keys() and "never_logged" not in theirs.history
        for key, values in ours.history.items():
            np.testing.assert_array_equal(theirs.history[key], values, err_msg=key)
    assert read_files(paths[:1], KEYS, workers=None)[0].run_id == "r2"  # small files: read here, no worker


RSS_AFTER_FREE = """
import sys
import numpy as np
from lrscan.pipeline.runlog import map_big_arrays_alone
if sys.argv[1] == "on":
    assert map_big_arrays_alone()
first = np.ones(4_000_000)
del first  # glibc now takes arrays up to this size from its heap (its threshold rose to 32 MB)
arrays, pins = [], []
for _ in range(100):
    arrays.append(np.ones(200_000))  # a run's column: 1.6 MB, 160 MB in all
    pins.append(np.ones(10_000))     # something small kept after each, as a run's metadata is
del arrays
with open("/proc/self/status") as f:
    print(next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) // 1024)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator: Linux")
def test_freed_arrays_give_their_memory_back() -> None:
    def rss_mib(setting: str) -> int:
        done = subprocess.run([sys.executable, "-c", RSS_AFTER_FREE, setting], cwd=REPO, capture_output=True,
                              text=True, timeout=120, check=True)
        return int(done.stdout)

    kept, returned = rss_mib("off"), rss_mib("on")
    assert kept - returned > 100, (kept, returned)  # 160 MB freed: kept by the heap without the setting
