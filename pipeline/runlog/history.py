"""History records to columns: each wanted key's value in every record, read from the raw bytes, fast.

The records' fields are found with NumPy (items.py walks every record of a segment at once) and the
values of every wanted key are converted to float64 together, by orjson, in place in the records'
bytes; every record the walk cannot account for exactly (a key written twice, a field it does not know,
a string that is not ASCII, no step) is parsed with the real protobuf class instead, so the fast path
can only speed things up, never change a value. Without wanted keys, every record is parsed (every key
whose values are numbers).
"""

from __future__ import annotations

import numpy as np
import orjson

from lrscan.pipeline.runlog import items
from lrscan.pipeline.runlog.framing import record_class

STEP_ITEM = "_step"


def join_pieces(pieces: list[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]], keys: list[str]
                 ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The segments' columns end to end, and their NaN marks (keys with any)."""
    if not pieces:
        return decode_history([], keys)[:2]
    if len(pieces) == 1:
        return pieces[0]
    # a key a piece lacks (a stretch read apart that never logged it: reader.keep_logged) is NaN there
    history = {k: np.concatenate([h[k] if k in h else np.full(len(h["step"]), np.nan) for h, _ in pieces])
               for k in ["step", *keys]}
    nan_logged = {}
    for key in dict.fromkeys(k for _, marks in pieces for k in marks):
        nan_logged[key] = np.concatenate([marks.get(key, np.zeros(len(h["step"]), bool)) for h, marks in pieces])
    return history, nan_logged


def decode_history(records: list[bytes], keys: list[str] | None
                    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], int]:
    """'step' + one float64 array per key, in record order; the rows each key was logged as NaN at
    (keys with any only); and the number of unparsable records."""
    n = len(records)
    if keys is None:
        return _decode_history_slow(records)
    if n == 0:
        return {"step": np.zeros(0, np.int64), **{k: np.zeros(0, np.float64) for k in keys}}, {}, 0
    blob, buf = items.padded(records)
    lengths = np.fromiter(map(len, records), np.int64, n)
    ends = np.cumsum(lengths)
    found = items.locate(buf, ends - lengths, ends, [STEP_ITEM, *keys])
    unread = found.unread
    spans = {key: [col[~unread[col_records]] for col in (col_records, *rest)]
             for key, (col_records, *rest) in found.values.items()}
    # every value of every key converted in one go (the records' order; which key is which is kept aside)
    numbers = _to_float(buf, blob, np.concatenate([starts for _, starts, _ in spans.values()]),
                        np.concatenate([stops for _, _, stops in spans.values()]))
    columns: dict[str, np.ndarray] = {}
    logged: dict[str, np.ndarray | None] = {}
    at = 0
    for key, (rows, _, _) in spans.items():
        columns[key] = np.full(n, np.nan)
        columns[key][rows] = numbers[at : at + len(rows)]
        at += len(rows)
        logged[key] = None
        if len(rows):
            logged[key] = np.zeros(n, bool)
            logged[key][rows] = True
    # the step: HistoryRecord.step where written, else the `_step` item; a record with neither to protobuf
    steps = np.where(found.steps >= 0, found.steps.astype(np.float64), columns[STEP_ITEM])
    unread |= np.isnan(steps) & (found.steps < 0)
    bad_records = 0
    for i in np.flatnonzero(unread):
        parsed = _parse_history_record(records[i])
        if parsed is None:
            bad_records += 1
            steps[i] = np.nan  # dropped below
            continue
        steps[i], record_items = parsed
        for key in keys:
            raw = record_items.get(key)
            columns[key][i] = _number(raw)
            if raw is not None and logged[key] is None:
                logged[key] = np.zeros(n, bool)
            if logged[key] is not None:
                logged[key][i] = raw is not None
    keep = ~np.isnan(steps)
    history = {"step": steps[keep].astype(np.int64)}
    nan_logged = {}
    for key in keys:
        history[key] = columns[key][keep]
        found_rows = logged[key]
        if found_rows is not None:
            marks = (found_rows & np.isnan(columns[key]))[keep]
            if marks.any():
                nan_logged[key] = marks
    return history, nan_logged, bad_records


def _to_float(buf: np.ndarray, blob: bytes, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """The value_json tokens blob[starts[i]:ends[i]] as float64, as `_number` reads each: JSON numbers,
    NaN, Infinity, -Infinity, true/false; anything else NaN.

    The tokens that look like JSON numbers are parsed all at once by orjson, in place: every other byte of
    the records blanked, a comma after each token (a token is always followed by a byte of the next field or
    record). orjson rounds as float() does (correctly), at a third of its cost a value; float() would be
    most of the reading time. Tokens that are not JSON numbers (NaN, Infinity, true, strings) and the whole
    lot, if orjson refuses it (a token that only looks like a number), go through `_number` one by one."""
    m = len(starts)
    out = np.full(m, np.nan)
    if m == 0:
        return out
    first, second = buf[starts], buf[starts + 1]
    digit0, digit1 = (first >= 0x30) & (first <= 0x39), (second >= 0x30) & (second <= 0x39)
    lengths = ends - starts
    json_number = (lengths > 0) & (digit0 | ((first == 0x2D) & digit1 & (lengths > 1)))
    # "-0" is JSON's integer zero, which has no sign; float("-0") is -0.0
    json_number &= ~((lengths == 2) & (first == 0x2D) & (second == 0x30))
    sel = np.flatnonzero(json_number)
    parsed = _json_numbers(buf, starts[sel], ends[sel])
    if parsed is None:
        sel = np.zeros(0, np.int64)
    else:
        out[sel] = parsed
    rest = np.ones(m, bool)
    rest[sel] = False
    for i in np.flatnonzero(rest):
        out[i] = _number(blob[starts[i] : ends[i]])
    return out


def _json_numbers(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray | None:
    """The tokens parsed as one JSON array of numbers by orjson; None if it is not one (length included)."""
    if len(starts) == 0:
        return np.zeros(0)
    order = np.argsort(starts, kind="stable")
    starts, ends = starts[order], ends[order]
    if (starts[1:] <= ends[:-1]).any():  # tokens sharing bytes: not what the walk hands over
        return None
    size = int(ends[-1]) + 1
    # the blob cut into runs at the tokens' edges, gap, token, gap, ...: every other run is a token
    edges = np.empty(2 * len(starts) + 2, np.int64)
    edges[0], edges[1:-1:2], edges[2:-1:2], edges[-1] = 0, starts, ends, size
    inside = np.repeat(np.arange(len(edges) - 1) % 2 == 1, np.diff(edges))
    text = np.where(inside, buf[:size], np.uint8(0x20))
    text[ends] = 0x2C  # a comma after every token, a bracket after the last
    text[ends[-1]] = 0x5D
    text[0] = 0x5B  # the blob's first byte starts a record (0x08), never a token
    try:
        values = np.array(orjson.loads(text.tobytes()), np.float64)
    except (orjson.JSONDecodeError, TypeError, ValueError):
        return None
    if values.shape != (len(starts),):
        return None
    out = np.empty(len(starts))
    out[order] = values
    return out


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
    record = record_class()()
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
