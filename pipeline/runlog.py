"""Read one wandb transaction log (`run-<id>.wandb`) into plain Python and NumPy, fast.

Why this is hand-written: wandb 0.30 removed its Python reader (`wandb.sdk.internal.datastore`);
the only reader left is `wandb leet inspect --json`, a Go binary that prints every record as JSON
(12x slower than this module, file to frame, measured by benchmarks/bench_read.py). No maintained package
reads these files into pandas. The format (wandb-core `transactionlog`, checked against real 0.31
files) is:

- a 7-byte header: b":W&B", uint16 LE 0xBEE1, version byte 0;
- leveldb-log framing in 32 KiB blocks: each chunk is a 7-byte `<IHB` header (crc, length, type),
  type 1 FULL, 2 FIRST, 3 MIDDLE, 4 LAST; the crc is the plain (unmasked) `zlib.crc32` of the
  type byte then the payload; a block tail shorter than 7 bytes is zero padding;
- each record is a protobuf `wandb_internal_pb2.Record`.

Speed: a 200k-step run is ~600k records, two thirds of them summary records that only mirror the
history row just logged. The framing loop peeks at the Record's oneof tag in the raw bytes (the
field after `num`) and never parses those mirrors. History values of the wanted keys are pulled out
of all history records at once with byte-level regular expressions and converted to float64 by
NumPy; every record the fast path cannot account for exactly (a wanted key encoded differently, a
non-numeric value, a missing `_step`) is parsed with the real protobuf class instead, so the fast
path can only speed things up, never change a value. Other records (run, config, summary set by the
user, exit) are few and always parsed with protobuf.

Damage is counted, never fatal: a chunk with a bad crc, broken framing or an unparsable record adds
to `skipped_records` and reading goes on; a partial last block (a run still being written, flushed
every 15 s, or killed) sets `truncated`.
"""

from __future__ import annotations

import json
import os
import re
import struct
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.errors import LrscanError

HEADER = b":W&B" + struct.pack("<H", 0xBEE1) + b"\x00"
BLOCK_BYTES = 32 * 1024
SEGMENT_BYTES = 128 * BLOCK_BYTES  # read and decoded at a time (4 MiB)
CHUNK_HEADER = struct.Struct("<IHB")
CHUNK_HEADER_BYTES = CHUNK_HEADER.size
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4

# Record's oneof field numbers (wandb_internal.proto)
HISTORY_FIELD = 2
SUMMARY_FIELD = 3
# Record fields outside the oneof: num, control, uuid, _info. wandb-core (Go) writes the oneof
# field last, so a peek must walk past these.
_NON_ONEOF_FIELDS = frozenset((1, 16, 19, 200))

# Summary records that only mirror a logged history row (`_step` is in them) or the runtime
# (`_wandb.runtime`): wandb writes two per log call. Their content is in the history already.
_MIRROR_MARKS = (b"\x12\x05_step\x82\x01", b"\x12\x06_wandb\x12\x07runtime")

STEP_ITEM = "_step"
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
    path = os.fspath(path)
    try:
        f = open(path, "rb")
        mtime = os.path.getmtime(path)
        size = os.fstat(f.fileno()).st_size
    except OSError as err:
        raise LrscanError(f"cannot read {path}: {err.strerror or err}") from None
    with f:
        head = f.read(len(HEADER))
        if head != HEADER:
            if head[:4] == HEADER[:4]:
                raise LrscanError(f"{path}: unsupported wandb log version (header {head!r})")
            raise LrscanError(f"{path}: not a wandb run log (no ':W&B' header)")
        # a user's own `step` key never overwrites W&B's _step (read as 'step')
        wanted = [k for k in dict.fromkeys(keys) if k != "step"] if keys is not None else None
        # a segment of whole 32 KiB blocks at a time: chunks never cross a block, so only a record
        # split over blocks carries over; what is held is a segment and its decoded columns, never
        # the whole file (a 200k-step run is ~75 MB)
        scan = _Scan([], [], 0, False)
        pieces: list[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]] = []
        history_records: list[bytes] = []
        offset = 0
        f.seek(0)
        while offset < size:
            data = f.read(SEGMENT_BYTES)
            if not data:
                break
            final = offset + len(data) >= size
            scan = _scan(data, len(HEADER) if offset == 0 else 0, scan, final)
            offset += len(data)
            if wanted is None:
                history_records += scan.history  # every key: decoded at the end, to know every key's values
            elif scan.history:
                history, nan_logged, bad = _decode_history(scan.history, wanted)
                pieces.append((history, nan_logged))
                scan.skipped += bad
            scan.history = []
    if scan.parts is not None:
        scan.truncated = True  # the log ends inside a record
    out = RunFile(path=path, skipped_records=scan.skipped, truncated=scan.truncated)
    if wanted is None:
        history, nan_logged, bad = _decode_history(history_records, None)
        out.skipped_records += bad
    else:
        history, nan_logged = _join_pieces(pieces, wanted)
    out.history = history
    out.nan_logged = nan_logged
    for payload in scan.others:
        if not _apply_record(out, payload):
            out.skipped_records += 1
    # the summary of a logged key is its last logged value; values set with run.summary win
    summary = {}
    for key, values in history.items():
        present = np.flatnonzero(~np.isnan(values)) if key != "step" else ()
        if len(present):
            summary[key] = float(values[present[-1]])
    summary.update(out.summary)
    out.summary = summary
    if out.exit_code is not None:
        out.state = "finished" if out.exit_code == 0 else "crashed"
    elif time.time() - mtime < RUNNING_GRACE_SECONDS:
        out.state = "running"
    else:
        out.state = "crashed"
    if not out.run_id:
        out.run_id = _run_id_from_path(path)
    if not out.name:
        out.name = out.run_id
    return out


