"""pipeline.runlog.parallel: files read by worker processes equal files read here; freed arrays return memory."""

from __future__ import annotations

import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from lrscan.pipeline.errors import LrscanError
from lrscan.pipeline.runlog import BLOCK_BYTES, HEADER, read_files, read_logged, read_run_file
from lrscan.pipeline.runlog.reader import _first_chunk, fold_parts, read_part, split_points
from tests.support.runfiles import chunks, make_run, range_rows, records, rows_of

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


@pytest.fixture(scope="module")
def long_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """~25 blocks of 32 KiB: records straddle block ends, so most blocks start with the LAST of one."""
    rows = [(step, {**row, "dev_loss": 1.5} if step % 50 == 0 else row) for step, row in range_rows(2500)]
    return make_run(tmp_path_factory.mktemp("long"), rows, run_id="long2", summary={"train_loss": 1.25})


def assert_same_run(ours, theirs) -> None:
    assert (ours.run_id, ours.config, ours.summary, ours.state, ours.skipped_records, ours.truncated) == (
        theirs.run_id, theirs.config, theirs.summary, theirs.state, theirs.skipped_records, theirs.truncated)
    assert ours.history.keys() == theirs.history.keys() and ours.nan_logged.keys() == theirs.nan_logged.keys()
    for key, values in theirs.history.items():
        np.testing.assert_array_equal(ours.history[key], values, err_msg=key)


def cuttable_blocks(data: bytes) -> dict[int, int]:
    """Block start -> the kind of the chunk that starts it, for the blocks that start with a chunk."""
    return {pos: kind for pos, _, kind in chunks(data) if pos % BLOCK_BYTES == 0}


def reframed(data: bytes, open_first_in: int) -> bytes:
    """The file's records framed anew, none split over blocks (a block's rest zeroed when the next does not fit),
    so that every block starts with a whole record; the block `open_first_in` ends with the FIRST chunk of a
    record whose LAST never comes (a writer killed mid-record, then resumed)."""
    payloads = [r.SerializeToString() for _, _, r in records(data)]
    out = bytearray(HEADER)

    def put(kind: int, payload: bytes) -> None:
        out.extend(struct.pack("<IHB", zlib.crc32(payload, zlib.crc32(bytes([kind]))), len(payload), kind) + payload)

    left_open = False
    for payload in payloads:
        left = BLOCK_BYTES - len(out) % BLOCK_BYTES
        if left < 7 + len(payload):
            if 0 <= open_first_in <= len(out) // BLOCK_BYTES and left > 7 and not left_open:
                put(2, payload[: left - 7])  # the FIRST of a record whose LAST never comes
                left_open = True
            else:
                out.extend(bytes(left))
        put(1, payload)
    assert left_open or open_first_in < 0
    return bytes(out)


@pytest.mark.parametrize("damage", ["none", "first-before-cut", "last-after-cut", "inside", "torn-tail", "reframed",
                                    "reframed-first-left-open"])
def test_a_file_read_in_stretches_folds_to_the_file_read_whole(long_file: Path, tmp_path: Path, damage: str) -> None:
    data = bytearray(long_file.read_bytes())
    if damage.startswith("reframed"):  # every block starts with a whole record: cuts of that kind
        data = bytearray(reframed(bytes(data), open_first_in=10 if damage.endswith("open") else -1))
    kinds = cuttable_blocks(bytes(data))
    # wandb-core splits a record over blocks wherever it falls, so its blocks start with a LAST (now and then a
    # whole record, where a block's end fell within 7 bytes of a record's); reframed, all with whole ones
    assert set(kinds.values()) == {1} if damage.startswith("reframed") else 4 in kinds.values(), kinds
    if damage == "torn-tail":  # a run killed while writing: its last record cut short
        del data[-100:]
    if damage in ("first-before-cut", "last-after-cut", "inside"):
        # a byte flipped in the FIRST chunk a cut leaves open, in the LAST chunk after a cut, or mid-block
        cut = next(pos for pos, kind in kinds.items() if kind == 4 and pos > 8 * BLOCK_BYTES)
        first = max(pos for pos, _, kind in chunks(bytes(data)) if pos < cut)
        data[{"first-before-cut": first + 20, "last-after-cut": cut + 9, "inside": cut + 5000}[damage]] ^= 0x10
    path = tmp_path / "run-long2.wandb"
    path.write_bytes(bytes(data))
    for keys in (KEYS, None):
        whole = read_run_file(path, keys)
        assert whole.skipped_records == (damage not in ("none", "reframed", "torn-tail"))
        assert whole.truncated == (damage == "torn-tail")
        # every cut split_points could make (a crc-valid whole record or LAST first in its block), alone and all at once
        cuts = [pos for pos in kinds if pos and _first_chunk(bytes(data[pos : pos + BLOCK_BYTES]))[0] in (1, 4)]
        assert len(cuts) > 10
        for edges in ([0, cut, len(data)] for cut in (cuts if keys is not None else cuts[::7])):
            parts = [read_part(path, keys, a, b) for a, b in zip(edges, edges[1:])]
            assert_same_run(fold_parts(parts, keys), whole)
        edges = [0, *cuts, len(data)]
        assert_same_run(fold_parts([read_part(path, keys, a, b) for a, b in zip(edges, edges[1:])], keys), whole)


def test_one_big_file_is_read_by_two_processes(long_file: Path) -> None:
    cuts = split_points(long_file, 2)
    assert len(cuts) == 1 and 0.3 < cuts[0] / long_file.stat().st_size < 0.7
    assert len(split_points(long_file, 4)) == 3
    whole = read_logged(long_file, KEYS)
    for workers in (2, 3, 4):  # this process reads the first stretch, workers the others
        assert_same_run(read_files([long_file], KEYS, workers=workers)[0], whole)
    assert "never_logged" not in whole.history and "dev_loss" in whole.history


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
