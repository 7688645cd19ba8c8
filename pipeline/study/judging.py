"""The one place pipeline/study reaches the judge (analysis' prove statistics): candidates, a table, a decision.

    candidates = candidates_of(pick, user_lrs=[0.003])   # the suggesters' lrs, and the user's exactly as given
    table, decision = judge(runs, candidates)            # runs: run_id, lr, seed, loss, judged_by

Everything pipeline/study asks of the statistics goes through here, so the judge can change under it
in one edit. A user's lr is trained exactly as asked: a suggester within `MERGE_DECADES` of it joins
it (its name lists both), it never replaces it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from lrscan.analysis.prove import (
    MERGE_DECADES,
    TAIL_FRAC,
    TRAIN_TAIL,
    USER,
    ProveDecision,
    grid_candidates,
    prove_candidates,
    prove_decision,
    prove_table,
)

__all__ = ["TAIL_FRAC", "TRAIN_TAIL", "ProveDecision", "candidates_of", "grid_candidates", "judge", "judged_loss"]


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


def judge(runs: pd.DataFrame, candidates: pd.DataFrame) -> tuple[pd.DataFrame, ProveDecision]:
    """The candidates' table (best first) and the decision, from one row per run (lr, seed, loss)."""
    table = prove_table(runs, candidates)
    return table, prove_decision(table)


def judged_loss(summary: dict[str, Any], losses: np.ndarray, held_out: str) -> dict[str, Any]:
    """A run's judged loss: its final held-out loss, else its mean training loss over the last 10% of steps;
    a run that diverged, or whose judged value is not finite, is inf (it trained worst)."""
    by = held_out if held_out in summary else TRAIN_TAIL
    if summary.get("diverged_at_step") is not None:
        return {"loss": math.inf, "judged_by": by}
    if by == held_out:
        value = float(summary[held_out])
    else:
        tail = losses[-max(1, math.ceil(len(losses) * TAIL_FRAC)):]
        value = float(np.mean(tail)) if len(tail) else math.inf
    return {"loss": value if math.isfinite(value) else math.inf, "judged_by": by}
