"""History records' fields found in the raw bytes with NumPy: where each wanted key's value is in every record.

A history record as wandb writes it is `Record{num, history}`, its `HistoryRecord{item*, step}` and each
`HistoryItem{key | nested_key*, value_json}`; every field but `num` is length-delimited. The records of a
segment are walked in lockstep: one NumPy pass reads one field of every record still being walked, so the
walk takes as many passes as the longest record has fields (a handful), not one Python step per field. A
record the walk cannot account for exactly, field by field (a field it does not know, a length past its
end, a key given twice, a varint written long, a string that is not ASCII), is marked `unread`: the caller
parses those with protobuf, so this can only speed reading up, never change a value.

Strings must be UTF-8 for protobuf to parse a record (proto3). Every byte of 0x80 or more in a record is
accounted for: the walk counts those it read as tags and lengths, and a record holding any other (a name
or value that is not ASCII, valid or not) is left to protobuf, which decides.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

# zero bytes after the last record: every gather below stays inside the buffer, whatever a corrupt length says
PAD_BYTES = 512
VARINT_BYTES = 4  # longer varints (a field over 256 MiB, a step past 2**28) are left to protobuf
MAX_KEY_DOTS = 8  # a key "a.b.c" may be written as any split of its parts: 2**dots spellings are looked for

ITEM_TAG, STEP_TAG = 0x0A, 0x12  # HistoryRecord.item (1), HistoryRecord.step (2), both length-delimited
KEY_TAG, NESTED_TAG = 0x0A, 0x12  # HistoryItem.key (1), HistoryItem.nested_key (2)
VALUE_TAG = (0x82, 0x01)  # HistoryItem.value_json (16): a two-byte tag
_KEEP_BYTES = np.array([(1 << (8 * n)) - 1 for n in range(9)], np.uint64)  # the low n bytes of a uint64


@dataclass
class Located:
    """What the walk found, per record of the segment (records in order, 0..n-1)."""

    # key -> (records, value starts, value ends): the value_json of the key's item in each record that has one
    values: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
    steps: np.ndarray  # HistoryRecord.step.num, -1 where the record has no step field
    unread: np.ndarray  # True: the walk could not account for this record; parse it with protobuf


def padded(records: list[bytes]) -> tuple[bytes, np.ndarray]:
    """The records end to end, with PAD_BYTES zeros after them (for `locate` to read past a corrupt end): as
    bytes, and the same memory as uint8."""
    blob = b"".join([*records, bytes(PAD_BYTES)])
    return blob, np.frombuffer(blob, np.uint8)


def locate(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray, keys: list[str]) -> Located:
    """Each key's value_json span in every history record [starts[i], ends[i]) of `buf` (see `padded`)."""
    n = len(starts)
    unread = np.zeros(n, bool)
    # Record: `08 num` (absent when 0) then `12 LEN HistoryRecord`, the history filling the rest of the record
    has_num = buf[starts] == 0x08
    _, num_bytes = varint(buf, starts + 1)
    num_bytes = np.where(has_num, num_bytes, 0)
    at = starts + np.where(has_num, 1 + num_bytes, 0)
    history_len, len_bytes = varint(buf, at + 1)
    history_start = at + 1 + len_bytes
    ok = (~has_num | (num_bytes > 0)) & (buf[at] == 0x12) & (len_bytes > 0)
    ok &= history_start + history_len == ends
    unread |= ~ok
    # bytes >= 0x80 the walk reads as varints and tags, per record; any other is a non-ASCII string byte
    high = np.maximum(num_bytes - 1, 0) + (len_bytes - 1)
    item_record, item_start, item_end, steps = _history_fields(buf, np.flatnonzero(ok), history_start, ends,
                                                               unread, high)
    name_start, name_end, value_start = _item_layout(buf, item_record, item_start, item_end, unread, high)
    # a record holds at least the high bytes read in it: if the totals agree, every record's count does
    is_high = buf >= 0x80  # the pad after the last record is zeros
    if n and np.count_nonzero(is_high) != high.sum():
        unread |= np.add.reduceat(is_high.view(np.int8), starts, dtype=np.int64) != high
    name_len = name_end - name_start
    # each name as one number: the 8 bytes after its first tag (its length and its start), zeros past its end,
    # read as a little-endian uint64 at any byte (a strided view, no copy); a spelling is then found by one
    # comparison of that and of the length, its bytes past the 8th checked where both agree
    words = np.ndarray((len(buf) - 8,), "<u8", buf, 0, (1,))
    fingerprint = words[name_start + 1] & _KEEP_BYTES[np.clip(name_len - 1, 0, 8)]
    values = {}
    for key in keys:
        spellings = key_spellings(key)
        if spellings is None:  # too many ways to write it: every record to protobuf
            unread[:] = True
            values[key] = (np.zeros(0, np.int64),) * 3
            continue
        hits = []
        for spelling, tag_free in spellings:
            tail = spelling[1:]
            cand = np.flatnonzero((fingerprint == int.from_bytes(tail[:8], "little")) & (name_len == len(spelling)))
            if not tag_free:  # a nested_key split: its first tag is part of it
                cand = cand[buf[name_start[cand]] == spelling[0]]
            if len(tail) > 8:
                rest = buf[name_start[cand, None] + 1 + np.arange(8, len(tail))]  # (candidates, bytes past the 8th)
                cand = cand[(rest == np.frombuffer(tail[8:], np.uint8)).all(1)]
            if len(cand):
                hits.append(cand)
        hit = np.sort(np.concatenate(hits), kind="stable") if len(hits) > 1 else hits[0] if hits else np.zeros(0, int)
        records = item_record[hit]
        # a key twice in one record: protobuf's reading decides which value stands
        twice = np.flatnonzero(np.bincount(records, minlength=n) > 1)
        unread[twice] = True
        values[key] = (records, value_start[hit], item_end[hit])
    return Located(values, steps, unread)


