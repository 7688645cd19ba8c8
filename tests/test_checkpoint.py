import os
from pathlib import Path

import pytest
import torch

from pipeline import checkpoint
from pipeline.errors import LrscanError


def test_round_trip_and_latest(tmp_path):
    path = checkpoint.ckpt_path(tmp_path / "ck", "run1")
    state = {"run_id": "run1", "step": 500, "flat": torch.arange(5.0), "climb": {"avg": 1.0, "count": 3, "best": 0.5},
             "config": {"steps": 1000, "decay_steps": [100]}, "finished": False}
    checkpoint.save(path, state)
    back = checkpoint.load(path)
    assert back["step"] == 500 and torch.equal(back["flat"], state["flat"]) and back["config"] == state["config"]
    other = checkpoint.ckpt_path(tmp_path / "ck", "run2")
    checkpoint.save(other, {**state, "run_id": "run2"})
    os.utime(path, (1, 1))  # make run1 the older one
    assert checkpoint.latest(tmp_path / "ck") == other
    assert checkpoint.latest(tmp_path / "empty") is None


def test_a_failed_write_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    path = checkpoint.ckpt_path(tmp_path, "r")
    checkpoint.save(path, {"step": 1})

    def broken_save(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        checkpoint.save(path, {"step": 2})
    monkeypatch.undo()
    assert checkpoint.load(path)["step"] == 1
    assert [p.name for p in Path(tmp_path).iterdir()] == ["r.pt"]  # no temporary left behind


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all"])
def test_unreadable_checkpoint_is_one_clear_error(tmp_path, content):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(LrscanError, match="cannot be read"):
        checkpoint.load(path)


def test_foreign_torch_file_is_refused(tmp_path):
    path = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(LrscanError, match="not an lrscan checkpoint"):
        checkpoint.load(path)
