"""The decay grid's arithmetic and words: factors checked, lrs derived, points refused, the winner in words."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from lrscan.pipeline.errors import LrscanError
from lrscan.pipeline.study.decay import (
    DEFAULT_DECAY_FACTORS,
    best_decay_sentence,
    check_decay_factors,
    check_decay_points,
    decay_lr_values,
    decay_table_markdown,
)


def test_factors_as_flag_text_numbers_or_lists():
    assert check_decay_factors("0.1,0.01") == DEFAULT_DECAY_FACTORS == ((0.1,), (0.01,))
    assert check_decay_factors("[[0.1, 0.01]]") == ((0.1, 0.01),)
    assert check_decay_factors([0.5]) == ((0.5,),)
    assert check_decay_factors(0.3) == ((0.3,),)
    assert check_decay_factors(["1e-3"]) == ((0.001,),)  # YAML reads 1e-3 as text


@pytest.mark.parametrize("bad", ["1.0", "0", "2,0.1", "[[0.01, 0.1]]", "abc", "[0.1", "", [], [True]])
def test_bad_factors_are_one_line_naming_the_flag(bad):
    with pytest.raises(LrscanError, match=r"^--decay_factors=") as e:
        check_decay_factors(bad)
    assert "\n" not in str(e.value)


def test_decayed_lrs_are_the_chosen_lr_times_each_factor_unrounded():
    assert decay_lr_values(0.155, ((0.1,), (0.1, 0.01))) == [[0.155 * 0.1], [0.155 * 0.1, 0.155 * 0.01]]


def test_points_must_decay_with_one_lr_per_boundary():
    check_decay_points(SimpleNamespace(points=({"lr": 0.1, "decay_steps": [100, 200], "decay_lrs": [0.01, 0.001]},)))
    with pytest.raises(LrscanError, match="point 0: lr 0.001 then decay_lrs \\[0.01\\] is not a decay"):
        check_decay_points(SimpleNamespace(points=({"lr": 0.001, "decay_steps": [100], "decay_lrs": [0.01]},)))
    with pytest.raises(LrscanError, match="point 1: decay_steps \\[100, 200\\] has 2 boundaries but decay_lrs"):
        check_decay_points(SimpleNamespace(points=({"lr": 0.1, "decay_steps": [100], "decay_lrs": [0.01]},
                                                   {"lr": 0.1, "decay_steps": [100, 200], "decay_lrs": [0.01]})))


def decay_summary(**over):
    table = [{"config": "decay_steps=[3000]", "decay_steps": "[3000]", "final_dev_loss": 2.2312345,
              "final_test_loss": 2.24, "final_block_loss": 2.25, "n_runs": 1},
             {"config": "decay_steps=[9000]", "decay_steps": "[9000]", "final_dev_loss": 2.1198765,
              "final_test_loss": 2.13, "final_block_loss": 2.14, "n_runs": 1}]
    best = {"decay_steps": "[9000]", "metric": "final_dev_loss", "value": 2.1198765}
    return {"best": best, "by": ["decay_steps"], "table": table, "decay_factors": [[0.1]], **over}


def test_the_winner_in_words_with_its_factor_of_the_chosen_lr():
    sentence = best_decay_sentence(decay_summary(), 0.155)
    assert sentence == ("Best decay config at lr 0.155: decay_steps 9000, decay_lrs 0.0155 (the picked lr x 0.1), "
                        "final dev loss 2.12, the lowest of 2 configs.")
    assert best_decay_sentence({"best": None}, 0.155) == "The decay grid gave no best config."


def test_the_table_for_people_shows_swept_fields_factors_and_losses():
    lines = decay_table_markdown(decay_summary(), 0.155).splitlines()
    assert lines[0] == ("| decay_steps | decay_lrs | x picked lr | final_dev_loss | final_test_loss "
                        "| final_block_loss | n_runs |")
    assert lines[2].startswith("| 3000 | 0.0155 | 0.1 | 2.231 |") and lines[3].startswith("| 9000 | 0.0155 | 0.1 |")
    assert decay_table_markdown(decay_summary(table=[]), 0.155) == ""
