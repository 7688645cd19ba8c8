"""pipeline/runlog/items.py (and history.py's use of it): history records read from their bytes exactly as protobuf
reads them, on every layout a writer may use and on damaged records; value tokens read as float() reads them."""

from __future__ import annotations

import random

import numpy as np
import pytest
from wandb.proto import wandb_internal_pb2 as pb

from lrscan.pipeline.runlog import history, items

KEYS = ["lr", "loss", "opt.lr", "a.b.c", "_step", "x" * 200, "损失"]


def record(num: int, fields: list[tuple[str | list[str], str]], step: int | None = None, raw_tail: bytes = b""
           ) -> bytes:
    """A history record built with wandb's own classes: (key or nested_key parts, value_json) per item."""
    out = pb.Record()
    out.num = num
    for name, value in fields:
        item = out.history.item.add()
        if isinstance(name, str):
            item.key = name
        else:
            item.nested_key.extend(name)
        item.value_json = value
    if step is not None:
        out.history.step.num = step
    return out.SerializeToString() + raw_tail


def oracle(records: list[bytes], keys: list[str]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], int]:
    """decode_history's answer computed record by record with wandb's protobuf classes."""
    steps, values, logged, bad = [], {k: [] for k in keys}, {k: [] for k in keys}, 0
    for payload in records:
        parsed = history._parse_history_record(payload)
        if parsed is None:
            bad += 1
            continue
        step, fields = parsed
        steps.append(step)
        for key in keys:
            values[key].append(history._number(fields.get(key)))
            logged[key].append(key in fields)
    out = {"step": np.asarray(steps, np.int64), **{k: np.asarray(v, np.float64) for k, v in values.items()}}
    marks = {k: np.asarray(logged[k], bool) & np.isnan(out[k]) for k in keys}
    return out, {k: m for k, m in marks.items() if m.any()}, bad


def assert_same(records: list[bytes], keys: list[str]) -> None:
    got, got_nan, got_bad = history.decode_history(records, keys)
    want, want_nan, want_bad = oracle(records, keys)
    assert got_bad == want_bad
    assert got.keys() == want.keys() and got_nan.keys() == want_nan.keys()
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
        assert np.array_equal(np.signbit(got[key]), np.signbit(want[key])), key  # -0.0 stays -0.0
    for key in want_nan:
        np.testing.assert_array_equal(got_nan[key], want_nan[key], err_msg=key)


LAYOUTS = [
    [("lr", "0.1"), ("loss", "2.5"), ("_step", "0")],                                # flat keys, as `key`
    [(["lr"], "0.2"), (["loss"], "NaN"), (["_step"], "1")],                         # one nested_key part (wandb-core)
    [(["opt", "lr"], "0.5"), (["loss"], "Infinity")],                               # a dict: nested parts
    [(["opt.lr"], "0.25"), ("opt.lr", "-Infinity")],                                # one part with a dot; then a key
    [(["a", "b", "c"], "1"), (["a.b", "c"], "2")],                                  # two spellings of a.b.c: twice
    [(["a", "b.c"], "3e-5"), ("x" * 200, "7"), ("loss", "-0")],                     # a 2-byte name length; integer -0
    [("lr", "-0.0"), ("loss", '"text"'), ("损失", "1.5")],                          # a string; a non-ASCII key
    [("lr", "true"), ("loss", "false"), ("opt.lr", "null")],
    [("lr", "[1, 2]"), ("loss", "1e999"), ("a.b.c", "01")],                         # not numbers JSON reads
    [("lr", "1."), ("loss", " 1"), ("a.b.c", "1_0")],                               # float() reads them, JSON not
    [("lr", "5e-324"), ("loss", "1.7976931348623157e308"), ("a.b.c", "123456789012345678901234567890")],
    [("lr", "0." + "1" * 140), ("loss", "")],                                       # a 2-byte value length; empty
    [("lr", "0.1"), ("lr", "0.2")],                                                 # a key twice: the last wins
    [("loss", "3"), ("_step", "12")],                                               # no step field: `_step` is the step
    [("loss", "4")],                                                                # neither: not a row
]


