"""A pack against the same points run alone: real offline runs of both, read back through the analysis."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lrscan.analysis import load_runs
from lrscan.pipeline import keys
from lrscan.pipeline.pack.loop import train_pack
from lrscan.pipeline.pack.members import Point
from lrscan.pipeline.train import checkpoint
from tests.conftest import train_argv
from tests.support.packs import alone_then_packed, assert_same_runs

pytestmark = pytest.mark.slow

def test_a_packed_range_test_logs_what_each_point_logs_alone(words_file, tmp_path, monkeypatch):
    eval_every = 120  # chunks end on eval steps; the climb stop below falls inside one (step 299 here)
    base = train_argv(words_file, "--schedule=range", "--steps=400", f"--eval_every_steps={eval_every}",
                      "--climb_burn_in_steps=50")
    points = {
        "rng-0": [*base, "--seed=1", "--lre_min=-3", "--lre_max=0"],
        "rng-1": [*base, "--seed=2", "--lre_min=-2", "--lre_max=-0.5", "--wandb_name=narrow"],
        "rng-2": [*base, "--seed=3", "--lre_min=-3", "--lre_max=3"],       # climbs and stops inside a chunk
        "rng-3": [*base, "--seed=4", "--lre_min=-1", "--lre_max=1"],
    }
    runs = assert_same_runs(*alone_then_packed(tmp_path, monkeypatch, points), n_runs=4)
    # chunks end on eval steps: the climb stop falls inside one, which is replayed up to it
    stop_step = runs.loc["rng-2", keys.STOP_STEP]
    assert runs.loc["rng-2", keys.STOP_REASON] == keys.STOP_CLIMB and stop_step % eval_every != eval_every - 1
    assert runs.loc["rng-1", "run_name"] == "narrow"
    # the stopped member's model is the one at its stop step: its checkpoint is the lone run's, bit for bit
    alone_ckpt = checkpoint.load(tmp_path / "alone" / "checkpoints" / "rng-2.pt")
    packed_ckpt = checkpoint.load(tmp_path / "w" / "checkpoints" / "rng-2.pt")
    assert packed_ckpt["finished"] and packed_ckpt["step"] == alone_ckpt["step"]
    np.testing.assert_array_equal(packed_ckpt["flat"].numpy(), alone_ckpt["flat"].numpy())
    # each member's W&B record of its command is its own point's arguments
    for run_id, args in points.items():
        [path] = (tmp_path / "w" / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb")
        assert args[-1].encode() in path.read_bytes()


def test_a_packed_decay_grid_logs_what_each_point_logs_alone(words_file, tmp_path, monkeypatch):
    base = train_argv(words_file, "--schedule=step", "--steps=400", "--eval_every_steps=100")
    points = {
        "dec-0": [*base, "--seed=1", "--lr=0.1", "--decay_steps=[100]", "--decay_lrs=[0.01]"],
        "dec-1": [*base, "--seed=1", "--lr=0.3", "--decay_steps=[300]", "--decay_lrs=[0.001]"],
        "dec-2": [*base, "--seed=2", "--lr=0.3", "--decay_steps=[150, 250]", "--decay_lrs=[0.1, 0.01]"],
        "dec-3": [*base, "--seed=2", "--lr=1.0", "--decay_steps=[50]", "--decay_lrs=[0.05]"],
    }
    runs = assert_same_runs(*alone_then_packed(tmp_path, monkeypatch, points), n_runs=4)
    assert (runs[keys.FINAL_STEP] == 399).all()
    dev = load_runs(tmp_path / "w" / "wandb", keys=[keys.DEV_LOSS]).steps.dropna(subset=[keys.DEV_LOSS])
    assert sorted(set(dev["step"])) == [99, 199, 299, 399]


def test_points_that_differ_in_more_than_a_member_owns_are_refused(words_file):
    a = Point.parse("a", train_argv(words_file, "--steps=100"))
    b = Point.parse("b", train_argv(words_file, "--steps=200"))
    with pytest.raises(Exception, match="steps differ"):
        train_pack([a, b])


def test_runs_that_cannot_open_fail_the_pack_with_wandbs_reason_and_every_end_file(words_file, tmp_path, monkeypatch):
    # the runs open while the first chunk trains: a wandb.init that fails still fails the pack, in one line
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    # a setting wandb itself refuses at init (lrscan refuses a bad project name before anything starts)
    monkeypatch.setenv("WANDB_INIT_TIMEOUT", "not-a-number")
    base = train_argv(words_file, "--steps=300", f"--ckpt_dir={tmp_path / 'ckpt'}")
    points = [Point.parse(f"bad-{i}", [*base, f"--seed={i}"], end_file=str(tmp_path / f"bad-{i}.end.json"))
              for i in range(2)]
    with pytest.raises(Exception, match=r"(?s)run bad-0: wandb.init failed: .*init_timeout"):
        train_pack(points)
    for i in range(2):
        end = json.loads((tmp_path / f"bad-{i}.end.json").read_text())
        assert end["state"] == "failed" and "wandb.init failed" in end["reason"]
