"""Judge trained runs against each other: one criterion, paired seeds, diverged last, Holm-adjusted comparisons.

The public API (pipeline/study calls it; these names stay):

    finals = final_losses(steps, runs, held_out_key=None)  # per run: run_id, lr, seed, loss, diverged, criterion
    verdict = judge(finals, candidates=None, pick="min_loss", alpha=0.05, rule=RULE, steps=None, group=None)
    verdict.table        # TABLE_COLUMNS: one row per candidate, best first, one status against the pick
    verdict.chosen, verdict.chosen_lr, verdict.rule, verdict.chosen_by, verdict.beats_pick, verdict.criterion
    verdict.opening()    # the sentence every output starts with; .markdown(), str(verdict), .to_dict() say the same
    one = judge_run(train_losses, held_out=None)   # one run trained in-process: tail, held_out, diverged

`finals` may be your own frame of final losses too: columns lr (or candidate), seed, loss and, if you
know it, diverged. The numbers come from `analysis.decide.decide` (vectorised over experiments);
how and why is in docs/prove-statistics.md:

- one criterion per table: the first of `HELD_OUT_KEYS` (or `held_out_key`) that every run that did
  not diverge logged, else each run's mean training loss over its last `TAIL_FRAC` of steps;
- a run diverged when the judged value, or any training loss in its tail, is NaN or inf (or it says
  ``diverged_at_step``); a candidate with a diverged run is ranked last and never chosen;
- ranking by the mean over the seeds every candidate has; each candidate against the pick (the
  min-loss suggestion; without one, the leader) by a paired t test over the seeds both have, Holm
  over the comparisons (every pair when the reference is the leader, itself chosen by the data);
- among the candidates that beat the pick, or else the pick and those tied with it, `RULE` decides.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from lrscan.analysis.candidates import PICK, grid_candidates
from lrscan.analysis.decide import (
    ALPHA,
    CONTRADICTED,
    DIVERGED,
    REFERENCE,
    RULE,
    RULES,
    STATUS,
    TIED,
    TOLD_APART,
    Decision,
    decide,
)
from lrscan.pipeline import keys
from lrscan.pipeline.errors import LrscanError

# held-out losses as lrscan, Lightning (self.log("val_loss")) and the HF Trainer (eval/loss) log them
HELD_OUT_KEYS = (keys.DEV_LOSS, "val_loss", "val/loss", "eval/loss", "eval_loss", "valid_loss", "validation_loss")
TAIL_FRAC = 0.1
TRAIN_TAIL = "train_loss_last_10pct"  # the criterion of a table without a held-out loss every run logged
SEED = "seed"
TABLE_COLUMNS = ["name", "suggested_by", "lr", "lre", "seeds", "losses", "mean", "diff", "ci_low", "ci_high",
                 "ci_level", "p", "p_holm", "detectable", "status", "direction"]


# -- one run, and a table's runs -----------------------------------------------------------------


def judge_run(train_losses: Any, held_out: float | None = None, *, diverged_at_step: Any = None,
              tail_frac: float = TAIL_FRAC) -> dict[str, Any]:
    """One run's judged values: tail (mean training loss of its last `tail_frac` of steps), held_out, diverged.

    Every value counts as logged: a NaN or inf in the tail, or a non-finite `held_out`, is a
    divergence, never skipped (pandas' mean would skip a NaN and judge an older, finite tail).
    """
    losses = np.asarray(train_losses, dtype="float64").ravel()
    tail = losses[-max(1, math.ceil(len(losses) * tail_frac)):] if len(losses) else losses
    finite_tail = bool(len(tail)) and bool(np.isfinite(tail).all())
    held = None if held_out is None or (isinstance(held_out, float) and math.isnan(held_out)) else float(held_out)
    diverged = (not finite_tail) or (held is not None and not math.isfinite(held)) or (
        diverged_at_step is not None and not pd.isna(diverged_at_step))
    return {"tail": float(tail.mean()) if finite_tail else math.inf, "held_out": held, "diverged": bool(diverged)}


def final_losses(steps: pd.DataFrame, runs: pd.DataFrame | None = None, *, held_out_key: str | None = None,
                 tail_frac: float = TAIL_FRAC) -> pd.DataFrame:
    """One row per run: run_id, lr, seed (NaN when none), loss, diverged, criterion (the same on every row).

    The criterion is `held_out_key` when given (every run that did not diverge must have logged it),
    else the first of `HELD_OUT_KEYS` that every such run logged, else ``train_loss_last_10pct``.
    A run's held-out value is its summary's (the last logged), else the last one in `steps`.
    """
    if steps is None or steps.empty:
        raise LrscanError("no steps: no run to judge")
    ordered = steps.sort_values(["run_id", keys.STEP_COLUMN], kind="stable")
    ids = ordered["run_id"].astype(str).to_numpy()
    names, starts = np.unique(ids, return_index=True)
    bounds = [*starts[1:], len(ids)]
    order = np.argsort(starts)
    loss = ordered[keys.LOSS].to_numpy(dtype="float64")
    lr = pd.to_numeric(ordered[keys.LR], errors="coerce").to_numpy(dtype="float64") if keys.LR in ordered else None
    summary = (runs.assign(run_id=runs["run_id"].astype(str)).drop_duplicates("run_id").set_index("run_id")
               .reindex(names) if runs is not None and not runs.empty else pd.DataFrame(index=names))
    wanted = [held_out_key] if held_out_key else list(HELD_OUT_KEYS)
    rows = []
    for i in order:
        name, a, b = names[i], starts[i], bounds[i]
        held = {k: _last_value(summary, ordered, k, name, a, b) for k in wanted}
        at = summary[keys.DIVERGED_AT_STEP].get(name) if keys.DIVERGED_AT_STEP in summary.columns else None
        one = judge_run(loss[a:b], None, diverged_at_step=at, tail_frac=tail_frac)
        seen = lr[a:b][~np.isnan(lr[a:b])] if lr is not None else np.zeros(0)
        seed = summary[SEED].get(name) if SEED in summary.columns else (
            ordered[SEED].iloc[a] if SEED in ordered.columns else None)
        seed = pd.to_numeric(pd.Series([seed]), errors="coerce").iloc[0]
        rows.append({"run_id": name, "lr": float(seen[-1]) if len(seen) else math.nan, SEED: float(seed),
                     "tail": one["tail"], "diverged": one["diverged"], **{f"held:{k}": v for k, v in held.items()}})
    out = pd.DataFrame(rows)
    alive = ~out["diverged"]
    criterion = TRAIN_TAIL
    for key in wanted:
        values = out[f"held:{key}"].astype("float64")
        if alive.any() and values[alive].notna().all():
            criterion = key
            break
        if held_out_key:
            lacking = out.loc[alive & values.isna(), "run_id"].tolist()
            raise LrscanError(f"--held-out-key {key}: {len(lacking)} run(s) did not log it "
                              f"({', '.join(lacking[:5])}{', ...' if len(lacking) > 5 else ''})")
    if criterion == TRAIN_TAIL:
        out["loss"] = out["tail"]
    else:
        out["loss"] = out[f"held:{criterion}"].astype("float64")
        out["diverged"] |= alive & ~np.isfinite(out["loss"].to_numpy(dtype="float64"))
    out.loc[out["diverged"], "loss"] = math.inf
    out["criterion"] = criterion
    return out[["run_id", "lr", SEED, "loss", "diverged", "criterion"]]


def _last_value(summary: pd.DataFrame, ordered: pd.DataFrame, key: str, name: str, a: int, b: int) -> float:
    """A run's last logged `key`: its summary's, else its last value in the steps frame (NaN: none); inf when the
    last logged value was not finite (a diverged run, judged so, never by an older finite value).

    A summary holds the last logged value of every key a run logged, a NaN included; in a frame a NaN reads as
    missing, so the runs frame names the keys whose last logged value was NaN (`keys.NAN_LAST`)."""
    if keys.NAN_LAST in summary.columns and key in str(summary[keys.NAN_LAST].get(name) or "").split(","):
        return math.inf
    if key in summary.columns:
        value = pd.to_numeric(pd.Series([summary[key].get(name)]), errors="coerce").iloc[0]
        if not pd.isna(value):
            return float(value)
    if key in ordered.columns:
        logged = pd.to_numeric(ordered[key].iloc[a:b], errors="coerce").dropna()  # NaN here is "not logged"
        if len(logged):
            return float(logged.iloc[-1])
    return math.nan


# -- a table of candidates ----------------------------------------------------------------------------


def judge(finals: pd.DataFrame, candidates: pd.DataFrame | None = None, *, pick: str | None = PICK,
          alpha: float = ALPHA, rule: str = RULE, steps: int | None = None, group: str | None = None,
          criterion: str | None = None) -> Judgement:
    """The candidates of `finals` judged against each other: a `Judgement` (table, chosen, rule, sentences).

    `finals`: `final_losses`' frame, or your own (lr or candidate, seed, loss, [diverged], [criterion]).
    `candidates`: name, suggested_by, lr, lre (`analysis.candidates`; default: each distinct lr);
    runs belong to the candidate of their lr (to 1e-6, relative), or of their `candidate` name.
    `pick`: the candidate (name or suggester) every other is compared with; None or absent: the leader.
    Refuses, in one line, a (candidate, seed) with two runs, runs of no candidate, a mix of criteria.
    """
    if finals is None or finals.empty:
        raise LrscanError("no runs to judge")
    crit = criterion or _one_criterion(finals)
    cands, member = _members(finals, candidates)
    seed_labels = finals[SEED].map(_seed_label) if SEED in finals.columns else pd.Series("?", index=finals.index)
    keyed = pd.DataFrame({"c": member, "s": seed_labels})
    repeated = keyed.loc[keyed.duplicated(keep=False)].value_counts(sort=False)
    if len(repeated):
        shown = ", ".join(f"{cands['name'][c]} seed {s} x{k}" for (c, s), k in list(repeated.items())[:5])
        raise LrscanError(f"two or more runs of one candidate and seed ({shown}): one run per candidate and seed "
                          f"(give each run its own seed, or average them first)")
    seeds = sorted(seed_labels.unique(), key=lambda s: (s == "?", float(s) if s != "?" else 0))
    K, S = len(cands), len(seeds)
    x = np.full((K, S), np.nan)
    bad = np.zeros((K, S), bool)
    loss = finals["loss"].to_numpy(dtype="float64")
    gone = finals["diverged"].to_numpy(bool) if "diverged" in finals.columns else ~np.isfinite(loss)
    col = {s: i for i, s in enumerate(seeds)}
    for c, s, v, g in zip(member, seed_labels, loss, gone):
        x[c, col[s]] = v
        bad[c, col[s]] = g or not math.isfinite(v)
    present = ~np.isnan(x) | bad
    if not present.all(0).any():
        ran = "; ".join(f"{n}: {_seeds_text(seeds, present[i])}" for i, n in enumerate(cands["name"]))
        raise LrscanError(f"no seed that every candidate ran: the ranking uses the seeds every candidate has ({ran})")
    names = cands["name"].astype(str).tolist()
    sugg = cands["suggested_by"].astype(str).tolist()
    pick_i = next((i for i, (nm, by) in enumerate(zip(names, sugg)) if pick is not None
                   and (nm == pick or pick in [b.strip() for b in by.split(",")])), -1)
    d = decide(np.where(present, np.nan_to_num(x, nan=np.inf), np.nan), present, bad,
               cands["lr"].to_numpy("float64"), pick_i, alpha=alpha, rule=rule)
    if d.chosen[0] < 0:
        raise LrscanError("every candidate diverged (a NaN or inf loss): nothing is proven")
    table = _table(cands, seeds, x, present, bad, d)
    shared = [int(s) if s != "?" else None for s, every in zip(seeds, present.all(0)) if every]
    return Judgement(table=table, criterion=crit, reference=names[int(d.reference[0])], on_pick=bool(d.on_pick[0]),
                     pick=names[pick_i] if pick_i >= 0 else None, chosen=names[int(d.chosen[0])],
                     chosen_lr=float(cands["lr"].iloc[int(d.chosen[0])]), rule=rule, beats_pick=bool(d.beats[0]),
                     alpha=alpha, shared_seeds=shared, steps=steps, group=group)


def _one_criterion(finals: pd.DataFrame) -> str:
    if "criterion" not in finals.columns:
        return "loss"
    found = finals["criterion"].astype(str).unique().tolist()
    if len(found) > 1:
        raise LrscanError(f"runs judged by different criteria ({', '.join(found)}): one criterion per table")
    return found[0]


def _members(finals: pd.DataFrame, candidates: pd.DataFrame | None) -> tuple[pd.DataFrame, np.ndarray]:
    """The candidates (name, suggested_by, lr, lre) and each run's index among them."""
    if "candidate" in finals.columns:
        given = finals["candidate"].astype(str)
        if candidates is None:
            firsts = finals.assign(candidate=given).drop_duplicates("candidate")
            candidates = pd.DataFrame({"name": firsts["candidate"], "suggested_by": "grid", "lr": firsts["lr"],
                                       "lre": np.log10(firsts["lr"].to_numpy("float64"))})
        candidates = candidates.reset_index(drop=True)
        index = {str(n): i for i, n in enumerate(candidates["name"])}
        unknown = sorted(set(given) - set(index))
        if unknown:
            raise LrscanError(f"runs of no candidate: {', '.join(unknown[:5])}")
        return candidates, given.map(index).to_numpy()
    lr = finals["lr"].to_numpy("float64")
    candidates = (grid_candidates(lr[np.isfinite(lr)]) if candidates is None else candidates).reset_index(drop=True)
    close = np.isclose(lr[:, None], candidates["lr"].to_numpy("float64")[None, :], rtol=1e-6, atol=0)
    if not close.any(1).all():
        raise LrscanError(f"runs at lr {', '.join(f'{v:.4g}' for v in np.unique(lr[~close.any(1)])[:5])} are no "
                          f"candidate's (candidates: {', '.join(f'{v:.4g}' for v in candidates['lr'])})")
    return candidates, close.argmax(1)


def _seed_label(seed: Any) -> str:
    if seed is None or pd.isna(seed):
        return "?"
    return str(int(seed)) if float(seed).is_integer() else str(seed)


def _seeds_text(seeds: Sequence[str], ran: np.ndarray) -> str:
    return ", ".join(s for s, r in zip(seeds, ran) if r) or "none"


def _table(cands: pd.DataFrame, seeds: list[str], x: np.ndarray, present: np.ndarray, bad: np.ndarray,
           d: Decision) -> pd.DataFrame:
    """One row per candidate, best first (diverged last, ties to the lower lr): `TABLE_COLUMNS`."""
    rows = []
    for k in range(len(cands)):
        status = int(d.status[0, k])
        direction = "" if status not in (TOLD_APART, TIED, CONTRADICTED) or d.diff[0, k] == 0 else (
            "better" if d.diff[0, k] < 0 else "worse")
        rows.append({
            "name": str(cands["name"].iloc[k]), "suggested_by": str(cands["suggested_by"].iloc[k]),
            "lr": float(cands["lr"].iloc[k]), "lre": float(cands["lre"].iloc[k]) if "lre" in cands else
            math.log10(float(cands["lr"].iloc[k])),
            "seeds": [int(s) if s != "?" else None for s, r in zip(seeds, present[k]) if r],
            "losses": [math.inf if b else float(v) for v, r, b in zip(x[k], present[k], bad[k]) if r],
            "mean": float(d.mean[0, k]), "diff": float(d.diff[0, k]), "ci_low": float(d.ci_low[0, k]),
            "ci_high": float(d.ci_high[0, k]), "ci_level": float(d.ci_level[0, k]), "p": float(d.p[0, k]),
            "p_holm": float(d.p_holm[0, k]), "detectable": float(d.detectable[0, k]),
            "status": "pick" if status == REFERENCE and d.on_pick[0] else (
                "leader" if status == REFERENCE else STATUS[status]),
            "direction": direction, "_lr": float(cands["lr"].iloc[k])})
    table = pd.DataFrame(rows)
    table = table.assign(_m=table["mean"].fillna(np.inf)).sort_values(["_m", "_lr"], kind="stable", ignore_index=True)
    return table[TABLE_COLUMNS]



# -- the one renderer -----------------------------------------------------------------------------------


@dataclass
class Judgement:
    """What `judge` decided: the table (best first), the chosen candidate and why, in one set of words."""

    table: pd.DataFrame
    criterion: str                 # a held-out key, TRAIN_TAIL, or "loss" (a frame of final losses given as is)
    reference: str                 # the candidate every other is compared with
    on_pick: bool                  # True: the reference is the pick; False: the leader (no pick, or it diverged)
    pick: str | None
    chosen: str
    chosen_lr: float
    rule: str
    beats_pick: bool               # the chosen one is told apart from the pick as better, Holm-adjusted
    alpha: float = ALPHA
    shared_seeds: list[int | None] = field(default_factory=list)  # None: a run without a seed
    steps: int | None = None       # each run's length, when known
    group: str | None = None       # the runs' group or sweep, when known

    @property
    def n_seeds(self) -> int:
        """The seeds every candidate ran: those the ranking uses."""
        return len(self.shared_seeds)

    def row(self, name: str) -> pd.Series:
        return self.table.loc[self.table["name"] == name].iloc[0]

    @property
    def chosen_by(self) -> str:
        """How the chosen candidate won: told apart from the pick, the rule among the tied, or too few seeds."""
        statuses = set(self.table["status"])
        if self.beats_pick:
            return "beats the pick"
        if statuses <= {"pick", "leader", STATUS[DIVERGED], "too few seeds"} and "too few seeds" in statuses:
            return "too few seeds: lowest loss"
        if self.chosen == self.reference and statuses <= {"pick", "leader", STATUS[DIVERGED], STATUS[TOLD_APART]}:
            return "told apart from every other"  # every other one worse, or diverged: no rule was needed
        return f"rule {self.rule} among the tied"

    def criterion_text(self) -> str:
        if self.criterion == TRAIN_TAIL:
            return (f"the mean training loss over each run's last {TAIL_FRAC:.0%} of steps (no held-out loss was "
                    f"logged by every run)")
        if self.criterion == "loss":
            return "the final loss given"
        return f"{self.criterion}, the held-out loss every run logged (its last value)"

    def criterion_label(self) -> str:
        """The criterion in a few words (a figure's axis)."""
        return f"training loss, last {TAIL_FRAC:.0%} of steps" if self.criterion == TRAIN_TAIL else self.criterion

    def headline(self) -> str:
        """The first line: the criterion, the table's size, the length of its runs."""
        n = self.n_seeds
        where = f" (W&B {self.group})" if self.group else ""
        after = f" after {self.steps} steps" if self.steps else ""
        return (f"Judged by {self.criterion_text()}{after}: {len(self.table)} candidates, {n} seed"
                f"{'s' if n != 1 else ''} every candidate ran{where}.")

    def opening(self) -> str:
        """The sentence every output starts with: what was chosen, against what, and how sure."""
        c, r = self.row(self.chosen), self.row(self.reference)
        ref = (("the min-loss pick" if PICK in _by(r) else f"the pick {r['name']}") if self.on_pick else "the leader")
        name = f"lr {c['lr']:.4g} ({c['suggested_by']})"
        gone = self.table.loc[self.table["status"] == STATUS[DIVERGED], "name"].tolist()
        tail = f" Diverged: {', '.join(gone)}." if gone else ""
        m = int(self.table["p_holm"].notna().sum())
        if self.chosen_by.startswith("too few seeds"):
            n = self.n_seeds
            return (f"{name} has the lowest loss, but with {n} paired seed{'s' if n != 1 else ''} nothing can be "
                    f"told apart (that takes 2 or more).{tail}")
        if self.beats_pick:
            return (f"{name} beats {ref} (lr {r['lr']:.4g}) by {-c['diff']:.4f}: {_ci(c)}, Holm-adjusted p "
                    f"{c['p_holm']:.2g} over {m} comparison{'s' if m != 1 else ''}.{tail}")
        if self.chosen_by == "told apart from every other" and not self.on_pick:
            return f"{name} is told apart from every other candidate as better (Holm over every pair).{tail}"
        ties = self.table.loc[self.table["status"] == STATUS[TIED]]
        gap = f"{ties['detectable'].min():.4f}" if len(ties) else "n/a"
        if self.chosen == self.reference and not len(ties):
            return f"{name}, {ref}, is chosen: every other candidate is told apart from it as worse, or diverged.{tail}"
        if self.chosen == self.reference:
            return (f"{name}, {ref}, is chosen: no candidate is told apart from it as better (the smallest gap "
                    f"these seeds could tell apart: {gap}); rule {self.rule}: {RULES[self.rule]}.{tail}")
        return (f"{name} is chosen by the rule {self.rule} ({RULES[self.rule]}) among the candidates tied with "
                f"{ref} (lr {r['lr']:.4g}); it does not beat {ref}: {c['diff']:+.4f}, {_ci(c)} (the smallest gap "
                f"these seeds could tell apart: {c['detectable']:.4f}).{tail}")

    def verdict(self) -> str:
        """The opening sentence, under the name `proof.decision.verdict()` has printed it by."""
        return self.opening()

    def shown(self) -> pd.DataFrame:
        """The table as every output prints it: one row per candidate, the status against the reference."""
        t = self.table
        return pd.DataFrame({
            "candidate": t["name"] + np.where(t["name"] == self.chosen, " (chosen)", ""),
            "suggested by": t["suggested_by"], "lr": t["lr"].map(lambda v: f"{v:.4g}"),
            "mean": t["mean"].map(lambda v: f"{v:.4f}" if math.isfinite(v) else "diverged"),
            f"vs {self.reference}": [("" if not math.isfinite(r["diff"]) or r["status"] in ("pick", "leader")
                                      else f"{r['diff']:+.4f}") for _, r in t.iterrows()],
            "CI (Holm level)": [_ci(r) if math.isfinite(r["ci_low"]) else "" for _, r in t.iterrows()],
            "p (Holm)": t["p_holm"].map(lambda v: f"{v:.2g}" if math.isfinite(v) else ""),
            "status": t["status"] + np.where(t["direction"] != "", " (" + t["direction"] + ")", ""),
            "per seed": [", ".join(f"{'?' if s is None else s}: {v:.4f}" for s, v in zip(r["seeds"], r["losses"]))
                         for _, r in t.iterrows()]})

    def markdown(self) -> list[str]:
        """The headline, the opening sentence and the table, as report.md lines."""
        shown = self.shown()
        rows = ["| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |"
                for row in shown.itertuples(index=False)]
        return [self.headline(), "", f"**{self.opening()}**", "", "| " + " | ".join(shown.columns) + " |",
                "|" + "---|" * len(shown.columns), *rows, ""]

    def __str__(self) -> str:
        return "\n".join([self.headline(), self.opening(), self.shown().to_string(index=False)])

    def to_dict(self) -> dict[str, Any]:
        """summary.json's entry: the decision's words and numbers, and the table (NaN as null)."""
        records = [{k: _plain(v) for k, v in r.items()} for r in self.table.to_dict("records")]
        return {"group": self.group, "steps": self.steps, "criterion": self.criterion,
                "criterion_text": self.criterion_text(), "reference": self.reference, "pick": self.pick,
                "chosen": self.chosen, "chosen_lr": self.chosen_lr, "chosen_by": self.chosen_by, "rule": self.rule,
                "rule_text": RULES[self.rule], "beats_pick": self.beats_pick, "alpha": self.alpha,
                "seeds": list(self.shared_seeds), "headline": self.headline(), "opening": self.opening(),
                "table": records}


def _by(row: pd.Series) -> list[str]:
    return [b.strip() for b in str(row["suggested_by"]).split(",")]


def _ci(row: Any) -> str:
    return f"{row['ci_level']:.1%} CI [{row['ci_low']:+.4f}, {row['ci_high']:+.4f}]"


def _plain(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v