def read_logged(path: str | os.PathLike, keys: Sequence[str] | None) -> RunFile | LrscanError:
    """`read_run_file`, keeping only the keys some row logged, and the error as a value, not raised.

    What a worker process hands back: a key no row logged would cross the process boundary as an
    array of NaN per step (most of a run's bytes when half the keys looked for are absent); its
    readers take a missing key as "not logged". Imports nothing beyond this module, so a worker
    started for it stays small.
    """
    try:
        run = read_run_file(path, keys)
    except LrscanError as err:
        return err
    run.history = {k: v for k, v in run.history.items() if k == "step" or k in run.nan_logged or not np.isnan(v).all()}
    return run


def read_worker_main() -> None:
    """A reading worker: `python -c "from pipeline.runlog import read_worker_main; read_worker_main()"`.

    Reads a pickled `(out_dir, keys, [(index, path), ...])` from stdin and writes `read_logged(path,
    keys)` of each file, pickled, to `out_dir/<index>.pkl` (written under a temporary name, then
    renamed, so a file there is whole). A fresh interpreter, not a multiprocessing child: it never
    re-runs the caller's main module (a script or notebook without a `__main__` guard works), and
    it imports only this module.
    """
    import pickle
    import sys

    out_dir, keys, jobs = pickle.load(sys.stdin.buffer)
    for index, path in jobs:
        result = read_logged(path, keys)
        target = os.path.join(out_dir, f"{index}.pkl")
        with open(target + ".tmp", "wb") as f:
            pickle.dump(result, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(target + ".tmp", target)


# -- framing ---------------------------------------------------------------------------------


def _join_pieces(pieces: list[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]], keys: list[str]
                 ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The segments' columns end to end, and their NaN marks (keys with any)."""
    if not pieces:
        return _decode_history([], keys)[:2]
    if len(pieces) == 1:
        return pieces[0]
    history = {k: np.concatenate([h[k] for h, _ in pieces]) for k in ["step", *keys]}
    nan_logged = {}
    for key in dict.fromkeys(k for _, marks in pieces for k in marks):
        nan_logged[key] = np.concatenate([marks.get(key, np.zeros(len(h["step"]), bool)) for h, marks in pieces])
    return history, nan_logged


@dataclass
class _Scan:
    history: list[bytes]
    others: list[bytes]
    skipped: int
    truncated: bool
    parts: list[bytes] | None = None  # chunks of a FIRST..LAST record still being assembled


def _scan(data: bytes, pos: int, before: _Scan, final: bool) -> _Scan:
    """Split one segment of the log (whole blocks from a block boundary, or the file's tail) into
    records; keep history records and the records worth parsing. `before`: the scan of the
    segments before it (its records split over the boundary, its counts, its other records).

    One pass in pure Python: the chunk lengths chain, so there is nothing to vectorise. The crc of
    every chunk is checked. After a bad crc the chunk's length may itself be corrupt, so it is
    trusted only if the next chunk header then checks out; otherwise the rest of the block is
    dropped (what leveldb's own reader does).
    """
    unpack = CHUNK_HEADER.unpack_from
    crc32 = zlib.crc32
    type_crcs = [crc32(bytes([t])) for t in range(256)]
    mirror_step, mirror_runtime = _MIRROR_MARKS
    n = len(data)
    history: list[bytes] = []
    others = before.others
    keep_history = history.append
    parts = before.parts
    skipped = before.skipped
    truncated = before.truncated
    while pos < n:
        block_left = BLOCK_BYTES - pos % BLOCK_BYTES
        if block_left < CHUNK_HEADER_BYTES:
            pos += block_left  # zero padding at the block tail
            continue
        if pos + CHUNK_HEADER_BYTES > n:
            truncated = final  # else the header would cross a block: not written so, the rest is junk
            break
        crc, length, kind = unpack(data, pos)
        start = pos + CHUNK_HEADER_BYTES
        end = start + length
        if end > n and final:
            truncated = True
            break
        record = data[start:end]
        if kind == FULL and end - pos <= block_left and crc32(record, type_crcs[1]) == crc:
            pos = end
            if parts is not None:
                skipped += 1  # a FIRST without its LAST
                parts = None
            # the common case, inlined: `num` varint, then the oneof's one-byte tag
            try:
                if record[0] == 0x08:
                    i = 1
                    while record[i] & 0x80:
                        i += 1
                    tag = record[i + 1]
                    if tag == 0x12:
                        keep_history(record)
                        continue
                    if tag == 0x1A:
                        if not (mirror_step in record or mirror_runtime in record):
                            others.append(record)
                        continue
            except IndexError:
                pass  # too short for the fast path; the general peek below decides
        elif kind == 0 and length == 0 and crc == 0:
            # zeros: a preallocated or torn tail of the block; nothing more in it
            pos += block_left
            continue
        elif end - pos > block_left or not FULL < kind <= LAST or crc32(record, type_crcs[kind]) != crc:
            skipped += 1
            parts = None
            pos = _resync(data, pos, end, block_left)
            continue
        else:
            pos = end
            if kind == FIRST:
                if parts is not None:
                    skipped += 1
                parts = [record]
                continue
            if kind == MIDDLE:
                if parts is not None:
                    parts.append(record)
                continue
            # LAST
            if parts is None:
                continue  # the tail of a record whose start was dropped (already counted)
            parts.append(record)
            record = b"".join(parts)
            parts = None
        kind_field = _oneof_field(record)
        if kind_field == HISTORY_FIELD:
            history.append(record)
        elif kind_field == SUMMARY_FIELD:
            if not (mirror_step in record or mirror_runtime in record):
                others.append(record)
        elif kind_field is None:
            skipped += 1
        else:
            others.append(record)
    return _Scan(history, others, skipped, truncated, parts)


def _resync(data: bytes, pos: int, end: int, block_left: int) -> int:
    """Where to go on after a bad chunk at `pos`: past it if what follows is a valid chunk."""
    block_end = pos + block_left
    if end <= block_end:
        if block_end - end < CHUNK_HEADER_BYTES or end == len(data):
            return end
        crc, length, kind = CHUNK_HEADER.unpack_from(data, end)
        start = end + CHUNK_HEADER_BYTES
        if 0 < kind <= LAST and start + length <= min(block_end, len(data)):
            if zlib.crc32(data[start : start + length], zlib.crc32(bytes([kind]))) == crc:
                return end
    return block_end


def _oneof_field(record: bytes) -> int | None:
    """The field number of the Record's oneof (history=2, summary=3, run=17, ...), from the bytes."""
    # fast path: `num` (field 1, varint) then a one-byte tag, as for nearly every record
    if record[:1] == b"\x08":
        i = 1
        while record[i] & 0x80:
            i += 1
        tag = record[i + 1]
        if tag < 0x80 and tag >> 3 not in _NON_ONEOF_FIELDS:
            return tag >> 3
    i, n = 0, len(record)
    try:
        while i < n:
            tag, i = _varint(record, i)
            number, wire = tag >> 3, tag & 7
            if number not in _NON_ONEOF_FIELDS:
                return number
            if wire == 0:
                _, i = _varint(record, i)
            elif wire == 2:
                length, i = _varint(record, i)
                i += length
            elif wire == 1:
                i += 8
            elif wire == 5:
                i += 4
            else:
                return None
    except IndexError:
        return None
    return None


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, i
        shift += 7


# -- records other than history -------------------------------------------------------------


def _record_class():
    # imported late: wandb's protobuf modules take ~0.3 s to import and only a reader needs them
    from wandb.proto import wandb_internal_pb2

    return wandb_internal_pb2.Record


def _apply_record(out: RunFile, payload: bytes) -> bool:
    """Fold one run/config/summary/exit record into `out`; False if it does not parse."""
    record = _record_class()()
    try:
        record.ParseFromString(payload)
    except Exception:  # protobuf's DecodeError differs between its implementations
        return False
    kind = record.WhichOneof("record_type")
    if kind == "run":
        run = record.run
        out.run_id = run.run_id or out.run_id
        out.name = run.display_name or out.name
        out.project = run.project or out.project
        out.entity = run.entity or out.entity
        out.group = run.run_group or out.group
        out.job_type = run.job_type or out.job_type
        out.sweep_id = run.sweep_id or out.sweep_id
        out.tags = tuple(run.tags) or out.tags
        if run.HasField("start_time"):
            out.start_time = run.start_time.seconds + run.start_time.nanos * 1e-9
        _update_tree(out.config, run.config.update, run.config.remove)
        _update_tree(out.summary, run.summary.update, run.summary.remove)
    elif kind == "config":
        _update_tree(out.config, record.config.update, record.config.remove)
    elif kind == "summary":
        _update_tree(out.summary, record.summary.update, record.summary.remove)
    elif kind == "exit":
        out.exit_code = int(record.exit.exit_code)
    out.config.pop("_wandb", None)
    return True


def _update_tree(tree: dict, updates: Iterable[Any], removes: Iterable[Any]) -> None:
    for item in updates:
        path = [item.key] if item.key else list(item.nested_key)
        if not path or path[0] == "_wandb":
            continue
        node = tree
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[path[-1]] = _json_value(item.value_json)
    for item in removes:
        path = [item.key] if item.key else list(item.nested_key)
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


# -- history -------------------------------------------------------------------------------


def _decode_history(records: list[bytes], keys: list[str] | None
                    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], int]:
    """'step' + one float64 array per key, in record order; the rows each key was logged as NaN at
    (keys with any only); and the number of unparsable records."""
    n = len(records)
    if keys is None:
        return _decode_history_slow(records)
    if n == 0:
        return {"step": np.zeros(0, np.int64), **{k: np.zeros(0, np.float64) for k in keys}}, {}, 0
    blob = b"".join(records)
    ends = np.cumsum(np.fromiter(map(len, records), np.int64, n))
    needs_parse = np.zeros(n, bool)
    columns: dict[str, np.ndarray] = {}
    logged: dict[str, np.ndarray | None] = {}
    for key in [STEP_ITEM, *keys]:
        values, found, bad = _fast_key(blob, ends, key)
        columns[key] = values
        logged[key] = found
        needs_parse |= bad
    bad_records = 0
    for i in np.flatnonzero(needs_parse):
        parsed = _parse_history_record(records[i])
        if parsed is None:
            bad_records += 1
            columns[STEP_ITEM][i] = np.nan  # dropped below
            continue
        step, items = parsed
        columns[STEP_ITEM][i] = step
        for key in keys:
            raw = items.get(key)
            columns[key][i] = _number(raw)
            if raw is not None and logged[key] is None:
                logged[key] = np.zeros(n, bool)
            if logged[key] is not None:
                logged[key][i] = raw is not None
    steps = columns.pop(STEP_ITEM)
    keep = ~np.isnan(steps)
    history = {"step": steps[keep].astype(np.int64)}
    nan_logged = {}
    for key in keys:
        history[key] = columns[key][keep]
        found = logged[key]
        if found is not None:
            marks = (found & np.isnan(columns[key]))[keep]
            if marks.any():
                nan_logged[key] = marks
    return history, nan_logged, bad_records


