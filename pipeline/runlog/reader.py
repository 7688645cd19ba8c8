"""One wandb transaction log (`run-<id>.wandb`) read into a `RunFile`: metadata, config, summary, exit, history.

The file is read a segment (4 MiB of whole blocks) at a time: framing.scan splits it into records,
history.decode_history turns the segment's history records into columns, and the few other records
(run, config, summary set by the user, exit) are decoded by field number (wire.py). A partial last block (a run
still being written, flushed every 15 s, or killed) sets `truncated`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lrscan.pipeline.errors import LrscanError
from lrscan.pipeline.runlog import wire
from lrscan.pipeline.runlog.framing import (
    BLOCK_BYTES,
    FULL,
    HEADER,
    LAST,
    Scan,
    chunk_at,
    keep_record,
    scan,
)
from lrscan.pipeline.runlog.history import decode_history, join_pieces

SEGMENT_BYTES = 128 * BLOCK_BYTES  # read and decoded at a time (4 MiB)
# a run without an exit record whose file changed this recently is taken as still running
RUNNING_GRACE_SECONDS = 300.0


@dataclass
class RunFile:
    """Everything read from one run-<id>.wandb file."""

    path: str
    run_id: str = ""
    name: str = ""
    project: str = ""
    entity: str = ""
    group: str = ""
    tags: tuple[str, ...] = ()
    job_type: str = ""
    sweep_id: str = ""
    config: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    exit_code: int | None = None
    state: str = "running"  # 'finished' | 'crashed' | 'running'
    history: dict[str, np.ndarray] = field(default_factory=dict)
    # per key with any: True on the rows that logged it as NaN (or as something not a number), which
    # `history` cannot tell from rows that did not log it (both NaN there); other keys have no entry
    nan_logged: dict[str, np.ndarray] = field(default_factory=dict)
    skipped_records: int = 0
    truncated: bool = False
    start_time: float = 0.0  # seconds since the epoch, from the run record (0 if absent)


def read_run_file(path: str | os.PathLike, keys: Sequence[str] | None = None) -> RunFile:
    """Read one `.wandb` file: run metadata, config, summary, exit and every history step.

    `keys`: the history keys to keep (nested keys as "a.b"). Default: every key whose values are
    all numbers or booleans, except wandb's own `_step`, `_runtime`, `_timestamp` (slower: every
    history record is then parsed with protobuf). `history` holds
    'step' (int64) and one float64 array per kept key, NaN where a row lacks the key or its value
    is not a number; `nan_logged` says which of those NaN were logged (as NaN, or as a value that is
    not a number) rather than not logged at that step. Raises LrscanError if the file cannot be
    opened or is not a wandb log.
    """
    return fold_parts([read_part(path, keys)], keys)


@dataclass
class Part:
    """A stretch of a run file read (`read_part`), its records not yet folded into a RunFile (`fold_parts`)."""

    path: str
    mtime: float
    pieces: list[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]  # decoded history, a segment each
    history_records: list[bytes]  # every history record, when reading every key (decoded once, at the end)
    scan: Scan  # the other records, the damage counted, and a record still open at the stretch's end
    lead: bytes | None = None  # a stretch after a cut: the LAST chunk it starts with, closing the record before


def read_part(path: str | os.PathLike, keys: Sequence[str] | None, start: int = 0, stop: int | None = None) -> Part:
    """The bytes [start, stop) of a run file (whole 32 KiB blocks, `start` a block's first byte: 0, or one of
    `split_points`) split into records, its history decoded. Raises LrscanError as `read_run_file` does."""
    path = os.fspath(path)
    try:
        f = open(path, "rb")
        mtime = os.path.getmtime(path)
        size = os.fstat(f.fileno()).st_size
    except OSError as err:
        raise LrscanError(f"cannot read {path}: {err.strerror or err}") from None
    stop = size if stop is None else min(stop, size)
    wanted = _wanted(keys)
    with f:
        head = f.read(len(HEADER))
        if head != HEADER:
            if head[:4] == HEADER[:4]:
                raise LrscanError(f"{path}: unsupported wandb log version (header {head!r})")
            raise LrscanError(f"{path}: not a wandb run log (no ':W&B' header)")
        # a segment of whole 32 KiB blocks at a time: chunks never cross a block, so only a record
        # split over blocks carries over; what is held is a segment and its decoded columns, never
        # the whole file (a 200k-step run is ~75 MB)
        state = Scan([], [], 0, False)
        pieces: list[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]] = []
        history_records: list[bytes] = []
        offset = start
        f.seek(start)
        while offset < stop:
            data = f.read(min(SEGMENT_BYTES, stop - offset))
            if not data:
                break
            final = offset + len(data) >= size
            state = scan(data, len(HEADER) if offset == 0 else 0, state, final)
            offset += len(data)
            if wanted is None:
                history_records += state.history  # every key: decoded at the end, to know every key's values
            elif state.history:
                history, nan_logged, bad = decode_history(state.history, wanted)
                pieces.append((history, nan_logged))
                state.skipped += bad
            state.history = []
        lead = None
        if start > 0:  # a stretch after a cut (split_points): the LAST chunk it starts with, if it does
            f.seek(start)
            kind, payload = _first_chunk(f.read(BLOCK_BYTES))
            lead = payload if kind == LAST else None
    return Part(path, mtime, pieces, history_records, state, lead)


def split_points(path: str | os.PathLike, n: int, search_blocks: int = 64) -> list[int]:
    """Up to n - 1 offsets that cut a run file into n stretches of about equal size, each read alone
    (`read_part`) and folded together (`fold_parts`) exactly as the whole file reads.

    A cut is at the start of a block whose first chunk, crc-valid, is a whole record or the LAST of one:
    reading the whole file arrives there with nothing carried over but a record left open before it,
    which that chunk closes (a LAST completes it, a whole record closes it as damaged: `fold_parts`
    does the same). The first such block from each n-th of the file, within `search_blocks` blocks;
    none where none is found."""
    path = os.fspath(path)
    cuts: list[int] = []
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            for k in range(1, n):
                block = max(size * k // n // BLOCK_BYTES, 1)
                for at in range(block * BLOCK_BYTES, min(size, (block + search_blocks) * BLOCK_BYTES), BLOCK_BYTES):
                    f.seek(at)
                    if _first_chunk(f.read(BLOCK_BYTES))[0] in (FULL, LAST):
                        if at > (cuts[-1] if cuts else 0):
                            cuts.append(at)
                        break
    except OSError:
        return []  # read as one: the reading says what is wrong
    return cuts


def _first_chunk(block: bytes) -> tuple[int, bytes]:
    """The kind and payload of a block's first chunk; kind 0 unless it is crc-valid and inside the block."""
    return chunk_at(block, 0, len(block))


