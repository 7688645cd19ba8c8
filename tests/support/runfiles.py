"""Real offline wandb runs made for the tests, and a look at their framing (blocks, records).

SPECS: one spec per run; the same data feeds the offline runs (`make_spec_run`) and the cloud fakes.
"""

from __future__ import annotations

import math
import os
import shutil
import struct
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lrscan.pipeline.runlog import BLOCK_BYTES, HEADER, read_run_file

KEYS = ["lr", "lre", "loss", "log10_loss"]


@contextmanager
def quiet_env() -> Iterator[None]:
    """WANDB_SILENT and friends for wandb runs made outside a test's own monkeypatch (module fixtures)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_SILENT", "true")
        mp.setenv("WANDB_MODE", "offline")
        mp.delenv("WANDB_API_KEY", raising=False)
        for var in ("WANDB_RUN_ID", "WANDB_RESUME", "WANDB_SWEEP_ID", "WANDB_SWEEP_PARAM_PATH", "WANDB_RUN_GROUP",
                    "WANDB_TAGS"):
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
    job_type: str | None = "train",
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
    pattern = f"wandb/offline-run-*-{run.id}/run-{run.id}.wandb"
    deadline = time.monotonic() + 60.0
    while not (files := sorted(Path(root).glob(pattern), key=os.path.getmtime)):
        if time.monotonic() > deadline:  # wandb 0.28 creates the file only once wandb-core writes it
            raise TimeoutError(f"{root}: no {pattern} 60 s after finish()")
        time.sleep(0.05)
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


def records(data: bytes) -> list[tuple[int, int, Any]]:
    """(first chunk offset, end of last chunk, wandb's Record) of every record in a .wandb file, via protobuf."""
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
            found.append((first, pos + 7 + length, record))
    return found


def history_records(data: bytes) -> list[tuple[int, int, int]]:
    """(first chunk offset, end of last chunk, step) of every history record, via protobuf."""
    return [(first, end, record.history.step.num) for first, end, record in records(data)
            if record.WhichOneof("record_type") == "history"]


def assert_history_equal(actual: Mapping[str, np.ndarray], rows: Sequence[tuple[int, Mapping[str, Any]]],
                         keys: Sequence[str]) -> None:
    np.testing.assert_array_equal(actual["step"], np.array([s for s, _ in rows], np.int64))
    assert actual["step"].dtype == np.int64
    for key in keys:
        expected = np.array([float(row.get(key, np.nan)) for _, row in rows], np.float64)
        assert actual[key].dtype == np.float64, key
        np.testing.assert_array_equal(actual[key], expected, err_msg=key)


# -- the SPECS runs: one spec per run feeds the offline runs and the cloud fakes ---------------------


def rows_of(lres: Sequence[float], start: int = 0, **extra: Mapping[int, float]) -> list[tuple[int, dict[str, float]]]:
    """Trainer-like rows; `extra={"dev_loss": {2: 1.5}}` adds a key on some steps only."""
    rows = []
    for i, lre in enumerate(lres):
        step = start + i
        loss = 2.0 + 0.25 * i
        row = {"lr": 10.0**lre, "lre": lre, "loss": loss, "log10_loss": math.log10(loss)}
        for key, by_step in extra.items():
            if step in by_step:
                row[key] = by_step[step]
        rows.append((step, row))
    return rows


# one spec per run: the same data feeds the offline runs and the cloud fakes
SPECS: dict[str, dict[str, Any]] = {
    "a1": dict(name="alpha-1", group="A", tags=("x", "y"),
               config={"steps": 5, "schedule": "range", "lre_min": -3.0, "lre_max": 0.0, "decay_steps": [100000],
                       "stop_on_climb": True},
               rows=rows_of([-3.0, -2.25, -1.5, -0.75, 0.0], smooth_loss={0: 2.0, 1: 2.1, 2: 2.2, 3: 2.3, 4: 2.4}),
               summary={"train_loss": 2.5, "final_step": 4}),
    "a2": dict(name="alpha-2", group="A", tags=("x",),
               config={"steps": 3, "schedule": "range", "lre_min": -2.0, "lre_max": 0.5,
                       "decay_steps": [100000, 150000], "stop_on_climb": False},
               rows=rows_of([-2.0, -1.0, 0.5], dev_loss={2: 1.5}),
               summary={"train_loss": 2.0, "final_step": 2, "stop_reason": "climb"}, exit_code=1),
    "b1": dict(name="beta", group="B", tags=("y",), sweep_id="swp1",
               config={"steps": 2, "schedule": "constant", "lr": 0.1},
               rows=rows_of([-1.0, -1.0]), summary={"train_loss": 3.0}),
    "n1": dict(name="notes", group="A", job_type="analysis", config={}, rows=[(0, {"report_seconds": 1.0})]),
}


def make_spec_run(root: Path, run_id: str, spec: Mapping[str, Any]) -> Path:
    return make_run(root / run_id, spec["rows"], run_id=run_id, name=spec["name"], group=spec["group"],
                    tags=spec.get("tags", ()), job_type=spec.get("job_type", "train"), config=spec["config"],
                    summary=spec.get("summary"), exit_code=spec.get("exit_code"), sweep_id=spec.get("sweep_id"))


def copy_runs(runs_dir: Path, dest: Path, *run_ids: str) -> Path:
    for run_id in run_ids:
        shutil.copytree(runs_dir / run_id, dest / run_id, symlinks=True)
    return dest