@pytest.mark.parametrize("with_step", [True, False])
def test_every_layout_reads_as_protobuf_reads_it(with_step: bool) -> None:
    records = [record(i + 1, fields, step=(i * 10 if with_step else None)) for i, fields in enumerate(LAYOUTS)]
    records.append(record(90, [("lr", "0.3")], step=0))  # step 0: an empty step message
    assert_same(records, KEYS)
    assert_same(records, ["lr"])


def field(tag: int, body: bytes) -> bytes:
    """One length-delimited field (one-byte tag, lengths under 128)."""
    return bytes([tag, len(body)]) + body


def raw_record(num: int, *history_fields: bytes, step: bool = True) -> bytes:
    """A history record written byte by byte (what no writer emits, but protobuf reads); its step is `num`."""
    return b"\x08" + bytes([num]) + field(0x12, b"".join(history_fields) + (field(0x12, b"\x08" + bytes([num])) * step))


LR_ITEM = field(0x0A, field(0x0A, b"lr") + b"\x82\x01" + bytes([3]) + b"0.5")


def test_fields_the_walk_does_not_know_go_to_protobuf() -> None:
    base = [("lr", "0.1"), ("loss", "2.0")]
    control = pb.Record(control=pb.Control(local=True)).SerializeToString()
    value = b"\x82\x01\x011"
    records = [
        record(1, base, step=1, raw_tail=control),                           # a Record field after the history
        record(2, base, step=2, raw_tail=field(0x12, field(0x12, b"\x08\x05"))),  # a second history: merged
        pb.Record(num=4, history=pb.HistoryRecord(step=pb.HistoryStep(num=4))).SerializeToString()[:-1],  # cut
        raw_record(5, field(0x0A, b"\x18\x01" + value)),                       # an unknown field in an item
        raw_record(6, field(0x0A, field(0x0A, b"lr") + b"\x82\x01\x01\xff")),  # invalid UTF-8 in a value
        raw_record(7, field(0x0A, field(0x0A, b"l\xc3r") + value)),             # invalid UTF-8 in a name
        b"\x08\x88\x00" + field(0x12, LR_ITEM + field(0x12, b"\x08\x08")),     # num written long (non-minimal)
        b"\x08\x09" + field(0x1A, LR_ITEM),                                     # a summary, not a history
        raw_record(10, field(0x0A, field(0x12, b"lr") + value + field(0x12, b"x"))),  # a part after the value: lr.x
        raw_record(11, LR_ITEM, field(0x12, b"\x08\x05"), field(0x12, b""), step=False),  # steps merge: 5 stands
        raw_record(12, LR_ITEM, field(0x12, b"\x08\x05"), field(0x12, b"\x08\x07"), step=False),  # the last wins
        raw_record(13, field(0x0A, field(0x0A, b"lr") + value + value)),          # a value twice: the last wins
        raw_record(14, field(0x0A, field(0x0A, b"lr") + field(0x12, b"x") + value)),  # key and nested_key: key
        raw_record(15, field(0x0A, b""), LR_ITEM),                                # an empty item
    ]
    assert_same(records, KEYS)
    rows = history.decode_history(records, KEYS)[0]
    assert rows["step"].tolist() == [1, 5, 5, 8, 10, 5, 7, 13, 14, 15]  # the rest are not records protobuf reads


def test_damaged_records_read_as_protobuf_reads_them() -> None:
    # every way a record's bytes can go wrong (a crc protects them in a file; here nothing does): the walk
    # either reads a record exactly as protobuf does or hands it to protobuf
    rng = random.Random(31)
    good = [record(i, rng.sample(LAYOUTS, 1)[0] + [("_step", str(i))], step=i if i % 3 else None) for i in range(40)]
    for _ in range(40):
        damaged = []
        for payload in good:
            data = bytearray(payload)
            for _ in range(rng.randint(1, 3)):
                at = rng.randrange(len(data))
                what = rng.random()
                if what < 0.5:
                    data[at] = rng.randrange(256)
                elif what < 0.7:
                    data.insert(at, rng.randrange(256))
                elif what < 0.9:
                    del data[at]
                else:
                    del data[at:]
                    if not data:
                        data = bytearray(b"\x08")
            damaged.append(bytes(data))
        assert_same(damaged, KEYS)


