"""History records to columns: each wanted key's value in every record, read from the raw bytes, fast.

History values of the wanted keys are pulled out of all history records at once with byte-level
regular expressions and converted to float64 by NumPy; every record the fast path cannot account
for exactly (a wanted key encoded differently, a non-numeric value, a missing `_step`) is parsed
with the real protobuf class instead, so the fast path can only speed things up, never change a
value. Without wanted keys, every record is parsed (every key whose values are numbers).
"""

from __future__ import annotations

import re

import numpy as np

from lrscan.pipeline.runlog.framing import record_class

STEP_ITEM = "_step"


def join_pieces(pieces: list[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]], keys: list[str]
                 ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The segments' columns end to end, and their NaN marks (keys with any)."""
    if not pieces:
        return decode_history([], keys)[:2]
    if len(pieces) == 1:
        return pieces[0]
    history = {k: np.concatenate([h[k] for h, _ in pieces]) for k in ["step", *keys]}
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
    parts = name.split(b".")
    if len(name) > 127:
        return values, None, np.ones(n, bool)
    label = bytes([len(name)]) + name
    loose_count = blob.count(label)
    # "a.b" logged as a nested dict is written as the parts "a", "b" (nested_key), never as "a.b":
    # records holding that form are parsed with protobuf
    nested = b"".join(b"\x12" + bytes([len(part)]) + part for part in parts) + b"\x82\x01" if len(parts) > 1 else b""
    nested_count = blob.count(nested) if nested else 0
    if loose_count == 0 and nested_count == 0:
        return values, None, np.zeros(n, bool)
    strict = re.compile(rb"\x0a[\x00-\x7f][\x0a\x12]" + re.escape(label) + rb"\x82\x01[\x00-\x7f]([-+.0-9A-Za-z]*)")
    if loose_count == n and nested_count == 0:
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
    if nested_count:
        nested_starts = [m.start() for m in re.finditer(re.escape(nested), blob)]
        bad[np.searchsorted(ends, np.asarray(nested_starts, np.int64), side="right")] = True
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
