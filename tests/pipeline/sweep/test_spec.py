"""Reading a sweep YAML: its key, its points, its checks, and whether it runs lrscan's trainer."""

from __future__ import annotations

import pytest
import yaml

from lrscan.pipeline import keys
from lrscan.pipeline.errors import LrscanError
from lrscan.pipeline.sweep.spec import is_trainer, load_sweep
from tests.pipeline.sweep.fakes import write_sweep


def test_sweep_key_follows_what_runs_not_comments_or_order(tmp_path):
    a = write_sweep(tmp_path, "x: {values: [1, 2]}\ny: {value: 3}\n", name="s")
    key = load_sweep(a).key
    reordered = a.read_text().replace("x: {values: [1, 2]}\ny: {value: 3}", "y: {value: 3}\nx: {values: [1, 2]}")
    a.write_text("# another comment\n" + reordered)
    assert load_sweep(a).key == key and key.startswith("s-")
    a.write_text(a.read_text().replace("[1, 2]", "[1, 2, 3]"))
    assert load_sweep(a).key != key


@pytest.mark.parametrize(("name", "stem"), [("lr_range-2", "lr_range-2"), ("démo", "démo"),
                                            ("lr range v1.2", "lr_range_v1_2"), ("a+b(c)", "a_b_c_"),
                                            ("x" * 50, "x" * 40)])
def test_the_key_holds_only_what_a_run_id_may(tmp_path, name, stem):
    """The key names the runs (`<key>-0003`): dots and spaces of a file's name would make every point fail at
    launch (run_id: letters, digits, - and _), so they become "_"; a name that was a valid key stays as it was."""
    key = load_sweep(write_sweep(tmp_path, "x: {values: [1]}\n", name=name)).key
    assert key.rsplit("-", 1)[0] == stem
    assert key.replace("-", "").replace("_", "").isalnum()


@pytest.mark.parametrize("count", [0, -1])
def test_a_count_below_one_is_refused_not_a_slice(tmp_path, count):
    # `points[:-1]` would quietly drop the last point under the same sweep key (the CLI's side: test_main.py)
    path = write_sweep(tmp_path, "x: {values: [1, 2, 3]}\n")
    with pytest.raises(LrscanError, match=f"count={count}: need at least 1"):
        load_sweep(path, count=count)
    assert len(load_sweep(path, count=2).points) == 2 and len(load_sweep(path, count=9).points) == 3


@pytest.mark.parametrize("command, program, trainer", [
    (["${env}", "python3", "-m", keys.TRAINER_MODULE, "${args}"], "", True),
    (["${env}", "${interpreter}", "${program}", "${args}"], keys.TRAINER_PROGRAM, True),
    (["${env}", "${interpreter}", "${program}", "${args}"], f"./{keys.TRAINER_PROGRAM}", True),
    (["${env}", "python3", "${program}", "${args}"], "fake.py", False),
    (["python3", "-m", "lrscan.pipeline.trainer_of_someone_else"], "", False),
])
def test_a_sweep_of_the_trainer_is_known_by_its_module_or_its_program(tmp_path, command, program, trainer):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"method": "grid", "program": program, "command": command,
                                    "parameters": {"x": {"values": [1]}}}))
    assert is_trainer(load_sweep(path)) is trainer