def _fast_key(blob: bytes, ends: np.ndarray, key: str) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """One key's value in each history record, read from the raw bytes; where it was found; where to parse.

    A HistoryItem of a flat key, as wandb writes it, is `0a LEN 12 KLEN key 82 01 VLEN value_json`
    (item, nested_key, value_json; protobuf writers emit fields in number order, and value_json,
    field 16, is the item's last). The strict pattern reads exactly that, taking the value's
    characters while they can belong to a JSON number, NaN, Infinity, true/false/null: any other
    JSON value (a string, list, object) starts with a character outside that set, so the match is
    either the whole value or empty (not a number: NaN). The loose count finds the key's length
    byte and name anywhere (as `key`, as a `nested_key` part, in another encoding); records where
    strict and loose disagree come back flagged for a real protobuf parse. "Found" is None when the
    key is in no record (nothing logged it), else True on the records whose strict match was placed.
    """
    n = len(ends)
    name = key.encode()
    values = np.full(n, np.nan)
    if len(name) > 127:
        return values, None, np.ones(n, bool)
    label = bytes([len(name)]) + name
    loose_count = blob.count(label)
    if loose_count == 0:
        return values, None, np.zeros(n, bool)
    strict = re.compile(rb"\x0a[\x00-\x7f][\x0a\x12]" + re.escape(label) + rb"\x82\x01[\x00-\x7f]([-+.0-9A-Za-z]*)")
    if loose_count == n:
        found = strict.findall(blob)
        if len(found) == n:
            # one item per record (a row is a dict: a key occurs at most once), so match i is record i
            return _to_float(found), np.ones(n, bool), np.zeros(n, bool)
    # general case: place each match in its record by position
    starts, raw = [], []
    for m in strict.finditer(blob):
        starts.append(m.start())
        raw.append(m.group(1))
    loose_starts = [m.start() for m in re.finditer(re.escape(label), blob)]
    strict_rec = np.searchsorted(ends, np.asarray(starts, np.int64), side="right")
    loose_rec = np.searchsorted(ends, np.asarray(loose_starts, np.int64), side="right")
    bad = np.bincount(strict_rec, minlength=n) != np.bincount(loose_rec, minlength=n)
    placed = np.zeros(n, bool)
    if raw:
        values[strict_rec] = _to_float(raw)
        placed[strict_rec] = True
    values[bad] = np.nan
    placed[bad] = False  # the parse decides
    return values, placed, bad


