"""analysis.zoom: the zoom sweep around a pick, as YAML the local runner and W&B both run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lrscan.analysis.pick import pick_exponent
from lrscan.analysis.runconfig import with_config
from lrscan.analysis.zoom import write_sweep_yaml, zoom_sweep
from lrscan.pipeline.config import TrainConfig, parse_args
from lrscan.pipeline.errors import LrscanError
from tests.conftest import REPO
from tests.support.frames import make_loaded, range_history, range_loaded


def test_zoom_sweep_narrows_around_the_pick(tmp_path):
    config = {"schedule": "range", "n_hidden": 200, "n_embd": 10}
    loaded = make_loaded([({"seed": s, **config}, range_history(s)) for s in (1, 2, 3)])
    pick = pick_exponent(loaded.steps, bin_width=0.1)
    # the model's fields, shared by every run, are in `runs` (steps holds the fields that differ)
    with pytest.raises(LrscanError, match="pass runs=loaded.runs too"):
        zoom_sweep(pick, steps=loaded.steps, width=0.6, points=500, seeds=[11, 12])
    sweep = zoom_sweep(pick, steps=loaded.steps, runs=loaded.runs, width=0.6, points=500, seeds=[11, 12])
    wide = with_config(loaded.steps, loaded.runs)  # the wide frame alone says the same
    assert zoom_sweep(pick, steps=wide, width=0.6, points=500, seeds=[11, 12]) == sweep

    params = sweep["parameters"]
    assert params["lre_min"] == {"value": round(pick.best_lre - 0.3, 4)}
    assert params["lre_max"] == {"value": round(pick.best_lre + 0.3, 4)}
    assert params["seed"] == {"values": [11, 12]}
    assert params["steps"] == {"value": 500} and params["schedule"] == {"value": "range"}
    assert params["n_hidden"] == {"value": 200} and params["n_embd"] == {"value": 10}  # the model measured
    assert sweep["method"] == "grid" and sweep["program"] == "pipeline/train/__main__.py"
    # every point is a valid TrainConfig
    for s in params["seed"]["values"]:
        TrainConfig.from_mapping({**{k: v["value"] for k, v in params.items() if "value" in v}, "seed": s})

    path = write_sweep_yaml(sweep, tmp_path / "zoom.yaml")
    text = path.read_text()
    assert text.startswith("# Question:")
    assert yaml.safe_load(text) == sweep


def test_zoom_default_width_covers_the_ci_and_keeps_the_base(tmp_path):
    pick = pick_exponent(range_loaded(seeds=(1, 2, 3)).steps, n_boot=200)
    base = {"program": "pipeline/train/__main__.py",
            "command": ["${env}", "python3", "-m", "lrscan.pipeline.train", "${args}"],
            "metric": {"name": "best_smooth_loss", "goal": "minimize"},
            "parameters": {"lre_min": {"values": [-3.0]}, "lre_max": {"values": [0.0]}, "batch_size": {"value": 64}}}
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    sweep = zoom_sweep(pick, base_yaml=tmp_path / "base.yaml", seeds=2)
    low, high = pick.best_lre_ci
    assert sweep["parameters"]["lre_min"]["value"] <= low and sweep["parameters"]["lre_max"]["value"] >= high
    assert sweep["parameters"]["lre_max"]["value"] - sweep["parameters"]["lre_min"]["value"] >= 0.5
    assert sweep["parameters"]["batch_size"] == {"value": 64}
    assert sweep["parameters"]["seed"] == {"values": [1, 2]}
    assert sweep["command"] == base["command"] and sweep["metric"] == base["metric"]


def test_zoom_bad_input(tmp_path):
    pick = pick_exponent(range_loaded(seeds=(1,)).steps, n_boot=0)
    with pytest.raises(LrscanError, match="points"):
        zoom_sweep(pick, points=1)
    with pytest.raises(LrscanError, match="cannot read"):
        zoom_sweep(pick, base_yaml=tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("parameters: [unclosed")
    with pytest.raises(LrscanError, match="not valid YAML"):
        zoom_sweep(pick, base_yaml=tmp_path / "bad.yaml")


def test_zoom_yaml_expands_under_the_local_runner(tmp_path):
    pick = pick_exponent(range_loaded(seeds=(1, 2)).steps)
    sweep = zoom_sweep(pick, seeds=3, points=200)
    path = write_sweep_yaml(sweep, tmp_path / "zoom.yaml")
    command = [sys.executable, "-m", "lrscan.pipeline.sweep", str(path), "--dry-run", "--out", str(tmp_path / "runs")]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    commands = [line for line in done.stdout.splitlines() if "pipeline.train" in line]
    assert len(commands) == 3
    lre_min, lre_max = sweep["parameters"]["lre_min"]["value"], sweep["parameters"]["lre_max"]["value"]
    for seed, command in zip((1, 2, 3), commands):
        flags = (f"--lre_min={lre_min}", f"--lre_max={lre_max}", f"--seed={seed}", "--steps=200", "--schedule=range")
        for flag in flags:
            assert flag in command


def _dry_run_args(path: Path, tmp_path: Path) -> list[list[str]]:
    """The trainer arguments of each point, as the local runner would launch them."""
    done = subprocess.run([sys.executable, "-m", "lrscan.pipeline.sweep", str(path), "--dry-run", "--out",
                           str(tmp_path / "runs")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    commands = [line.split() for line in done.stdout.splitlines() if "pipeline.train" in line]
    return [c[c.index("lrscan.pipeline.train") + 1:] for c in commands]


def test_zoom_of_a_coupled_pairs_sweep_drops_the_pair_it_replaces(tmp_path):
    """From lr_range_pairs.yaml the zoom once kept `lre_range` beside lre_min/lre_max: "given twice" at every point."""
    pick = pick_exponent(range_loaded(seeds=(1, 2)).steps)
    sweep = zoom_sweep(pick, seeds=2, points=200, base_yaml=REPO / "sweeps" / "lr_range_pairs.yaml")
    assert "lre_range" not in sweep["parameters"]
    path = write_sweep_yaml(sweep, tmp_path / "zoom.yaml")
    argvs = _dry_run_args(path, tmp_path)
    assert len(argvs) == 2
    for seed, argv in zip((1, 2), argvs):
        config = parse_args(argv)  # what the trainer does with them: once "--lre_min given twice"
        assert (config.lre_min, config.lre_max) == (sweep["parameters"]["lre_min"]["value"],
                                                    sweep["parameters"]["lre_max"]["value"])
        assert (config.seed, config.steps, config.schedule) == (seed, 200, "range")


def test_zoom_keeps_what_a_coupled_parameter_holds_beside_the_range():
    pick = pick_exponent(range_loaded(seeds=(1, 2)).steps, n_boot=0)
    base = {"parameters": {
        "arch": {"values": [{"lre_min": -3.0, "lre_max": 0.0, "n_hidden": 50},
                            {"lre_min": -2.0, "lre_max": -1.0, "n_hidden": 50},
                            {"lre_min": -3.0, "lre_max": 0.0, "n_hidden": 200}]},
        "nested": {"parameters": {"lre_min": {"value": -3.0}, "batch_size": {"values": [16, 32]}}},
        "only_range": {"value": {"lre_min": -3.0, "lre_max": 0.0}},
        "n_embd": {"value": 10},
    }}
    params = zoom_sweep(pick, base_yaml=base)["parameters"]
    assert params["arch"] == {"values": [{"n_hidden": 50}, {"n_hidden": 200}]}  # merged, the range gone
    assert params["nested"] == {"parameters": {"batch_size": {"values": [16, 32]}}}
    assert "only_range" not in params and params["n_embd"] == {"value": 10}
