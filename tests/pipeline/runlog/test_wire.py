"""pipeline/runlog/wire.py: the run, config, summary and exit records decoded by field number, as wandb's classes do."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
from wandb.proto import wandb_internal_pb2 as pb

from lrscan.pipeline.runlog import wire
from lrscan.pipeline.runlog.reader import RunFile, _apply_record, _update_tree
from tests.support.runfiles import make_run, range_rows, records

REPO = Path(__file__).resolve().parents[3]


def test_the_field_numbers_are_wandbs():
    record = pb.Record.DESCRIPTOR
    oneof = record.oneofs_by_name["record_type"].fields
    assert {f.name: f.number for f in oneof if f.name in ("history", "summary", "config", "run", "exit")} == {
        "history": wire.HISTORY, "summary": wire.SUMMARY, "config": wire.CONFIG, "run": wire.RUN, "exit": wire.EXIT}
    assert {f.number for f in record.fields if f.containing_oneof is None} == wire.RECORD_NOT_ONEOF
    assert all(f.message_type is not None for f in oneof)  # wire.oneof takes only length-delimited members
    run = pb.RunRecord.DESCRIPTOR.fields_by_name
    assert {name: (run[name].number, run[name].type) for name in wire.RUN_STRINGS} == {
        name: (number, run[name].TYPE_STRING) for name, number in wire.RUN_STRINGS.items()}
    assert [run[name].number for name in ("config", "summary", "tags", "start_time")] == [
        wire.RUN_CONFIG, wire.RUN_SUMMARY, wire.RUN_TAGS, wire.RUN_START_TIME]
    for message in (pb.ConfigRecord, pb.SummaryRecord):
        assert [message.DESCRIPTOR.fields_by_name[n].number for n in ("update", "remove")] == [wire.UPDATE, wire.REMOVE]
    for item in (pb.ConfigItem, pb.SummaryItem):
        assert [item.DESCRIPTOR.fields_by_name[n].number for n in ("key", "nested_key", "value_json")] == [
            wire.KEY, wire.NESTED_KEY, wire.VALUE_JSON]
    exit_code = pb.RunExitRecord.DESCRIPTOR.fields_by_name["exit_code"]
    assert (exit_code.number, exit_code.type) == (wire.EXIT_CODE, exit_code.TYPE_INT32)
    start = pb.RunRecord.DESCRIPTOR.fields_by_name["start_time"].message_type
    assert [(start.fields_by_name[n].number, start.fields_by_name[n].type) for n in ("seconds", "nanos")] == [
        (wire.SECONDS, exit_code.TYPE_INT64), (wire.NANOS, exit_code.TYPE_INT32)]


def fold_with_protobuf(payloads: list[bytes]) -> RunFile:
    """What the reader folded in with wandb's classes: the oracle."""
    out = RunFile(path="")

    def update_tree(tree, updates, removes):
        # the reader's own tree update, fed by wandb's classes: what is compared is the decoding
        def paths(items):
            return [([item.key] if item.key else list(item.nested_key), item.value_json) for item in items]

        _update_tree(tree, paths(updates), paths(removes))

    for payload in payloads:
        record = pb.Record()
        try:
            record.ParseFromString(payload)
        except Exception:
            out.skipped_records += 1
            continue
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            out.run_id, out.name, out.project = run.run_id or out.run_id, run.display_name or out.name, \
                run.project or out.project
            out.entity, out.group, out.job_type = run.entity or out.entity, run.run_group or out.group, \
                run.job_type or out.job_type
            out.sweep_id, out.tags = run.sweep_id or out.sweep_id, tuple(run.tags) or out.tags
            if run.HasField("start_time"):
                out.start_time = run.start_time.seconds + run.start_time.nanos * 1e-9
            update_tree(out.config, run.config.update, run.config.remove)
            update_tree(out.summary, run.summary.update, run.summary.remove)
        elif kind == "config":
            update_tree(out.config, record.config.update, record.config.remove)
        elif kind == "summary":
            update_tree(out.summary, record.summary.update, record.summary.remove)
        elif kind == "exit":
            out.exit_code = int(record.exit.exit_code)
        out.config.pop("_wandb", None)
    return out


def fold_with_wire(payloads: list[bytes]) -> RunFile:
    out = RunFile(path="")
    for payload in payloads:
        if not _apply_record(out, payload):
            out.skipped_records += 1
    return out


def assert_same_fold(payloads: list[bytes]) -> None:
    assert dataclasses.asdict(fold_with_wire(payloads)) == dataclasses.asdict(fold_with_protobuf(payloads))


