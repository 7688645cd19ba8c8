"""`python -m pipeline.sweep`: its flags, its dry run, and bad input as one line with exit 2 and nothing written."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib

import pytest

from lrscan.pipeline.sweep.__main__ import main
from lrscan.pipeline.sweep.spec import load_sweep
from tests.conftest import REPO
from tests.pipeline.sweep.fakes import FAKE, write_sweep


def test_dry_run_prints_commands_in_wandb_order_and_writes_nothing(in_tmp, capsys):
    path = write_sweep(in_tmp, """\
        lre_min: {values: [-3.0, -2.0]}
        seed: {values: [1, 2]}
        """)
    sweep = load_sweep(path)
    main([str(path), "--dry-run"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"# {sweep.key}: 4 points, method grid")
    py = "python3"
    assert lines[1:] == [
        f"[0] {sweep.key}-0000: /usr/bin/env {py} fake.py --lre_min=-3.0 --seed=1",
        f"[1] {sweep.key}-0001: /usr/bin/env {py} fake.py --lre_min=-3.0 --seed=2",
        f"[2] {sweep.key}-0002: /usr/bin/env {py} fake.py --lre_min=-2.0 --seed=1",
        f"[3] {sweep.key}-0003: /usr/bin/env {py} fake.py --lre_min=-2.0 --seed=2",
    ]
    assert sorted(p.name for p in in_tmp.iterdir()) == ["fake.py", "fake.yaml"]


TRAINER = ("method: grid\nprogram: pipeline/train/__main__.py\n"
           "command: [python3, -m, lrscan.pipeline.train, '${args}']\n")


@pytest.mark.parametrize("body, message", [
    ("method: grid\nparameters: {x: {values: [1, 2]\n", "not valid YAML at line 3"),
    (TRAINER + "parameters: {lre_minn: {values: [-3.0]}}\n", "unknown config key 'lre_minn'"),
    (TRAINER + "parameters: {steps: {values: [10, ten]}}\n", "point 1 .*--steps='ten': expected int"),
    (TRAINER + "parameters: {lre_min: {values: [1.0]}, lre_max: {value: 0.0}}\n", "lre_min=1.0 > lre_max=0.0"),
    ("method: grid\nprogram: fake.py\nparameters: {x: {values: []}}\n", "empty grid"),
    ("method: grid\nprogram: fake.py\nparameters: {}\n", "empty grid"),
    ("method: grid\nprogram: nope.py\ncommand: [python3, '${program}', '${args}']\nparameters: {x: {values: [1]}}\n",
     "program 'nope.py' does not exist"),
    ("method: grid\nprogram: fake.py\ncommand: [no-such-exe-x, '${program}']\nparameters: {x: {values: [1]}}\n",
     "command 'no-such-exe-x' not found on PATH"),
    ("method: grid\ncommand: [python3, -m, no_such_module_x]\nparameters: {x: {values: [1]}}\n",
     "module 'no_such_module_x', which does not exist"),
    ("method: bayes\nprogram: fake.py\nparameters: {x: {min: 0.0, max: 1.0}}\n", "needs the W&B server"),
    ("method: random\nprogram: fake.py\nparameters: {x: {min: 0.0, max: 1.0}}\n",
     "give run_cap in the file or --count"),
    ("method: grid\nprogram: fake.py\nparameters: {x: {min: 0.0, max: 1.0}}\n", "disallowed type with grid search"),
    ("method: grid\nprogram: fake.py\nparamters: {x: {values: [1]}}\n", "unknown top-level key"),
])
def test_bad_input_is_one_error_line_and_nothing_is_written(in_tmp, capsys, body, message):
    (in_tmp / "fake.py").write_text(FAKE)
    (in_tmp / "bad.yaml").write_text(body)
    with pytest.raises(SystemExit) as exc:
        main(["bad.yaml", "--out", "runs"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("lrscan sweep: error: ")
    assert re.search(message, err), err
    assert not (in_tmp / "runs").exists()


@pytest.mark.parametrize("count", ["0", "-1"])
@pytest.mark.parametrize("mode", [[], ["--dry-run"], ["--print-sbatch"]])
def test_a_count_below_one_is_refused_not_a_slice(in_tmp, capsys, count, mode):
    # `points[:-1]` would quietly drop the last point under the same sweep key (load_sweep's side: test_spec.py)
    path = write_sweep(in_tmp, "x: {values: [1, 2, 3]}\n")
    with pytest.raises(SystemExit) as exc:
        main([str(path), "--count", count, "--out", "runs", *mode])
    assert exc.value.code == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == (f"lrscan sweep: error: --count {count}: need at least 1 "
                                    "(grid: run its first N points; random: draw N points)")
    assert captured.out == "" and not (in_tmp / "runs").exists()


@pytest.mark.parametrize("argv, message", [
    ([], "the following arguments are required: yaml"),
    (["s.yaml", "--workers", "two"], "argument --workers: invalid int value: 'two'"),
    (["s.yaml", "--count"], "argument --count: expected one argument"),
    (["s.yaml", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    (["s.yaml", "--wandb-mode", "cloud"], "argument --wandb-mode: invalid choice: 'cloud'"),
    (["s.yaml", "--array-tasks", "-2", "--print-sbatch"], "--array-tasks -2: must be >= 0"),
])
def test_flag_errors_are_one_line_without_the_usage_block(in_tmp, capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("lrscan sweep: error: ") and message in err, err
    assert "usage:" not in err


def test_help_runs_as_a_module_and_lists_the_flags():
    done = subprocess.run([sys.executable, "-m", "lrscan.pipeline.sweep", "--help"], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: lrscan sweep ")
    for flag in ("--workers", "--dry-run", "--index", "--out", "--lease-seconds", "--print-sbatch", "--array-tasks"):
        assert flag in done.stdout


def test_the_console_script_is_this_main():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["lrscan-sweep"] == "lrscan.pipeline.sweep.__main__:main"
