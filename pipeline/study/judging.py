"""The one place pipeline/study reaches the judge (analysis.judge): candidates, final losses, the verdict.

    candidates = candidates_of(pick, user_lrs=[0.003])   # the suggesters' lrs, and the user's exactly as given
    finals = final_losses(steps, runs)                   # per run: lr, seed, loss, diverged, criterion
    verdict = judge(finals, candidates, steps=horizon)   # analysis.judge.Judgement: table, chosen, rule, words

Everything pipeline/study asks of the statistics goes through here, so the judge can change under it
in one edit. A user's lr is trained exactly as asked: a suggester within `MERGE_DECADES` of it joins
it (its name lists both), it never replaces it.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from lrscan.analysis.candidates import MERGE_DECADES, USER, check_lrs, grid_candidates, prove_candidates
from lrscan.analysis.judge import TAIL_FRAC, TRAIN_TAIL, Judgement, final_losses, judge, judge_run

__all__ = ["TAIL_FRAC", "TRAIN_TAIL", "Judgement", "candidates_of", "check_lrs", "final_losses", "grid_candidates",
           "judge", "judge_run"]


def candidates_of(pick: Any, user_lrs: Any = ()) -> pd.DataFrame:
    """The suggesters' candidates (merged within MERGE_DECADES), then each user lr exactly; by lre."""
    rows = prove_candidates(pick).to_dict("records")
    for lr in user_lrs:
        lre = math.log10(float(lr))
        near = [r for r in rows if abs(r["lre"] - lre) < MERGE_DECADES - 1e-12 and USER not in r["suggested_by"]]
        taken = min(near, key=lambda r: abs(r["lre"] - lre)) if near else None
        if taken is not None:  # the user's lr stands, the nearby suggester is named beside it
            rows.remove(taken)
        by = ", ".join([USER, *([taken["suggested_by"]] if taken is not None else [])])
        rows.append({"name": f"{USER}_{float(lr):.4g}", "suggested_by": by, "lr": float(lr), "lre": lre})
    return pd.DataFrame(rows).drop_duplicates("lr").sort_values("lre", ignore_index=True)