def fold_parts(parts: list[Part], keys: Sequence[str] | None) -> RunFile:
    """The stretches of one run file, in order (`read_part`), as the RunFile reading it whole gives."""
    wanted = _wanted(keys)
    first = parts[0]
    skipped, pieces, history_records, others = 0, [], [], []
    for i, part in enumerate(parts):
        left_open = parts[i - 1].scan.parts if i else None
        if left_open is not None and part.lead is not None:
            # the record left open at the cut, completed by the LAST chunk after it, in its place between the two
            completed: list[bytes] = []
            skipped += keep_record(b"".join([*left_open, part.lead]), completed, others)
            if wanted is None:
                history_records += completed
            elif completed:
                history, nan_logged, bad = decode_history(completed, wanted)
                pieces.append((history, nan_logged))
                skipped += bad
        elif left_open is not None:
            skipped += 1  # a whole record after the cut closes the open one as damaged, as `scan` counts it
        skipped += part.scan.skipped
        pieces += part.pieces
        history_records += part.history_records
        others += part.scan.others
    last = parts[-1].scan
    out = RunFile(path=first.path, skipped_records=skipped, truncated=last.truncated or last.parts is not None)
    if wanted is None:
        history, nan_logged, bad = decode_history(history_records, None)
        out.skipped_records += bad
    else:
        history, nan_logged = join_pieces(pieces, wanted)
    out.history = history
    out.nan_logged = nan_logged
    for payload in others:
        if not _apply_record(out, payload):
            out.skipped_records += 1
    # the summary of a logged key is its last logged value; values set with run.summary win
    out.summary = {**last_logged(history, nan_logged), **out.summary}
    if out.exit_code is not None:
        out.state = "finished" if out.exit_code == 0 else "crashed"
    elif time.time() - first.mtime < RUNNING_GRACE_SECONDS:
        out.state = "running"
    else:
        out.state = "crashed"
    if not out.run_id:
        out.run_id = _run_id_from_path(first.path)
    if not out.name:
        out.name = out.run_id
    return out


def _wanted(keys: Sequence[str] | None) -> list[str] | None:
    # a user's own `step` key never overwrites W&B's _step (read as 'step')
    return [k for k in dict.fromkeys(keys) if k != "step"] if keys is not None else None


