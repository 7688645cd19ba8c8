"""benchmarks/record.py: a benchmark's table with its machine and versions, no date or load, for the docs read it."""

from __future__ import annotations

import sys

import pytest

from tests.conftest import REPO


@pytest.fixture(scope="module")
def record():
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import record
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    return record


def test_render_writes_the_figures_then_where_and_with_what_they_were_measured(record):
    text = record.render("Training", [{"variant": "a", "µs/step": 12.345678, "ratio": "2.1x"},
                                      {"variant": "b|c", "µs/step": 3, "ratio": "1"}],
                         target="a >= 2x b", note="20k steps.", command="python benchmarks/bench_train.py",
                         machine_line="Linux 6.1, x86_64, 2 cores",
                         version_map={"lrscan": "0.1.0", "torch": "2.13.0", "wandb": "0.31.0", "python": "3.11.7"})
    assert text.splitlines() == [
        "### Training", "", "Target: a >= 2x b.", "",
        "| variant | µs/step | ratio |", "|---|---|---|", "| a | 12.35 | 2.1x |", "| b\\|c | 3 | 1 |", "",
        "20k steps.", "",
        "Measured by `python benchmarks/bench_train.py`; machine: Linux 6.1, x86_64, 2 cores; "
        "lrscan 0.1.0, torch 2.13.0, wandb 0.31.0, python 3.11.7.",
    ]


def test_record_replaces_the_table_and_names_this_machine_and_versions(record, tmp_path, capsys):
    path = record.record("demo", "Demo", [{"x": 1}], tables=tmp_path)
    path = record.record("demo", "Demo", [{"x": 2}], tables=tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["demo.md"]  # no temp file left, the last table wins
    text = path.read_text()
    assert "| 2 |" in text and "| 1 |" not in text
    assert f"torch {record.versions()['torch']}" in text and "cores" in text
    assert "UTC" not in text and "load" not in text  # the docs carry no history
    out = capsys.readouterr().out
    assert "table written:" in out and "load average" in out  # said beside the figure, for whoever reports it


def test_a_table_needs_rows(record):
    with pytest.raises(ValueError, match="at least one row"):
        record.markdown_table([])