def built_records() -> list[bytes]:
    """Records a wandb file may hold, built with wandb's classes: every field the reader reads, and the edges."""
    run = pb.Record(num=1)
    r = run.run
    r.run_id, r.entity, r.project, r.run_group, r.job_type = "abc123", "me", "lrscan", "grp", "train"
    r.display_name, r.sweep_id, r.notes, r.host = "näme ✓", "sw1", "notes", "host"
    r.tags.extend(["a", "b", "ünï"])
    r.start_time.seconds, r.start_time.nanos = 1_700_000_000, 123_456_789
    r.config.update.add(key="lr", value_json="0.1")
    r.config.update.add(nested_key=["opt", "betas"], value_json="[0.9, 0.95]")
    r.config.update.add(key="_wandb", value_json='{"cli_version": "0.31.0"}')
    r.config.update.add(key="bad", value_json="not json")
    r.config.update.add(key="big", value_json="Infinity")
    r.summary.update.add(key="loss", value_json="2.25")
    config = pb.Record(num=2)
    config.config.update.add(nested_key=["opt", "eps"], value_json="1e-08")
    config.config.update.add(key="lr", value_json="0.2")
    config.config.remove.add(key="bad")
    config.config.remove.add(nested_key=["opt", "missing", "deeper"])
    summary = pb.Record(num=3)
    summary.summary.update.add(key="stop_reason", value_json='"climb"')
    summary.summary.update.add(nested_key=["eval", "dev_loss"], value_json="2.5")
    summary.summary.remove.add(key="loss")
    crashed, negative, empty_start = pb.Record(num=4), pb.Record(num=5), pb.Record(num=6)
    crashed.exit.exit_code = 3
    negative.exit.exit_code = -1  # a ten-byte varint
    empty_start.run.start_time.SetInParent()  # set, and zero
    history = pb.Record(num=7)
    history.history.item.add(key="lr", value_json="0.1")
    control = pb.Record(num=8)
    control.control.local = True  # no oneof member set
    return [x.SerializeToString() for x in (run, config, summary, crashed, negative, empty_start, history, control)]


def test_every_record_folds_as_wandbs_classes_fold_it():
    payloads = built_records()
    assert_same_fold(payloads)
    folded = fold_with_wire(payloads)
    assert folded.config == {"lr": 0.2, "opt": {"betas": [0.9, 0.95], "eps": 1e-8}, "big": float("inf")}
    assert (folded.name, folded.tags, folded.exit_code, folded.start_time) == ("näme ✓", ("a", "b", "ünï"), -1, 0.0)
    assert folded.summary == {"stop_reason": "climb", "eval": {"dev_loss": 2.5}}


def test_protobufs_rules_for_repeats_unknown_fields_and_oneof_members_are_followed():
    run, config = built_records()[:2]
    # field 1001 as a varint, as a fixed32, as a group holding a varint
    unknown = bytes([0xC8, 0x3E, 0x05, 0xCD, 0x3E, 0, 0, 0, 0, 0xCB, 0x3E, 0x08, 0x01, 0xCC, 0x3E])
    again = pb.Record()
    again.run.run_id = "later"
    again.run.tags.append("c")
    wrong_wire = bytes([0x8A, 0x01, 0x02, 0x08, 0x07])  # run (17) holding run_id (1) as a varint: unknown to protobuf
    cases = [
        run + again.SerializeToString(),           # a singular message twice: merged, the last scalar wins
        run + config,                              # two oneof members: the last one set wins
        config + run + config,
        run + unknown,                             # unknown fields: varint, fixed32, a group
        wrong_wire + run,
        run + wrong_wire,
    ]
    for payload in cases:
        assert_same_fold([payload])


def test_a_cut_record_is_skipped_where_wandbs_classes_refuse_it():
    # every prefix of every record: a prefix ending between fields is a smaller message to both, else both refuse it
    for payload in built_records():
        for end in range(len(payload)):
            assert_same_fold([payload[:end]])


def test_bytes_that_are_not_a_message_raise_value_error():
    for junk in (b"\x80", b"\x0a\x05ab", b"\x0b", b"\x0c", b"\x0e", b"\x00", bytes([0xFF] * 11), b"\x0b\x10\x01"):
        with pytest.raises(ValueError):
            wire.fields(junk)


def test_the_records_of_a_real_run_fold_as_wandbs_classes_fold_them(tmp_path):
    path = make_run(tmp_path, range_rows(20), run_id="wire1", name="wired", config={"lr": 0.1, "opt": {"b": [1, 2]}},
                    group="g", tags=["t"], summary={"stop_reason": "climb"}, exit_code=2)
    payloads = [record.SerializeToString() for _, _, record in records(path.read_bytes())
                if record.WhichOneof("record_type") != "history"]
    assert_same_fold(payloads)
    folded = fold_with_wire(payloads)
    assert (folded.run_id, folded.name, folded.group, folded.tags, folded.exit_code) == (
        "wire1", "wired", "g", ("t",), 2)
    assert folded.config["opt"] == {"b": [1, 2]} and folded.summary["stop_reason"] == "climb"


def test_reading_a_run_lrscan_wrote_imports_no_wandb(tmp_path):
    path = make_run(tmp_path, range_rows(50), run_id="nowandb", config={"lr": 0.1}, summary={"stop_reason": "climb"})
    code = ("import sys; from lrscan.pipeline.runlog import read_run_file; "
            f"run = read_run_file({str(path)!r}, ['lr', 'lre', 'loss', 'log10_loss']); "
            "assert len(run.history['step']) == 50 and run.config == {'lr': 0.1} and run.exit_code == 0, run; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('wandb', 'google')))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
