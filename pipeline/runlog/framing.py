"""The framing of a wandb transaction log (`run-<id>.wandb`): its header, blocks and chunks, split into records.

The format (wandb-core `transactionlog`, checked against real 0.31 files) is:

- a 7-byte header: b":W&B", uint16 LE 0xBEE1, version byte 0;
- leveldb-log framing in 32 KiB blocks: each chunk is a 7-byte `<IHB` header (crc, length, type),
  type 1 FULL, 2 FIRST, 3 MIDDLE, 4 LAST; the crc is the plain (unmasked) `zlib.crc32` of the
  type byte then the payload; a block tail shorter than 7 bytes is zero padding;
- each record is a protobuf `wandb_internal_pb2.Record`.

A 200k-step run is ~600k records, two thirds of them summary records that only mirror the history
row just logged: `scan` peeks at the Record's oneof tag in the raw bytes (the field after `num`)
and never parses those mirrors. Damage is counted, never fatal: a chunk with a bad crc or broken
framing adds to `skipped` and the scan goes on.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from lrscan.pipeline.runlog import wire

HEADER = b":W&B" + struct.pack("<H", 0xBEE1) + b"\x00"
BLOCK_BYTES = 32 * 1024
CHUNK_HEADER = struct.Struct("<IHB")
CHUNK_HEADER_BYTES = CHUNK_HEADER.size
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4

# Record's oneof field numbers (wire.py). The fields outside the oneof (num, control, uuid, _info): wandb-core (Go)
# writes the oneof field last, so a peek must walk past these.
HISTORY_FIELD, SUMMARY_FIELD, NOT_ONEOF = wire.HISTORY, wire.SUMMARY, wire.RECORD_NOT_ONEOF

# Summary records that only mirror a logged history row (`_step` is in them) or the runtime
# (`_wandb.runtime`): wandb writes two per log call. Their content is in the history already.
_MIRROR_MARKS = (b"\x12\x05_step\x82\x01", b"\x12\x06_wandb\x12\x07runtime")


@dataclass
class Scan:
    history: list[bytes]
    others: list[bytes]
    skipped: int
    truncated: bool
    parts: list[bytes] | None = None  # chunks of a FIRST..LAST record still being assembled


def scan(data: bytes, pos: int, before: Scan, final: bool) -> Scan:
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
    full_crc = type_crcs[FULL]
    while pos < n:
        block_left = BLOCK_BYTES - pos % BLOCK_BYTES
        if block_left < CHUNK_HEADER_BYTES:
            pos += block_left  # zero padding at the block tail
            continue
        # the common case, as tight as Python allows: whole chunks inside this block, crc-valid, whose
        # record peeks as history or summary (`num` varint, then the oneof's one-byte tag); anything else
        # leaves this loop for the general steps below, which take that chunk afresh
        last_header = pos + block_left - CHUNK_HEADER_BYTES
        whole_by = min(pos + block_left, n)
        if parts is None:
            while pos <= last_header:
                try:
                    crc, length, kind = unpack(data, pos)
                except struct.error:
                    break  # a header cut by the end of the data
                end = pos + CHUNK_HEADER_BYTES + length
                if kind != FULL or end > whole_by:
                    break
                record = data[pos + CHUNK_HEADER_BYTES : end]
                if crc32(record, full_crc) != crc:
                    break
                try:
                    if record[0] != 0x08:
                        break
                    if record[1] < 0x80:
                        tag = record[2]
                    elif record[2] < 0x80:
                        tag = record[3]
                    elif record[3] < 0x80:
                        tag = record[4]
                    else:
                        break
                except IndexError:
                    break
                if tag == 0x12:
                    keep_history(record)
                elif tag == 0x1A:
                    if not (mirror_step in record or mirror_runtime in record):
                        others.append(record)
                else:
                    break
                pos = end
            if pos >= n:
                break
            block_left = BLOCK_BYTES - pos % BLOCK_BYTES
            if block_left < CHUNK_HEADER_BYTES:
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
        skipped += keep_record(record, history, others)
    return Scan(history, others, skipped, truncated, parts)


def keep_record(record: bytes, history: list[bytes], others: list[bytes]) -> int:
    """One whole record to `history`, to `others`, or to nothing (a summary mirroring a row); 1 if it is
    not a record (counted as skipped), else 0."""
    kind_field = _oneof_field(record)
    if kind_field == HISTORY_FIELD:
        history.append(record)
    elif kind_field == SUMMARY_FIELD:
        if not any(mark in record for mark in _MIRROR_MARKS):
            others.append(record)
    elif kind_field is None:
        return 1
    else:
        others.append(record)
    return 0


def _resync(data: bytes, pos: int, end: int, block_left: int) -> int:
    """Where to go on after a bad chunk at `pos`: past it if what follows is a valid chunk."""
    block_end = pos + block_left
    if end <= block_end:
        if block_end - end < CHUNK_HEADER_BYTES or end == len(data):
            return end
        if chunk_at(data, end, min(block_end, len(data)))[0]:
            return end
    return block_end


def chunk_at(data: bytes, pos: int, limit: int) -> tuple[int, bytes]:
    """The kind and payload of the chunk whose header is at `pos`, when it is whole before `limit` and its crc
    checks out; (0, b"") otherwise (a header cut by the end of the data included)."""
    if pos + CHUNK_HEADER_BYTES > limit:
        return 0, b""
    crc, length, kind = CHUNK_HEADER.unpack_from(data, pos)
    start = pos + CHUNK_HEADER_BYTES
    if not FULL <= kind <= LAST or start + length > limit:
        return 0, b""
    payload = data[start : start + length]
    if zlib.crc32(payload, zlib.crc32(bytes([kind]))) != crc:
        return 0, b""
    return kind, payload


def _oneof_field(record: bytes) -> int | None:
    """The field number of the Record's oneof (history=2, summary=3, run=17, ...), from the bytes."""
    try:
        # fast path: `num` (field 1, varint) then a one-byte tag, as for nearly every record
        if record[:1] == b"\x08":
            i = 1
            while record[i] & 0x80:
                i += 1
            tag = record[i + 1]
            if tag < 0x80 and tag >> 3 not in NOT_ONEOF:
                return tag >> 3
    except IndexError:
        pass  # a record of `num` alone, or cut: the walk below says which
    try:
        return next((number for number, _, _ in wire.walk(record) if number not in NOT_ONEOF), None)
    except ValueError:  # not a message
        return None


def record_class():
    # imported late, for the history records the fast path cannot read: importing wandb's classes imports wandb
    # (~0.7 s of CPU), which a run lrscan wrote never needs (wire.py reads its other records)
    from wandb.proto import wandb_internal_pb2

    return wandb_internal_pb2.Record