def _to_float(raw: list[bytes]) -> np.ndarray:
    """JSON value tokens to float64: numbers, NaN, Infinity, -Infinity, true/false; else NaN."""
    try:
        # Python's float() reads wandb's tokens directly and rounds correctly; map runs in C
        return np.fromiter(map(float, raw), np.float64, len(raw))
    except ValueError:
        return np.array([_number(v) for v in raw], np.float64)


def _number(raw: str | bytes | None) -> float:
    """A value_json as a float: numbers, NaN/Infinity and booleans; anything else is NaN."""
    if raw is None:
        return np.nan
    try:
        return float(raw)  # parses whole numbers, NaN, Infinity and -Infinity as wandb writes them
    except ValueError:
        if raw in ("true", b"true"):
            return 1.0
        if raw in ("false", b"false"):
            return 0.0
        return np.nan


def _parse_history_record(payload: bytes) -> tuple[int, dict[str, str]] | None:
    """(step, {key: value_json}) of one history record, with protobuf; None if it does not parse."""
    record = _record_class()()
    try:
        record.ParseFromString(payload)
    except Exception:  # protobuf's DecodeError differs between its implementations
        return None
    if record.WhichOneof("record_type") != "history":
        return None
    hist = record.history
    items: dict[str, str] = {}
    for item in hist.item:
        key = item.key or ".".join(item.nested_key)
        items[key] = item.value_json
    if hist.HasField("step"):
        return int(hist.step.num), items
    if STEP_ITEM in items:
        try:
            return int(float(items[STEP_ITEM])), items
        except ValueError:
            return None
    return None


