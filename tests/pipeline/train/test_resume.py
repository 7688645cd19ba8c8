"""A run's resume, once for a single run and a pack member: the checkpoint checked, what is said."""

from __future__ import annotations

from pathlib import Path

import pytest

from lrscan.pipeline.config import TrainConfig
from lrscan.pipeline.errors import LrscanError
from lrscan.pipeline.train.resume import checked_state, say_resume

CFG = TrainConfig(data="words.txt", steps=100, run_id="r1")
PATH = Path("ck/r1.pt")


def _state(**more) -> dict:
    return {"run_id": "r1", "config": CFG.to_dict(), "flat": None, "vocab": ["a", "b"], "data_sha256": "abc",
            "finished": False, "step": 40, **more}


def test_a_checkpoint_that_fits_is_returned_as_it_is():
    state = _state()
    assert checked_state(state, PATH, CFG, task=False, data_sha256="abc", vocab=("a", "b")) is state
    # an operational field (where checkpoints go, how often) may change between the two
    assert checked_state(state, PATH, CFG.replace(ckpt_dir="elsewhere"), task=False, data_sha256="abc",
                         vocab=("a", "b")) is state


@pytest.mark.parametrize("state, cfg, task, message", [
    (_state(), CFG.replace(steps=200), False, "cannot resume run r1: steps differ from its checkpoint 'ck/r1.pt'"),
    (_state(), CFG, True, "its checkpoint 'ck/r1.pt' is of the makemore MLP, this run trains a task"),
    ({k: v for k, v in _state().items() if k != "flat"}, CFG, False,
     "its checkpoint 'ck/r1.pt' is of a task, this run trains the makemore MLP"),
    (_state(data_sha256="other"), CFG, False, "'words.txt' is not the word list it was trained on"),
])
def test_a_checkpoint_another_run_wrote_is_one_line_naming_why(state, cfg, task, message):
    with pytest.raises(LrscanError, match=message.replace("(", r"\(").replace(")", r"\)")):
        checked_state(state, PATH, cfg, task=task, data_sha256="abc", vocab=("a", "b"))


def test_what_a_resumed_run_says(capsys):
    say_resume("r1", _state(), PATH)
    say_resume("r1", _state(finished=True, step=100), PATH)
    assert capsys.readouterr().out.splitlines() == [
        "resuming run r1 at step 40 from ck/r1.pt", "run r1 already finished at step 99 (ck/r1.pt); nothing to do"]