def test_the_fast_path_reads_a_plain_run_without_protobuf(monkeypatch: pytest.MonkeyPatch) -> None:
    records = [record(i, [(["lr"], repr(0.1 * i)), (["loss"], repr(2.0 / (i + 1))), (["_step"], str(i)),
                          (["opt", "lr"], "0.5")], step=i) for i in range(500)]
    monkeypatch.setattr(history, "_parse_history_record", lambda payload: pytest.fail("parsed with protobuf"))
    out, _, bad = history.decode_history(records, ["lr", "loss", "opt.lr"])
    assert bad == 0 and out["step"].tolist() == list(range(500))
    np.testing.assert_array_equal(out["lr"], [0.1 * i for i in range(500)])


TOKENS = [
    "0", "-0", "-0.0", "0.0", "1", "-1", "10", "1e5", "1E5", "1e+05", "-2.5e-3", "5e-324", "2.4703282292062327e-324",
    "1.7976931348623157e308", "1.7976931348623159e308", "1e999", "-1e999", "9007199254740993", "18446744073709551617",
    "123456789012345678901234567890", "0.1000000000000000055511151231257827", "NaN", "Infinity", "-Infinity",
    "true", "false", "null", '"1"', "[1]", "{}", "", " 1", "1 ", "+1", ".5", "1.", "01", "-01", "1_0", "0x10",
    "1,2", "1]", "1e", "-", "--1", "nan", "inf", "١",
]


def read_tokens(tokens: list[str]) -> None:
    """`_to_float` of the tokens equals `_number` of each."""
    # laid out as the walk hands them over: each followed by a byte that is not part of it
    pieces, starts, ends, at = [b"\x08"], [], [], 1
    for token in tokens:
        raw = token.encode()
        starts.append(at)
        ends.append(at + len(raw))
        pieces += [raw, b"\x0a"]
        at += len(raw) + 1
    blob, buf = items.padded(pieces)
    got = history._to_float(buf, blob, np.asarray(starts), np.asarray(ends))
    want = np.array([history._number(t.encode()) for t in tokens])
    np.testing.assert_array_equal(got, want)
    assert np.array_equal(np.signbit(got), np.signbit(want))


@pytest.mark.parametrize("seed", range(3))
def test_value_tokens_read_as_float_reads_them(seed: int) -> None:
    rng = random.Random(seed)
    tokens = [rng.choice(TOKENS) if rng.random() < 0.3 else repr(rng.uniform(-1, 1) * 10 ** rng.randint(-300, 300))
              for _ in range(3000)]
    if seed == 0:
        tokens = [t for t in tokens if t in TOKENS or rng.random() < 0.05] + TOKENS  # the odd ones, together
    read_tokens(tokens)


@pytest.mark.parametrize("odd", ["1,2", "3,{}", "4,[5]", "6 7", "8]"])
def test_a_token_that_is_two_json_values_is_read_alone(odd: str) -> None:
    # alone among plain numbers: orjson reads the lot as an array of another length, or refuses it
    read_tokens(["0.5", odd, "-2", "1e3"])


def test_a_key_is_looked_for_in_every_spelling() -> None:
    spellings = {s for s, _ in items.key_spellings("a.b.c")}
    assert spellings == {b"\x0a\x05a.b.c", b"\x12\x01a\x12\x01b\x12\x01c", b"\x12\x03a.b\x12\x01c",
                         b"\x12\x01a\x12\x03b.c"}
    assert items.key_spellings("." * (items.MAX_KEY_DOTS + 1)) is None
