"""analysis.wandb_file against real offline wandb runs: every value back, damage counted, never fatal."""

from __future__ import annotations

import math
import os
import struct
import time
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pytest

from analysis.wandb_file import BLOCK_BYTES, HEADER, read_run_file
from pipeline.errors import LrscanError

KEYS = ["lr", "lre", "loss", "log10_loss"]


# -- helpers shared with test_sources.py ----------------------------------------------------------


@contextmanager
def quiet_env() -> Iterator[None]:
    """WANDB_SILENT and friends for wandb runs made outside a test's own monkeypatch (module fixtures)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_SILENT", "true")
        mp.setenv("WANDB_MODE", "offline")
        mp.delenv("WANDB_API_KEY", raising=False)
        for var in ("WANDB_RUN_ID", "WANDB_RESUME", "WANDB_SWEEP_ID", "WANDB_SWEEP_PARAM_PATH", "WANDB_RUN_GROUP", "WANDB_TAGS"):
            mp.delenv(var, raising=False)
        yield


def make_run(
    root: Path,
    rows: Sequence[tuple[int, Mapping[str, Any]]],
    *,
    run_id: str | None = None,
    config: Mapping[str, Any] | None = None,
    group: str | None = None,
    tags: Sequence[str] = (),
    job_type: str = "train",
    name: str | None = None,
    summary: Mapping[str, Any] | None = None,
    exit_code: int | None = None,
    resume: bool = False,
    sweep_id: str | None = None,
) -> Path:
    """One real offline run under `root` logging `rows` with explicit steps; returns its .wandb file."""
    import wandb

    # the sweep id as `wandb agent` hands it over (WANDB_SWEEP_ID), as a setting: in-process, wandb
    # reads its environment once
    settings = wandb.Settings(console="off", x_disable_stats=True, **({"sweep_id": sweep_id} if sweep_id else {}))
    with quiet_env():
        run = wandb.init(
            mode="offline", dir=str(root), project="lrscan", id=run_id, resume="allow" if resume else None,
            config=dict(config or {}), group=group, tags=list(tags) or None, job_type=job_type, name=name,
            settings=settings,
        )
        for step, row in rows:
            run.log(dict(row), step=step)
        if summary:
            run.summary.update(dict(summary))
        run.finish(exit_code=exit_code)
    files = sorted(Path(root).glob(f"wandb/offline-run-*-{run.id}/run-{run.id}.wandb"), key=os.path.getmtime)
    wait_until_written(files[-1])
    return files[-1]


def wait_until_written(path: Path, timeout_seconds: float = 60.0) -> None:
    """Wait for the exit record: wandb 0.31's offline finish() can return before wandb-core has
    written the log (the file may still hold just its 7-byte header)."""
    deadline = time.monotonic() + timeout_seconds
    while read_run_file(path, []).exit_code is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path}: no exit record after {timeout_seconds} s")
        time.sleep(0.05)


def range_rows(n_steps: int, start: int = 0) -> list[tuple[int, dict[str, float]]]:
    """Rows like the trainer's: lre on a grid (whole exponents come back from JSON as ints)."""
    rows = []
    for step in range(start, start + n_steps):
        lre = -3.0 + 3.0 * step / 99.0 if step < 100 else float(-(step % 3))
        loss = 3.0 - step * 1e-3 + (step % 7) * 0.0123
        rows.append((step, {"lr": 10.0**lre, "lre": lre, "loss": loss, "log10_loss": math.log10(loss)}))
    return rows


def chunks(data: bytes) -> list[tuple[int, int, int]]:
    """(offset, length, type) of every chunk: an independent walk of the framing, the tests' oracle."""
    out, pos = [], len(HEADER)
    while pos + 7 <= len(data):
        left = BLOCK_BYTES - pos % BLOCK_BYTES
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack_from("<IHB", data, pos)
        out.append((pos, length, kind))
        pos += 7 + length
    return out


def history_records(data: bytes) -> list[tuple[int, int, int]]:
    """(first chunk offset, end of last chunk, step) of every history record, via protobuf."""
    from wandb.proto import wandb_internal_pb2

    found, parts, first = [], [], 0
    for pos, length, kind in chunks(data):
        payload = data[pos + 7 : pos + 7 + length]
        if kind in (1, 2):
            parts, first = [], pos
        parts.append(payload)
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(parts))
            if record.WhichOneof("record_type") == "history":
                found.append((first, pos + 7 + length, record.history.step.num))
    return found


def assert_history_equal(actual: Mapping[str, np.ndarray], rows: Sequence[tuple[int, Mapping[str, Any]]], keys: Sequence[str]) -> None:
    np.testing.assert_array_equal(actual["step"], np.array([s for s, _ in rows], np.int64))
    assert actual["step"].dtype == np.int64
    for key in keys:
        expected = np.array([float(row.get(key, np.nan)) for _, row in rows], np.float64)
        assert actual[key].dtype == np.float64, key
        np.testing.assert_array_equal(actual[key], expected, err_msg=key)


# -- fixtures -------------------------------------------------------------------------------------


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


# -- tests ----------------------------------------------------------------------------------------


def test_every_step_read_back_exactly(long_run: tuple[Path, list]) -> None:
    path, rows = long_run
    run = read_run_file(path, KEYS)
    assert_history_equal(run.history, rows, KEYS)
    assert (run.skipped_records, run.truncated, run.state, run.exit_code) == (0, False, "finished", 0)
    assert any(kind == 2 for _, _, kind in chunks(path.read_bytes())), "the file should hold a record split over two blocks"


def test_special_values_whole_floats_nested_keys(special_run: Path) -> None:
    run = read_run_file(special_run, [*KEYS, "opt.lr", "dev_loss", "note", "absent"])
    assert_history_equal(run.history, SPECIAL_ROWS, KEYS)
    np.testing.assert_array_equal(run.history["opt.lr"], [0.5, np.nan, 0.25, np.nan])
    np.testing.assert_array_equal(run.history["dev_loss"], [np.nan, 2.0, np.nan, np.nan])
    np.testing.assert_array_equal(run.history["note"], np.full(4, np.nan))  # text is not a number
    np.testing.assert_array_equal(run.history["absent"], np.full(4, np.nan))
    assert np.signbit(run.history["log10_loss"][2])  # -0.0 survives


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


def test_truncated_file_keeps_every_complete_step(long_run: tuple[Path, list], tmp_path: Path) -> None:
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


def test_bit_flip_in_a_record_skips_only_that_record(long_run: tuple[Path, list], tmp_path: Path) -> None:
    path, rows = long_run
    data = bytearray(path.read_bytes())
    victim = 700
    data[history_records(bytes(data))[victim][0] + 7 + 12] ^= 0x04
    flipped = tmp_path / "run-flip.wandb"
    flipped.write_bytes(bytes(data))
    run = read_run_file(flipped, KEYS)
    assert run.skipped_records == 1 and not run.truncated
    assert_history_equal(run.history, rows[:victim] + rows[victim + 1 :], KEYS)


def test_bit_flip_in_a_length_drops_at_most_its_block(long_run: tuple[Path, list], tmp_path: Path) -> None:
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
    from analysis import wandb_file

    parsed = []
    real = wandb_file._parse_history_record
    monkeypatch.setattr(wandb_file, "_parse_history_record", lambda payload: parsed.append(1) or real(payload))
    run = read_run_file(long_run[0], [*KEYS, "dev_loss"])
    assert parsed == [] and len(run.history["step"]) == 1500