def varint(buf: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The varint at each position: (value, its length in bytes); length 0 where it is longer than VARINT_BYTES
    or written long (a last byte of 0, which protobuf reads but no writer emits)."""
    first = buf[pos].astype(np.int64)
    if not (first >= 0x80).any():  # the usual case: every length under 128, one byte
        return first, np.ones(len(pos), np.int64)
    b = [first, *(buf[pos + i].astype(np.int64) for i in range(1, VARINT_BYTES))]
    value = np.zeros(len(pos), np.int64)
    length = np.zeros(len(pos), np.int64)
    going = np.ones(len(pos), bool)
    for i, byte in enumerate(b):
        value |= np.where(going, (byte & 0x7F) << (7 * i), 0)
        ends_here = going & (byte < 0x80)
        length[ends_here] = i + 1
        if i:
            length[ends_here & (byte == 0)] = 0
        going &= byte >= 0x80
    return value, length


def key_spellings(key: str) -> list[tuple[bytes, bool]] | None:
    """The name fields a HistoryItem may hold for `key`, as bytes, each with whether its first byte (the field's
    tag) is free: `key` whole (field 1, or one nested_key part: either tag), or split into nested_key parts at any
    of its dots. None: more dots than MAX_KEY_DOTS."""
    name = key.encode()
    parts = name.split(b".")
    if len(parts) - 1 > MAX_KEY_DOTS:
        return None
    out = [(bytes([KEY_TAG]) + _varint_bytes(len(name)) + name, True)]
    for cuts in itertools.product((False, True), repeat=len(parts) - 1):
        if not any(cuts):
            continue  # the whole name, above
        pieces, current = [], parts[0]
        for cut, part in zip(cuts, parts[1:]):
            if cut:
                pieces.append(current)
                current = part
            else:
                current += b"." + part
        pieces.append(current)
        out.append((b"".join(bytes([NESTED_TAG]) + _varint_bytes(len(p)) + p for p in pieces), False))
    return out


def _varint_bytes(value: int) -> bytes:
    out = bytearray()
    while True:
        out.append(value & 0x7F | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            return bytes(out)


def _history_fields(buf: np.ndarray, records: np.ndarray, history_start: np.ndarray, ends: np.ndarray,
                    unread: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The HistoryRecord fields of `records`, walked in lockstep: the items (record, body start, body end) and
    each record's step (-1: none). Marks in `unread` the records with a field it does not know; adds to
    `high` the varint bytes it read (>= 0x80)."""
    steps = np.full(len(ends), -1, np.int64)
    step_fields = np.zeros(len(ends), np.int64)
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    at, end_of = history_start[records], ends[records]
    live = at < end_of
    records, at, end_of = records[live], at[live], end_of[live]
    while len(records):
        tag = buf[at]
        length, len_bytes = varint(buf, at + 1)
        body = at + 1 + len_bytes
        end = body + length
        good = (len_bytes > 0) & (end <= end_of) & ((tag == ITEM_TAG) | (tag == STEP_TAG))
        unread[records[~good]] = True
        high[records] += len_bytes - 1  # one field a pass: no record twice in `records`
        item = good & (tag == ITEM_TAG)
        found.append((records[item], body[item], end[item]))
        # HistoryStep{num}: `08 varint` filling the field exactly, or nothing (num 0, protobuf's default)
        step = good & (tag == STEP_TAG)
        step_records, step_body, step_end = records[step], body[step], end[step]
        num, num_bytes = varint(buf, step_body + 1)
        empty = step_body == step_end
        plain = empty | ((buf[step_body] == 0x08) & (num_bytes > 0) & (step_body + 1 + num_bytes == step_end))
        unread[step_records[~plain]] = True
        steps[step_records[plain]] = np.where(empty, 0, num)[plain]
        high[step_records[plain]] += np.where(empty, 0, num_bytes - 1)[plain]
        step_fields[step_records] += 1  # one field a pass: no record twice in step_records
        on = good & (end < end_of)
        records, at, end_of = records[on], end[on], end_of[on]
    unread[step_fields > 1] = True  # two step messages merge: protobuf's reading decides
    if not found:
        return (np.zeros(0, np.int64),) * 3 + (steps,)
    item_record, item_start, item_end = (np.concatenate(col) for col in zip(*found))
    order = np.argsort(item_start, kind="stable")  # items in file order: a record's items in theirs
    return item_record[order], item_start[order], item_end[order], steps


def _item_layout(buf: np.ndarray, item_record: np.ndarray, start: np.ndarray, end: np.ndarray,
                 unread: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each item's name fields [name_start, name_end) and its value_json's start (it ends with the item).

    Nearly every item is `0a|12 LEN name 82 01 LEN value` (one name field, the value last, lengths under 128),
    read in one pass; the others are walked field by field. An item whose name cannot be read off its bytes
    (no value, two values, the value not last, both key and nested_key, an unknown field) marks its record
    unread; its name is left empty (matching no key)."""
    key_len = buf[start + 1].astype(np.int64)
    name_end = start + 2 + key_len
    value_len = buf[name_end + 2].astype(np.int64)
    first = buf[start]
    simple = ((first == KEY_TAG) | (first == NESTED_TAG)) & (key_len < 0x80) & (value_len < 0x80)
    simple &= (buf[name_end] == VALUE_TAG[0]) & (buf[name_end + 1] == VALUE_TAG[1]) & (name_end + 3 + value_len == end)
    value_start = name_end + 3
    high += np.bincount(item_record[simple], minlength=len(high))  # the value's tag, 0x82
    other = np.flatnonzero(~simple)
    if len(other):
        name_end[other], value_start[other], fine, other_high = _walk_items(buf, start[other], end[other])
        high += np.bincount(item_record[other], other_high, minlength=len(high)).astype(np.int64)
        unread[item_record[other[~fine]]] = True
        name_end[other[~fine]] = start[other[~fine]]  # no name: matches no key
    return start, name_end, value_start


def _walk_items(buf: np.ndarray, start: np.ndarray, end: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """HistoryItems walked field by field, in lockstep: (where the value field's tag is, where its value starts,
    whether the item reads exactly as one name and one value last, the bytes >= 0x80 of its tags and lengths)."""
    m = len(start)
    value_tag_at = np.full(m, -1, np.int64)
    value_start = np.zeros(m, np.int64)
    keys, nested, values = (np.zeros(m, np.int64) for _ in range(3))
    fine = np.ones(m, bool)
    high = np.zeros(m, np.int64)
    items = np.flatnonzero(start < end)
    at = start[items]
    while len(items):
        tag = buf[at]
        is_value = (tag == VALUE_TAG[0]) & (buf[at + 1] == VALUE_TAG[1])
        head = np.where(is_value, 2, 1)
        length, len_bytes = varint(buf, at + head)
        body = at + head + len_bytes
        field_end = body + length
        good = (len_bytes > 0) & (field_end <= end[items]) & ((tag == KEY_TAG) | (tag == NESTED_TAG) | is_value)
        good &= values[items] == 0  # nothing may follow the value
        fine[items[~good]] = False
        high[items] += is_value + len_bytes - 1  # one field a pass: no item twice in `items`
        v = items[good & is_value]
        value_tag_at[v], value_start[v] = at[good & is_value], body[good & is_value]
        values[v] += 1
        keys[items[good & (tag == KEY_TAG) & ~is_value]] += 1
        nested[items[good & (tag == NESTED_TAG)]] += 1
        on = good & (field_end < end[items])
        items, at = items[on], field_end[on]
    fine &= (values == 1) & (keys <= 1) & ~((keys > 0) & (nested > 0))
    return value_tag_at, value_start, fine, high
