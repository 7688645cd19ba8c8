from pathlib import Path

import pytest
import torch

from lrscan.pipeline.errors import LrscanError
from lrscan.pipeline.train import checkpoint


def test_round_trip(tmp_path):
    path = checkpoint.ckpt_path(tmp_path / "ck", "run1")
    state = {"run_id": "run1", "step": 500, "flat": torch.arange(5.0), "climb": {"avg": 1.0, "count": 3, "best": 0.5},
             "config": {"steps": 1000, "decay_steps": [100]}, "finished": False}
    checkpoint.save(path, state)
    back = checkpoint.load(path)
    assert back["step"] == 500 and torch.equal(back["flat"], state["flat"]) and back["config"] == state["config"]


def test_load_all_lists_every_checkpoint_and_what_kept_one_from_being_read(tmp_path):
    folder = tmp_path / "ck"
    for run_id, step in (("run2", 200), ("run1", 100)):
        checkpoint.save(checkpoint.ckpt_path(folder, run_id), {"run_id": run_id, "step": step, "flat": torch.zeros(3)})
    (folder / "broken.pt").write_bytes(b"half a checkpoint")
    (folder / "run1.lock").write_text("")  # not a checkpoint
    found = checkpoint.load_all(folder)
    assert [p.name for p, _ in found] == ["broken.pt", "run1.pt", "run2.pt"]
    assert isinstance(found[0][1], LrscanError) and "cannot be read" in str(found[0][1])
    assert [s["step"] for _, s in found[1:]] == [100, 200] and torch.equal(found[2][1]["flat"], torch.zeros(3))
    assert checkpoint.load_all(tmp_path / "empty") == []


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
