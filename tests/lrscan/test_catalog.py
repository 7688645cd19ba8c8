"""The shipped sweeps by name: every YAML found, its question read, a copy to edit, bad names refused in one line."""

from __future__ import annotations

import pytest

from lrscan.catalog import export_sweep, shipped_sweeps, sweep_path, yamls_folder
from lrscan.pipeline.errors import LrscanError
from lrscan.pipeline.sweep import load_sweep
from tests.conftest import REPO


def test_every_shipped_yaml_is_listed_with_a_question_and_loads():
    shipped = shipped_sweeps()
    assert sorted(s.name for s in shipped) == sorted(p.stem for p in (REPO / "sweeps").glob("*.yaml"))
    for s in shipped:
        assert s.question and "\n" not in s.question
        assert s.path.parent == yamls_folder() and load_sweep(s.path).name


@pytest.mark.parametrize("name", ["lr_range", "lr_range.yaml"])
def test_a_name_with_or_without_its_suffix(name):
    assert sweep_path(name).name == "lr_range.yaml"


@pytest.mark.parametrize("name", ["", "nope", "../study/yamls/lr_range", "sweeps/lr_range"])
def test_an_unknown_name_names_the_shipped_ones(name):
    with pytest.raises(LrscanError, match="shipped: decay_grid, demo, lr_range"):
        sweep_path(name)


def test_export_copies_and_keeps_what_exists(tmp_path):
    dest = export_sweep("decay_grid", tmp_path / "grid.yaml")
    assert dest.read_text() == sweep_path("decay_grid").read_text()
    dest.write_text("edited")
    with pytest.raises(LrscanError, match="the file exists"):
        export_sweep("decay_grid", dest)
    assert dest.read_text() == "edited"
    assert export_sweep("decay_grid", dest, overwrite=True).read_text() == sweep_path("decay_grid").read_text()
