"""Which points can share a pack: they may differ in seed, lr range, lr, decay steps and lrs, and where their runs
live."""

from __future__ import annotations

import pytest

from lrscan.pipeline.config import TrainConfig
from lrscan.pipeline.packing import key_difference, pack_key

BASE = TrainConfig(schedule="range", steps=1000, n_embd=2, n_hidden=16)


@pytest.mark.parametrize("change", [
    {"seed": 7}, {"lre_min": -2.0, "lre_max": -0.5}, {"lr": 0.3}, {"decay_steps": (10, 20), "decay_lrs": (0.1, 0.01)},
    {"run_id": "x1", "wandb_name": "n", "wandb_tags": ("a",), "wandb_group": "g", "resume": True},
])
def test_points_that_differ_in_what_a_member_owns_share_a_key(change):
    other = BASE.replace(**change)
    assert pack_key(other) == pack_key(BASE) and key_difference(BASE, other) == []


@pytest.mark.parametrize("change", [
    {"steps": 2000}, {"schedule": "step"}, {"n_hidden": 32}, {"n_embd": 3}, {"block_size": 4}, {"batch_size": 64},
    {"device": "auto"}, {"data": "other.txt"}, {"stop_on_climb": False}, {"ckpt_every_steps": 5},
    {"init": "scaled"}, {"wandb_mode": "disabled"},
])
def test_anything_else_gives_another_key(change):
    other = BASE.replace(**change)
    assert pack_key(other) != pack_key(BASE)
    assert key_difference(BASE, other) == sorted(change)
