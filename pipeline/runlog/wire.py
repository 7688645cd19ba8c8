"""Protobuf's wire format read by field number: the run, config, summary and exit records of a run file.

wandb's generated classes (`wandb.proto.wandb_internal_pb2`) come only with the `wandb` package, whose
`__init__` costs ~0.7 s of CPU in every process that imports it (its settings' pydantic models, the
SDK), several times what reading a 200k-step run written by lrscan costs once its history takes the
fast path (history.py). A reader needs four small messages of that schema, so it decodes them here
from the bytes, by the field numbers of wandb_internal.proto; `tests/pipeline/runlog/test_wire.py`
checks every number against wandb's own descriptors and every decoded record against wandb's classes
parsing the same bytes. History records the fast path cannot read are still parsed with wandb's
classes (history.py): there are thousands of them in some runs, and upb parses them faster.

The decoding follows protobuf's rules: the last value of a singular scalar wins, the occurrences of a
singular message merge (their bytes concatenated are the merged message), a field with another wire
type than its declared one and an unknown field are skipped, strings must be UTF-8 (proto3). Bytes
that are not a message raise ValueError.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

VARINT, I64, LEN, START_GROUP, END_GROUP, I32 = 0, 1, 2, 3, 4, 5

# wandb_internal.proto's field numbers
RECORD_NOT_ONEOF = frozenset((1, 16, 19, 200))  # Record's num, control, uuid, _info: every other field is its oneof
HISTORY, SUMMARY, CONFIG, RUN, EXIT = 2, 3, 5, 17, 18  # Record's oneof: history, summary, config, run, exit
# RunRecord's string fields, then its others
RUN_STRINGS = {"run_id": 1, "entity": 2, "project": 3, "run_group": 6, "job_type": 7, "display_name": 8, "sweep_id": 12}
RUN_CONFIG, RUN_SUMMARY, RUN_TAGS, RUN_START_TIME = 4, 5, 10, 17
UPDATE, REMOVE = 1, 2                 # ConfigRecord's and SummaryRecord's update, remove
KEY, NESTED_KEY, VALUE_JSON = 1, 2, 16  # ConfigItem's and SummaryItem's key, nested_key, value_json
EXIT_CODE = 1                         # RunExitRecord's exit_code (int32)
SECONDS, NANOS = 1, 2                 # google.protobuf.Timestamp's seconds (int64), nanos (int32)

Fields = dict[int, list[tuple[int, Any]]]  # field number -> (wire type, value) of each occurrence, in order


def fields(buf: bytes) -> Fields:
    """Every field of one message: ints for varint and fixed-width values, bytes for length-delimited ones."""
    out: Fields = {}
    for number, wire, value in walk(buf):
        if wire != START_GROUP:  # groups are not in wandb's schema: unknown, as protobuf keeps them aside
            out.setdefault(number, []).append((wire, value))
    return out


def oneof(record: bytes) -> tuple[int, Fields]:
    """A Record's oneof field number and that message's fields (0 and {} when it has none)."""
    members = [(number, value) for number, wire, value in walk(record)
               if number not in RECORD_NOT_ONEOF and wire == LEN]  # every member of Record's oneof is a message
    if not members:
        return 0, {}
    # setting a oneof member clears the others: the last member wins, merged over its occurrences since
    number, since = members[-1][0], []
    for other, value in reversed(members):
        if other != number:
            break
        since.append(value)
    return number, fields(b"".join(reversed(since)))


def message(found: Fields, number: int) -> Fields:
    """A singular message field's fields ({} when absent): its occurrences merged."""
    return fields(b"".join(v for wire, v in found.get(number, ()) if wire == LEN))


def has(found: Fields, number: int) -> bool:
    """Whether a singular message field is set (protobuf's HasField)."""
    return any(wire == LEN for wire, _ in found.get(number, ()))


def messages(found: Fields, number: int) -> list[Fields]:
    """A repeated message field's elements."""
    return [fields(v) for wire, v in found.get(number, ()) if wire == LEN]


def string(found: Fields, number: int) -> str:
    values = strings(found, number)
    return values[-1] if values else ""


def strings(found: Fields, number: int) -> list[str]:
    return [v.decode("utf-8") for wire, v in found.get(number, ()) if wire == LEN]


def int64(found: Fields, number: int) -> int:
    values = [v for wire, v in found.get(number, ()) if wire == VARINT]
    return _signed(values[-1], 64) if values else 0


def int32(found: Fields, number: int) -> int:
    return _signed(int64(found, number) & 0xFFFFFFFF, 32)


def items(found: Fields, number: int) -> Iterable[tuple[list[str], str]]:
    """ConfigItem / SummaryItem elements as (key path, value_json): `key`, else its `nested_key` parts."""
    for item in messages(found, number):
        key = string(item, KEY)
        yield ([key] if key else strings(item, NESTED_KEY)), string(item, VALUE_JSON)


def walk(buf: bytes) -> Iterator[tuple[int, int, Any]]:
    """(number, wire type, value) of each field in order, as they are read; a group gives (number, START_GROUP,
    None) and is skipped whole."""
    i, n = 0, len(buf)
    while i < n:
        tag, i = varint(buf, i)
        number, wire = tag >> 3, tag & 7
        value, i = _value(buf, i, number, wire)
        yield number, wire, value


def _value(buf: bytes, i: int, number: int, wire: int) -> tuple[Any, int]:
    """The value of a field whose tag ends before i, and the index past it."""
    n = len(buf)
    if number == 0:
        raise ValueError("field number 0")
    if wire == VARINT:
        return varint(buf, i)
    if wire == LEN:
        length, i = varint(buf, i)
        if i + length > n:
            raise ValueError("a length past the end")
        return buf[i : i + length], i + length
    if wire == I64 or wire == I32:
        width = 8 if wire == I64 else 4
        if i + width > n:
            raise ValueError("a fixed-width value past the end")
        return int.from_bytes(buf[i : i + width], "little"), i + width
    if wire == START_GROUP:
        # past the END_GROUP of the same number, the fields between skipped (nested groups too)
        while i < n:
            tag, i = varint(buf, i)
            inner, inner_wire = tag >> 3, tag & 7
            if inner_wire == END_GROUP:
                if inner != number:
                    raise ValueError("a group's end does not match its start")
                return None, i
            _, i = _value(buf, i, inner, inner_wire)
        raise ValueError("a group without its end")
    raise ValueError(f"wire type {wire}")


def varint(buf: bytes, i: int) -> tuple[int, int]:
    """The varint at i and the index past it (ValueError past the end, or longer than 10 bytes)."""
    value = shift = 0
    for j in range(i, min(i + 10, len(buf))):
        b = buf[j]
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value & 0xFFFFFFFFFFFFFFFF, j + 1
        shift += 7
    raise ValueError("a varint past the end or longer than 10 bytes")


def _signed(value: int, bits: int) -> int:
    return value - (1 << bits) if value >> (bits - 1) else value