def read_logged(path: str | os.PathLike, keys: Sequence[str] | None, span: tuple[int, int | None] | None = None
                ) -> RunFile | Part | LrscanError:
    """`read_run_file` (or, given a span, `read_part` of it), keeping only the keys some row logged, and the
    error as a value, not raised.

    What a worker process hands back: a key no row logged would cross the process boundary as an
    array of NaN per step (most of a run's bytes when half the keys looked for are absent); its
    readers take a missing key as "not logged". Imports nothing beyond this module, so a worker
    started for it stays small.
    """
    try:
        if span is None:
            run = read_run_file(path, keys)
        else:
            part = read_part(path, keys, *span)
            if keys is not None:  # its segments as one piece, the keys it never logged left out
                history, nan_logged = join_pieces(part.pieces, _wanted(keys))
                part.pieces = [(keep_logged(history, nan_logged), nan_logged)]
            return part
    except LrscanError as err:
        return err
    run.history = keep_logged(run.history, run.nan_logged)
    return run


def keep_logged(history: dict[str, np.ndarray], nan_logged: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """'step' and the keys some row logged (a value, or a NaN logged as such)."""
    return {k: v for k, v in history.items() if k == "step" or k in nan_logged or not np.isnan(v).all()}


def _apply_record(out: RunFile, payload: bytes) -> bool:
    """Fold one run/config/summary/exit record into `out`; False if it does not parse.

    Decoded by field number (wire.py), not with wandb's classes: importing them imports wandb (~0.7 s
    of CPU), and a run file written by lrscan has no other record that needs them."""
    try:
        kind, body = wire.oneof(payload)
        if kind == wire.RUN:
            run = {name: wire.string(body, number) for name, number in wire.RUN_STRINGS.items()}
            tags = wire.strings(body, wire.RUN_TAGS)
            start = wire.message(body, wire.RUN_START_TIME) if wire.has(body, wire.RUN_START_TIME) else None
            updates = [(list(wire.items(m, wire.UPDATE)), list(wire.items(m, wire.REMOVE)))
                       for m in (wire.message(body, wire.RUN_CONFIG), wire.message(body, wire.RUN_SUMMARY))]
            out.run_id = run["run_id"] or out.run_id
            out.name = run["display_name"] or out.name
            out.project = run["project"] or out.project
            out.entity = run["entity"] or out.entity
            out.group = run["run_group"] or out.group
            out.job_type = run["job_type"] or out.job_type
            out.sweep_id = run["sweep_id"] or out.sweep_id
            out.tags = tuple(tags) or out.tags
            if start is not None:
                out.start_time = wire.int64(start, wire.SECONDS) + wire.int32(start, wire.NANOS) * 1e-9
            _update_tree(out.config, *updates[0])
            _update_tree(out.summary, *updates[1])
        elif kind in (wire.CONFIG, wire.SUMMARY):
            update, remove = list(wire.items(body, wire.UPDATE)), list(wire.items(body, wire.REMOVE))
            _update_tree(out.config if kind == wire.CONFIG else out.summary, update, remove)
        elif kind == wire.EXIT:
            out.exit_code = wire.int32(body, wire.EXIT_CODE)
    except ValueError:  # not a Record (UnicodeDecodeError, a string that is not UTF-8, is a ValueError too)
        return False
    out.config.pop("_wandb", None)
    return True


def _update_tree(tree: dict, updates: Iterable[tuple[list[str], str]], removes: Iterable[tuple[list[str], str]]
                 ) -> None:
    for path, value_json in updates:
        if not path or path[0] == "_wandb":
            continue
        node = tree
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[path[-1]] = _json_value(value_json)
    for path, _ in removes:
        node = tree
        for part in path[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and path:
            node.pop(path[-1], None)


def _json_value(raw: str) -> Any:
    try:
        return json.loads(raw)  # accepts NaN and Infinity, as wandb writes them
    except ValueError:
        return raw


def _run_id_from_path(path: str) -> str:
    base = os.path.basename(path)
    if base.startswith("run-") and base.endswith(".wandb"):
        return base[len("run-") : -len(".wandb")]
    return base


def last_logged(history: dict[str, np.ndarray], nan_logged: dict[str, np.ndarray]) -> dict[str, float]:
    """Each history key's last logged value, as W&B's summary holds it: a NaN logged last is the value (a run judged
    on it has diverged, not the older finite value before it), a NaN that only means "not logged at this step"
    is not. `nan_logged`: which NaN were logged (RunFile.nan_logged)."""
    out = {}
    for key, values in history.items():
        if key == "step":
            continue
        present = np.flatnonzero(~np.isnan(values) | nan_logged.get(key, np.zeros(len(values), bool)))
        if len(present):
            out[key] = float(values[present[-1]])
    return out
