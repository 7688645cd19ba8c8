"""analysis.wandb_file against real offline wandb runs: every value back, damage counted, never fatal."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from lrscan.pipeline import runlog
from lrscan.pipeline.errors import LrscanError
from lrscan.pipeline.runlog import BLOCK_BYTES, HEADER, read_run_file
from tests.support.runfiles import (
    KEYS,
    assert_history_equal,
    chunks,
    history_records,
    make_run,
    range_rows,
)

SPECIAL_ROWS = [
    (0, {"lr": 1.0, "lre": 0.0, "loss": float("nan"), "log10_loss": float("inf"), "opt": {"lr": 0.5}}),
    (1, {"lr": 0.1 + 0.2, "lre": -1.0, "loss": float("-inf"), "log10_loss": 1e-300, "note": "text", "dev_loss": 2.0}),
    (5, {"lr": 5e-324, "lre": -2.0, "loss": 2.5, "log10_loss": -0.0, "opt": {"lr": 0.25}}),
    (7, {"lr": 1.7976931348623157e308, "lre": -3.0, "loss": 1.0, "log10_loss": 0.0, "flag": True}),
]


@pytest.fixture(scope="module")
def special_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("special"), SPECIAL_ROWS, run_id="special1", name="odd-values",
                    config={"lre_min": -3.0, "steps": 8, "decay_steps": [100000], "opt": {"name": "sgd"}},
                    group="g", tags=["a", "b"], summary={"train_loss": 2.25, "stop_reason": "climb"})


@pytest.fixture(scope="module")
def long_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:
    """~1500 steps: the file spans many 32 KiB blocks, and some records straddle two blocks."""
    rows = range_rows(1500)
    return make_run(tmp_path_factory.mktemp("long"), rows, run_id="long1"), rows


@pytest.fixture(params=[None, 1, 3], ids=["4MiB-segments", "1-block-segments", "3-block-segments"])
def segments(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """The file read a few blocks at a time too: every record split over a segment boundary, damage at one."""
    if request.param is not None:
        monkeypatch.setattr(runlog.reader, "SEGMENT_BYTES", request.param * BLOCK_BYTES)


# -- tests ----------------------------------------------------------------------------------------


def test_every_step_read_back_exactly(long_run: tuple[Path, list], segments: None) -> None:
    path, rows = long_run
    run = read_run_file(path, KEYS)
    assert_history_equal(run.history, rows, KEYS)
    assert (run.skipped_records, run.truncated, run.state, run.exit_code) == (0, False, "finished", 0)
    split = any(kind == 2 for _, _, kind in chunks(path.read_bytes()))
    assert split, "the file should hold a record split over two blocks"


def test_special_values_whole_floats_nested_keys(special_run: Path) -> None:
    run = read_run_file(special_run, [*KEYS, "opt.lr", "dev_loss", "note", "absent"])
    assert_history_equal(run.history, SPECIAL_ROWS, KEYS)
    np.testing.assert_array_equal(run.history["opt.lr"], [0.5, np.nan, 0.25, np.nan])
    np.testing.assert_array_equal(run.history["dev_loss"], [np.nan, 2.0, np.nan, np.nan])
    np.testing.assert_array_equal(run.history["note"], np.full(4, np.nan))  # text is not a number
    np.testing.assert_array_equal(run.history["absent"], np.full(4, np.nan))
    assert np.signbit(run.history["log10_loss"][2])  # -0.0 survives


def test_a_nested_key_is_read_without_a_flat_key_of_its_name(special_run: Path) -> None:
    # {"opt": {"lr": 0.5}} is written as the name parts "opt", "lr": asked for alone, "opt.lr" must
    # still be found (no flat `lr` beside it to send its records to protobuf)
    run = read_run_file(special_run, ["opt.lr"])
    np.testing.assert_array_equal(run.history["opt.lr"], [0.5, np.nan, 0.25, np.nan])
    assert run.history["step"].tolist() == [0, 1, 5, 7] and run.skipped_records == 0
    slow = read_run_file(special_run, None).history["opt.lr"]  # every record through protobuf
    np.testing.assert_array_equal(run.history["opt.lr"], slow)


def test_segments_read_the_same_as_the_whole_file(long_run: tuple[Path, list], monkeypatch: pytest.MonkeyPatch
                                                 ) -> None:
    path, rows = long_run
    whole = read_run_file(path, KEYS)
    monkeypatch.setattr(runlog.reader, "SEGMENT_BYTES", BLOCK_BYTES)
    assert path.stat().st_size > 15 * BLOCK_BYTES
    for keys in (KEYS, None):
        parts = read_run_file(path, keys)
        assert parts.history.keys() == whole.history.keys()
        for key, values in whole.history.items():
            np.testing.assert_array_equal(parts.history[key], values, err_msg=key)
        assert (parts.config, parts.summary, parts.state, parts.skipped_records, parts.truncated) == (
            whole.config, whole.summary, whole.state, whole.skipped_records, whole.truncated)


def test_a_value_logged_as_nan_is_told_from_a_value_not_logged(special_run: Path) -> None:
    # step 0 logged loss NaN; dev_loss was logged at step 1 only; `note` is text: logged, not a number
    for keys in ([*KEYS, "dev_loss", "note", "absent"], None):
        run = read_run_file(special_run, keys)
        np.testing.assert_array_equal(run.nan_logged["loss"], [True, False, False, False])
        assert "dev_loss" not in run.nan_logged and "absent" not in run.nan_logged
        assert "lr" not in run.nan_logged and "log10_loss" not in run.nan_logged  # inf is a number
    assert read_run_file(special_run, ["note"]).nan_logged["note"].tolist() == [False, True, False, False]


def test_default_keys_are_the_numeric_ones(special_run: Path) -> None:
    run = read_run_file(special_run)
    assert set(run.history) == {"step", *KEYS, "opt.lr", "dev_loss", "flag"}
    assert_history_equal(run.history, SPECIAL_ROWS, KEYS)
    np.testing.assert_array_equal(run.history["flag"], [np.nan, np.nan, np.nan, 1.0])


def test_fast_and_protobuf_paths_agree(long_run: tuple[Path, list], special_run: Path) -> None:
    for path in (long_run[0], special_run):
        slow = read_run_file(path)  # every record through protobuf
        fast = read_run_file(path, [k for k in slow.history if k != "step"])
        for key in slow.history:
            np.testing.assert_array_equal(fast.history[key], slow.history[key], err_msg=key)


def test_metadata_config_summary(special_run: Path) -> None:
    run = read_run_file(special_run, KEYS)
    assert (run.run_id, run.name, run.project, run.group, run.tags, run.job_type) == (
        "special1", "odd-values", "lrscan", "g", ("a", "b"), "train")
    assert run.config == {"lre_min": -3, "steps": 8, "decay_steps": [100000], "opt": {"name": "sgd"}}
    assert run.summary["train_loss"] == 2.25 and run.summary["stop_reason"] == "climb"
    assert run.summary["lr"] == 1.7976931348623157e308  # the last logged value of a read key
    assert (run.exit_code, run.state, run.skipped_records, run.truncated) == (0, "finished", 0, False)


def test_nonzero_exit_is_crashed(tmp_path: Path) -> None:
    path = make_run(tmp_path, range_rows(3), exit_code=3)
    run = read_run_file(path, KEYS)
    assert (run.exit_code, run.state) == (3, "crashed")
    assert_history_equal(run.history, range_rows(3), KEYS)


def test_truncated_file_keeps_every_complete_step(long_run: tuple[Path, list], tmp_path: Path, segments: None) -> None:
    path, rows = long_run
    data = path.read_bytes()
    layout = chunks(data)
    records = history_records(data)
    assert [step for _, _, step in records] == [step for step, _ in rows]
    split = next((pos, length) for pos, length, kind in layout if kind == 2)  # a FIRST chunk
    cuts = {
        "inside a chunk header": layout[len(layout) // 2][0] + 3,
        "mid-payload, mid-block": layout[len(layout) // 3][0] + 7 + layout[len(layout) // 3][1] // 2,
        "between the two halves of a record": split[0] + 7 + split[1],  # = a block boundary
        "last byte missing": len(data) - 1,
    }
    for label, cut in cuts.items():
        torn = tmp_path / f"run-torn{cut}.wandb"
        torn.write_bytes(data[:cut])
        run = read_run_file(torn, KEYS)
        n_complete = sum(1 for _, end, _ in records if end <= cut)
        assert run.truncated, label
        assert run.skipped_records == 0, label
        assert_history_equal(run.history, rows[:n_complete], KEYS)
    # a cut exactly after a complete record reads as a shorter, untruncated log
    start, end, _ = records[len(records) // 2]
    clean = tmp_path / "run-clean.wandb"
    clean.write_bytes(data[:end])
    run = read_run_file(clean, KEYS)
    assert not run.truncated and run.exit_code is None and run.state == "running"  # just written
    assert_history_equal(run.history, rows[: len(records) // 2 + 1], KEYS)


def test_bit_flip_in_a_record_skips_only_that_record(long_run: tuple[Path, list], tmp_path: Path,
                                                     segments: None) -> None:
    path, rows = long_run
    data = bytearray(path.read_bytes())
    victim = 700
    data[history_records(bytes(data))[victim][0] + 7 + 12] ^= 0x04
    flipped = tmp_path / "run-flip.wandb"
    flipped.write_bytes(bytes(data))
    run = read_run_file(flipped, KEYS)
    assert run.skipped_records == 1 and not run.truncated
    assert_history_equal(run.history, rows[:victim] + rows[victim + 1 :], KEYS)


@pytest.mark.parametrize("payload", [b"\x08\x01", b"\x08", b"\x08\x01\x82\x01"],
                         ids=["num-alone", "cut-num", "cut-control"])
def test_a_whole_chunk_that_is_not_a_record_is_skipped_not_fatal(long_run: tuple[Path, list], tmp_path: Path,
                                                                 payload: bytes) -> None:
    # a FULL chunk whose crc checks out but whose payload holds no Record's oneof (or is cut inside a field)
    path, rows = long_run
    data = path.read_bytes()
    left = BLOCK_BYTES - len(data) % BLOCK_BYTES
    pad = b"\x00" * left if left < 7 + len(payload) else b""
    chunk = struct.pack("<IHB", zlib.crc32(payload, zlib.crc32(b"\x01")), len(payload), 1) + payload
    odd = tmp_path / "run-odd.wandb"
    odd.write_bytes(data + pad + chunk)
    run = read_run_file(odd, KEYS)
    assert run.skipped_records == 1 and not run.truncated
    assert_history_equal(run.history, rows, KEYS)


def test_bit_flip_in_a_length_drops_at_most_its_block(long_run: tuple[Path, list], tmp_path: Path,
                                                      segments: None) -> None:
    path, rows = long_run
    data = bytearray(path.read_bytes())
    records = history_records(bytes(data))
    victim = records[400][0]
    data[victim + 4] ^= 0x10  # the chunk's length: the framing after it is garbage up to the block's end
    flipped = tmp_path / "run-len.wandb"
    flipped.write_bytes(bytes(data))
    run = read_run_file(flipped, KEYS)
    assert run.skipped_records >= 1 and not run.truncated
    block = (victim // BLOCK_BYTES) * BLOCK_BYTES
    # records with a chunk in the damaged block may be lost; every other one is read, values intact
    at_risk = {step for start, end, step in records if start < block + BLOCK_BYTES and end > block}
    read = set(run.history["step"].tolist())
    assert {step for step, _ in rows} - at_risk <= read
    assert 400 not in read
    assert_history_equal(run.history, [row for row in rows if row[0] in read], KEYS)


@pytest.mark.parametrize("content, message", [
    (b"", "not a wandb run log"),
    (b"hello, this is not a run\n" * 10, "not a wandb run log"),
    (b":W&B\xe1\xbe\x07" + b"\0" * 20, "unsupported wandb log version"),
])
def test_not_a_wandb_file(tmp_path: Path, content: bytes, message: str) -> None:
    junk = tmp_path / "run-junk.wandb"
    junk.write_bytes(content)
    with pytest.raises(LrscanError, match=message):
        read_run_file(junk)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(LrscanError, match="cannot read"):
        read_run_file(tmp_path / "run-nope.wandb")


def test_header_only_file_is_an_empty_running_log(tmp_path: Path) -> None:
    path = tmp_path / "run-fresh.wandb"
    path.write_bytes(HEADER)
    run = read_run_file(path, KEYS)
    assert run.run_id == "fresh" and run.state == "running" and not run.truncated
    assert {k: len(v) for k, v in run.history.items()} == {"step": 0, **{k: 0 for k in KEYS}}


def test_crc_is_zlib_crc32_of_type_then_payload(long_run: tuple[Path, list]) -> None:
    # the format note says so; checked here against what wandb-core wrote
    data = long_run[0].read_bytes()
    for pos, length, kind in chunks(data)[:50]:
        crc = struct.unpack_from("<I", data, pos)[0]
        assert crc == zlib.crc32(bytes([kind]) + data[pos + 7 : pos + 7 + length])


def test_plain_runs_take_the_fast_path(long_run: tuple[Path, list], monkeypatch: pytest.MonkeyPatch) -> None:
    # speed is measured in benchmarks/bench_read.py; here only that no record needs protobuf
    from lrscan.pipeline.runlog import history as wandb_file

    parsed = []
    real = wandb_file._parse_history_record
    monkeypatch.setattr(wandb_file, "_parse_history_record", lambda payload: parsed.append(1) or real(payload))
    run = read_run_file(long_run[0], [*KEYS, "dev_loss"])
    assert parsed == [] and len(run.history["step"]) == 1500


def test_a_bad_chunk_whose_length_ends_just_before_a_torn_tail_is_skipped_not_fatal(tmp_path: Path) -> None:
    # a chunk with a bad crc whose length points 3 bytes short of the file's end: the resync's look at the next
    # header, cut by the end, read past the data (struct.error out of `scan`); the rest of the block is dropped
    payload = b"\x08\x01\x12\x00" + bytes(16)
    bad = struct.pack("<IHB", zlib.crc32(payload, zlib.crc32(b"\x01")) ^ 1, len(payload), 1) + payload
    path = tmp_path / "run-torn.wandb"
    path.write_bytes(HEADER + bad + b"\x01\x02\x03")
    run = read_run_file(path, KEYS)
    assert (run.skipped_records, len(run.history["step"])) == (1, 0)
