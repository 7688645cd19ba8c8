"""`lrscan COMMAND`: the one command line dispatches to the modules, runs shipped sweeps by name, fails in one line."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from lrscan import cli
from lrscan.catalog import shipped_sweeps, sweep_path
from tests.conftest import REPO


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = cli.main(list(argv))
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_help_lists_every_command(capsys):
    code, out, _ = run_cli(capsys, "--help")
    assert code == 0
    for name in ("study", "train", "sweep", "analyze"):
        assert f"  {name} " in out
    assert "sweep --list" in out and "--export" in out


@pytest.mark.parametrize(("argv", "fragment"), [
    (["nope"], "lrscan: error: unknown command 'nope' (commands: study, train, sweep, analyze"),
    (["sweep", "no_such_sweep"], "lrscan sweep: error: 'no_such_sweep' is neither a sweep file nor a sweep lrscan "
                                 "ships (shipped: decay_grid, demo, lr_range"),
    (["sweep", "--list", "extra"], "lrscan sweep: error: --list takes nothing else"),
    (["sweep", "lr_range", "--export"], "lrscan sweep: error: --export needs a file name"),
    (["sweep", "--export", "x.yaml"], "lrscan sweep: error: --export FILE takes one shipped sweep's name"),
    (["sweep", "lr_range", "--export", "out.txt"], "a sweep file ends in .yaml"),
    (["sweep", "lr_range", "--export", "no/such/folder/x.yaml"], "no folder no/such/folder"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, tmp_path, monkeypatch, argv, fragment):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and fragment in err, err
    assert list(tmp_path.iterdir()) == [] or all(p.name == "wandb" for p in tmp_path.iterdir())


def test_sweep_list_shows_each_shipped_sweep_with_its_question(capsys):
    code, out, _ = run_cli(capsys, "sweep", "--list")
    assert code == 0
    shipped = shipped_sweeps()
    assert {s.name for s in shipped} >= {"lr_range", "decay_grid", "demo", "lr_range_pairs", "lr_range_random"}
    for s in shipped:
        line = next(line for line in out.splitlines() if line.startswith(s.name + " "))
        assert s.question and s.question in line
    lr_range = next(s for s in shipped if s.name == "lr_range")
    assert lr_range.question.startswith("over which lr exponents does the loss fall fastest")


def test_export_writes_the_shipped_file_to_edit_and_refuses_to_overwrite(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, _ = run_cli(capsys, "sweep", "lr_range", "--export", "mine.yaml")
    assert code == 0 and "wandb sweep mine.yaml" in out
    assert (tmp_path / "mine.yaml").read_text() == sweep_path("lr_range").read_text()
    config = yaml.safe_load((tmp_path / "mine.yaml").read_text())
    assert config["command"][2:4] == ["-m", "lrscan.pipeline.train"]  # what `wandb agent` will launch, installed
    code, _, err = run_cli(capsys, "sweep", "lr_range", "--export=mine.yaml")
    assert code == 2 and "the file exists" in err
    (tmp_path / "into").mkdir()
    assert run_cli(capsys, "sweep", "demo.yaml", "--export", "into")[0] == 0
    assert (tmp_path / "into" / "demo.yaml").is_file()


def test_a_shipped_sweep_runs_by_name_and_a_file_by_path(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, _ = run_cli(capsys, "sweep", "demo", "--dry-run", "--pack", "1")
    assert code == 0 and out.startswith("# demo-") and "-m lrscan.pipeline.train" in out
    assert "--steps=200" in out
    (tmp_path / "demo.yaml").write_text(sweep_path("demo").read_text().replace("value: 200", "value: 123"))
    code, out, _ = run_cli(capsys, "sweep", "demo.yaml", "--dry-run", "--pack", "1")
    assert code == 0 and "--steps=123" in out  # a file of that name here is the user's, not the shipped one


def test_each_command_reaches_its_module(capsys, monkeypatch):
    called = {}
    monkeypatch.setattr(cli, "_module_main", lambda m: (lambda argv: called.setdefault(m, argv) and 0))
    for command in ("study", "train", "analyze", "analyse"):
        assert run_cli(capsys, command, "--x=1")[0] == 0
    assert called == {"lrscan.pipeline.study.__main__": ["--x=1"], "lrscan.pipeline.train.__main__": ["--x=1"],
                      "lrscan.analysis.__main__": ["--x=1"]}


@pytest.mark.slow
@pytest.mark.parametrize("argv", [
    [sys.executable, "-m", "lrscan", "--help"],
    [sys.executable, "-m", "lrscan", "analyze", "--help"],
    [sys.executable, "-m", "lrscan", "study", "--help"],
    # a checkout keeps the names users' YAMLs and habits already say
    [sys.executable, "-m", "pipeline.train", "--help"],
    [sys.executable, "-m", "pipeline.sweep", "--help"],
    [sys.executable, "-m", "pipeline.study", "--help"],
    [sys.executable, "-m", "analysis", "--help"],
])
def test_the_commands_start_as_processes(argv):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "usage" in done.stdout.lower()


NAMED = """name: "démo v2.1 ü"
description: a user's names, with dots, spaces and non-ASCII letters
program: pipeline/train/__main__.py
command: ["${env}", python3, -m, lrscan.pipeline.train, "${args}"]
method: grid
parameters:
  schedule: {value: range}
  steps: {value: 60}
  n_hidden: {value: 8}
  samples: {value: 0}
  wandb_project: {value: PROJECT}
  wandb_name: {value: "lauf ü 1.0"}
  seed: {values: [1]}
"""


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_names_with_dots_spaces_and_non_ascii_run_or_are_refused_before_anything_starts(capsys, tmp_path,
                                                                                      monkeypatch, words_file):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LRSCAN_DATA", str(words_file))
    sweep = tmp_path / "mein sweep v1.2 ü.yaml"
    sweep.write_text(NAMED.replace("PROJECT", "projekt ü.1"))
    code, _, err = run_cli(capsys, "sweep", str(sweep), "--pack", "1", "--no-progress", "--out", "runs")
    assert code == 0, err
    [folder] = (tmp_path / "runs").iterdir()
    assert folder.name.startswith("mein_sweep_v1_2_ü-")  # the key: what a run id may hold
    code, out, err = run_cli(capsys, "analyze", str(folder / "wandb"), "--group", folder.name, "--out", "report",
                             "--n-boot", "0")
    assert code == 0, err
    assert (tmp_path / "report" / "summary.json").is_file()
    # a project name W&B refuses is one line before any point starts, nothing written
    sweep.write_text(NAMED.replace("PROJECT", "team/projekt"))
    code, out, err = run_cli(capsys, "sweep", str(sweep), "--pack", "1", "--no-progress", "--out", "refused")
    assert code == 2 and err.count("\n") == 1 and "wandb_project='team/projekt'" in err, err
    assert not (tmp_path / "refused").exists()