def _decode_history_slow(records: list[bytes]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], int]:
    """Every key whose logged values are all numbers, each record parsed with protobuf."""
    steps: list[int] = []
    rows: list[dict[str, str]] = []
    bad_records = 0
    for payload in records:
        parsed = _parse_history_record(payload)
        if parsed is None:
            bad_records += 1
            continue
        steps.append(parsed[0])
        rows.append(parsed[1])
    keys: dict[str, None] = {}
    for row in rows:
        keys.update(dict.fromkeys(row))
    history = {"step": np.asarray(steps, np.int64)}
    nan_logged = {}
    for key in keys:
        if key.startswith("_") or key == "step":  # a user's own `step` never overwrites W&B's _step
            continue
        column = np.array([_number(row.get(key)) for row in rows], np.float64)
        logged = [row[key] for row in rows if key in row]
        if all(_is_number_token(v) for v in logged):
            history[key] = column
            marks = np.isnan(column) & np.fromiter((key in row for row in rows), bool, len(rows))
            if marks.any():
                nan_logged[key] = marks
    return history, nan_logged, bad_records


def _is_number_token(raw: str) -> bool:
    """Numbers, NaN, Infinity and booleans (read as 1.0 / 0.0)."""
    if raw in ("true", "false"):
        return True
    try:
        float(raw)
    except ValueError:
        return False
    return True


def _run_id_from_path(path: str) -> str:
    base = os.path.basename(path)
    if base.startswith("run-") and base.endswith(".wandb"):
        return base[len("run-") : -len(".wandb")]
    return base
