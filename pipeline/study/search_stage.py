"""The study's search stage: the range test's candidates x the decay grid's options, one search to the horizon.

    result = run_search_stage(study, pick_summary, state, stage)   # a SearchResult
    result.chosen (a Pair), result.records (every pair: status, reached step, losses), result.to_dict()

Proving and the decay grid are one search over (peak lr, decay) pairs (pipeline/study/search_plan.py says
how it decides, pipeline/study/search_runs.py how it trains): every pair to the first decay step, those
told apart as worse dropped, the rest continued from their checkpoints to each later decay step and the
horizon, the budget (today's prove stage plus decay grid, in run-steps) never exceeded. A winner at the
edge of the candidate lrs is extended past that edge (twice the lr, or half) before it is declared.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from lrscan.pipeline.errors import LrscanError
from lrscan.pipeline.pack.launcher import PackLauncher
from lrscan.pipeline.study import search_plan as plan
from lrscan.pipeline.study.horizon import StepDecay
from lrscan.pipeline.study.prove_stage import BUDGET_FRACTION, decay_grid_steps, run_zoom_stage
from lrscan.pipeline.study.search_runs import Search, arg_text, pair_records

EXTEND_FACTOR = 2.0     # an edge winner's neighbour past the edge: twice its lr (or half)
MAX_EXTENSIONS = 2      # per edge, at the first rung and again at the horizon
FIRST_RUNG_SHARE = 4    # the first rung takes at most 1/4 of the budget (earlier rungs are added until it does)
# the decay grid's parameters the search sets itself
SET_HERE = ("lr", "decay_steps", "decay_lrs", "schedule", "steps", "eval_every_steps", "seed", "ckpt_dir",
            "ckpt_every_steps", "pause_at_step", "run_id", "wandb_group", "wandb_name", "wandb_mode")


@dataclass
class SearchResult:
    chosen: plan.Pair
    records: list[dict[str, Any]]
    horizon: int
    seeds: list[int]
    budget_run_steps: int
    spent_run_steps: int
    seconds: float
    key: str
    rule: str = plan.TIE_RULE_TEXT
    extended: list[float] = field(default_factory=list)
    zoom_report: Any = None
    notes: list[str] = field(default_factory=list)
    probes: list[dict[str, Any]] = field(default_factory=list)  # each constant run's probe at each rung: what it judged

    @property
    def schedule(self) -> StepDecay:
        return StepDecay(at=tuple(b for b, _ in self.chosen.decay), factors=tuple(f for _, f in self.chosen.decay))

    def to_dict(self) -> dict[str, Any]:
        return {"chosen_lr": self.chosen.lr, "chosen_pair": self.chosen.name, "chosen_by": "search",
                "rule": self.rule, "tie_rule": plan.TIE_RULE, "horizon": self.horizon,
                "schedule": self.schedule.to_dict(), "seeds": self.seeds, "judged_by": "dev_loss",
                "budget_run_steps": self.budget_run_steps, "spent_run_steps": self.spent_run_steps,
                "seconds": round(self.seconds, 1), "extended_lrs": self.extended, "group": self.key,
                "notes": self.notes, "probes": self.probes,
                "candidates": self.records}

    def sentence(self) -> str:
        won = next(r for r in self.records if r["status"] == plan.WON)
        tied = [r for r in self.records if r["status"] == plan.TIED]
        how = (f"tied with {len(tied)} other pair(s) at the horizon; the tie rule chose it" if tied else
               "every other pair told apart as worse or dropped on the way")
        return (f"The search proved lr {self.chosen.lr:.4g} with {self.schedule.text()} for {self.horizon} steps: "
                f"held-out loss {won['mean']:.4f} over {len(self.seeds)} paired seeds ({how}); "
                f"{self.spent_run_steps} of a {self.budget_run_steps}-run-step budget.")

    def probe_lines(self) -> list[str]:
        """What judged the runs still at a constant lr, rung by rung: each one's probe (its lr decayed for a while)."""
        lines = []
        for step in sorted({p["step"] for p in self.probes}):
            at = [p for p in self.probes if p["step"] == step]
            lines.append(f"- step {step}, each constant run decayed x{at[0]['factor']:g} for {at[0]['steps']} steps: "
                         + ", ".join(f"lr {p['lr']:.4g} {p['mean']:.4f}" for p in at))
        return lines

    def table_lines(self) -> list[str]:
        lines = ["| pair | suggested by | status | reached step | mean | per seed |", "|---|---|---|---|---|---|"]
        for r in self.records:
            per = ", ".join(f"{s}: {v:.4f}" for s, v in zip(r["seeds"], r["losses"]))
            lines.append(f"| {r['name']} | {r['suggested_by']} | {r['status']} | {r['reached_step']} | "
                         f"{r['mean']:.4f}{' (its probe)' if r['by_probe'] else ''} | {per} |")
        return lines


def decay_options(study: Any, base: Mapping[str, Any]) -> list[plan.Decay]:
    """The decay grid's options: each decay_steps value with each --decay_factors option (one factor per step)."""
    spec = {**base["parameters"], **study.spec.decay_overrides}.get("decay_steps") or {}
    values = spec.get("values") or ([spec["value"]] if "value" in spec else [])
    out = []
    for steps in values:
        steps = [int(b) for b in (steps if isinstance(steps, (list, tuple)) else [steps])]
        for factors in study.decay_factors:
            if len(factors) != len(steps):
                raise LrscanError(f"--decay_factors {list(factors)} has {len(factors)} factor(s) but decay_steps "
                                  f"{steps} has {len(steps)} step(s): give one factor per step")
            out.append(tuple(zip(steps, factors)))
    if not out:
        raise LrscanError("the decay grid names no decay_steps: nothing to search")
    return out


def fixed_args(study: Any, base: Mapping[str, Any]) -> list[str]:
    """The trainer flags every search run shares: the decay grid's single-valued parameters, the size's, the task's."""
    params = {**base["parameters"], **study.spec.decay_overrides, **study.task_parameters()}
    args = []
    for name, spec in params.items():
        if name in SET_HERE:
            continue
        values = spec.get("values") if isinstance(spec, Mapping) else None
        if values is not None and len(values) != 1:
            raise LrscanError(f"the decay grid varies {name} ({len(values)} values): the search varies only the lr "
                              f"and the decay; give {name} one value")
        value = values[0] if values is not None else spec.get("value") if isinstance(spec, Mapping) else spec
        args.append(f"--{name}={arg_text(value)}")
    return args


def run_search_stage(study: Any, pick_summary: Mapping[str, Any], state: dict[str, Any], stage: Any,
                     launcher: PackLauncher | None = None) -> SearchResult:
    """Run the search (resumable) and return its result; `stage(text)` prints the stage's header. `launcher`: the
    packs' fork server, if the study started one already (else the first rung starts it)."""
    from lrscan.pipeline.study.judging import candidates_of

    t0 = time.monotonic()
    zoom_report = None
    if study.zoom:
        zoom_report = run_zoom_stage(study, stage)
        pick_summary = zoom_report.summary
    asked = {"prove_lrs": list(study.prove_lrs), "prove_zoom": study.zoom}
    if state.get("prove_candidates") and all(state.get(k) == v for k, v in asked.items()):
        candidates = pd.DataFrame(state["prove_candidates"])
    else:
        best = pick_summary["best_lre"] if study.zoom else state["best_lre"]
        candidates = candidates_of({**pick_summary, "best_lre": best}, study.prove_lrs)
        state.update(prove_candidates=candidates.to_dict("records"), **asked)
        study.save_state(state)
    base = study.decay_base()
    horizon = decay_grid_steps(base, study.spec.decay_overrides)
    decays, args, seeds = decay_options(study, base), fixed_args(study, base), list(study.prove_seeds)
    seed_spec = {**base["parameters"], **study.spec.decay_overrides}.get("seed") or {}
    grid_seeds = len(seed_spec.get("values") or [1])
    prove_steps = study.prove_steps or max(1, math.ceil(horizon / BUDGET_FRACTION))
    budget = len(candidates) * len(seeds) * prove_steps + len(decays) * grid_seeds * horizon
    pairs = plan.make_pairs(candidates.to_dict("records"), decays)
    identity = json.dumps([args, [p.name for p in pairs], horizon, seeds], default=str)
    key = f"search-{hashlib.sha1(identity.encode()).hexdigest()[:8]}"
    search = Search(study.out / "sweeps" / key, args, horizon=horizon, seeds=seeds, key=key,
                    workers=study.workers or os.cpu_count() or 1, pack=study.pack, wandb_mode=study.wandb_mode,
                    environ=os.environ, launcher=launcher)
    status: dict[plan.Pair, str] = {}
    reached: dict[plan.Pair, int] = {}
    seen: dict[plan.Pair, np.ndarray] = {}
    by_probe: dict[plan.Pair, bool] = {}  # whether what a pair was last judged by is its run's probe
    live, spent, previous, extended, notes, probed = list(pairs), 0, 0, [], [], []
    factor = plan.probe_factor(decays)
    top = max(p.lr for p in pairs)
    picked = 10.0 ** float(pick_summary["best_lre"]) if pick_summary.get("best_lre") is not None else 0.0
    while any(d for d in decays) and len({p.lr for p in pairs}) > 1 and picked and top <= plan.DECAY_SHIFT * picked \
            and len(extended) < MAX_EXTENSIONS:
        # a decay may move the best lr up to about DECAY_SHIFT times the range test's pick (the prior, before the first
        # rung's probes measure it): until the candidates reach past that, the lr past the top edge joins the first
        # rung from the start (the bracketing below would add it after the rung's probes, two rounds of packs more)
        beyond = top = top * EXTEND_FACTOR
        extended.append(beyond)
        new = plan.make_pairs([{"lr": beyond, "suggested_by": "extended past the edge"}], decays)
        pairs += new
        live += new
    lengths = plan.rung_lengths(pairs, horizon)
    # successive halving over growing lengths: while the first rung would take more than a quarter of the budget, one
    # at half its length before it (still constant-lr for every pair, so compared like with like); the broad first
    # look is cheap and the budget goes to the decays (the candidates and the ones an edge may add past the edge); and
    # while the first rung with its probes and the cheapest way on from there would spend more than the budget
    n_lrs = len(pairs) // len(decays)
    while lengths[0] > 1 and ((n_lrs + MAX_EXTENSIONS - len(extended)) * len(seeds) * lengths[0]
                              > budget // FIRST_RUNG_SHARE
                              or _first_rung_cost(pairs, lengths[0], lengths, len(seeds)) > budget):
        lengths.insert(0, lengths[0] // 2)
    study.commands.append(f"python -m lrscan.pipeline.pack {search.folder / 'packs'}/rung<step>-<i>.json   "
                          f"# each rung's packs, in order")
    stage(f"search: {len(candidates)} peak lrs x {len(decays)} decays x {len(seeds)} seeds to {horizon} steps, "
          f"judged at steps {', '.join(map(str, lengths))} ({key}); budget {budget} run-steps")

    for length in lengths:
        counted: set[plan.Node] = set()
        probes: dict[plan.Node, plan.Node] = {}  # this rung's probes and the constant runs they judge (none at the end)
        while True:  # at the first rung, an edge winner's neighbour past the edge joins before anyone is dropped
            nodes = sorted({plan.node_of(p, length) for p in live})
            search.part(plan.forks_at(nodes, previous), previous)
            search.train_to(nodes, length)
            # the plan's cost, the same on a resumed study: each run trained from the rung before (or from 0)
            spent += len(seeds) * (length - previous) * len(set(nodes) - counted)
            counted |= set(nodes)
            losses = search.losses(nodes, length)
            if length < horizon:
                # runs still at a constant lr are judged by their probes: each decayed at this rung for a short while
                probes = plan.probes_of(nodes, live, length, factor)
                probe_end = min(horizon, length + plan.probe_steps(length))
                search.part(probes, length)
                search.train_to(sorted(probes), probe_end)
                spent += len(seeds) * (probe_end - length) * len(set(probes) - counted)
                counted |= set(probes)
                read = search.losses(sorted(probes), probe_end, kind="probe")
                losses = {**losses, **{parent: read[probe] for probe, parent in probes.items()}}
            if previous:
                break
            # the candidates must bracket the winner: at the first rung, while the best (by its probe: the decayed
            # reading) is the largest lr, the range goes on past the top edge (the smallest: past the bottom one)
            best = min(nodes, key=lambda n: plan._mean(losses[n]))
            beyond = _past_edge(best[0], sorted({p.lr for p in pairs}), extended)
            if beyond is None:
                break
            new = plan.make_pairs([{"lr": beyond, "suggested_by": "extended past the edge"}], decays)
            if spent + _first_rung_cost([*live, *new], length, lengths, len(seeds), n_lrs=1) > budget:
                notes.append(f"lr {best[0]:.4g} read best at the edge of the candidates at step {length}; {beyond:.4g} "
                             f"past it was not trained (the budget left, {budget - spent} run-steps, would not then "
                             f"carry one run on to the horizon)")
                break
            extended.append(beyond)
            pairs += new
            live += new
        for p in live:
            reached[p], seen[p] = length, losses[plan.node_of(p, length)]
            by_probe[p] = plan.node_of(p, length) in probes.values()
        if probes:
            probed += [{"step": length, "steps": probe_end - length, "factor": factor, "lr": probe[0],
                        "losses": [float(x) for x in read[probe]], "mean": plan._mean(read[probe])}
                       for probe in sorted(probes)]
        print(f"  step {length}" + (f" (constant runs by their probes: lr x{factor:g} for {probe_end - length} steps)"
                                    if probes else "") + ": "
              + ", ".join(f"{n_name(n)} {plan._mean(losses[n]):.4f}" for n in nodes), flush=True)
        if length == horizon:
            break
        verdict = plan.decide(losses, set(nodes))
        out = {n for n, v in verdict.items() if v == plan.TOLD_WORSE}
        fits = functools.partial(_fits, pairs=tuple(live), length=length, lengths=lengths, n_seeds=len(seeds),
                                 left=budget - spent)
        # a constant run's probes over every rung that probed it (each probe record names its run's lr)
        over_rungs = {(lr, ()): float(np.mean([r["mean"] for r in probed if r["lr"] == lr]))
                      for lr in {r["lr"] for r in probed}}
        cut = set(plan.budget_drops(losses, set(nodes) - out, live, length, fits, probed=over_rungs))
        if not fits(set(nodes) - out - cut) and not any("could not carry" in n for n in notes):
            notes.append(f"at step {length} the budget left ({budget - spent} run-steps) could not carry one run of "
                         f"each decay still ahead and of the decayed ones; none was weighed against another of "
                         f"another kind, so the search goes over the budget")
        for p in live:
            n = plan.node_of(p, length)
            if n in out or n in cut:
                status[p] = plan.TOLD_WORSE if n in out else plan.BUDGET
        live = [p for p in live if p not in status]
        previous = length
    chosen, final = plan.final_choice({p: seen[p] for p in live})
    while True:  # an edge winner is extended past the edge, with its decay, before it is declared
        beyond = _past_edge(chosen.lr, sorted({p.lr for p in pairs}), extended)
        if beyond is None:
            break
        if len(seeds) * horizon > budget - spent:
            notes.append(f"lr {chosen.lr:.4g} won at the edge of the candidates; {beyond:.4g} past it was not trained "
                         f"(the budget left, {budget - spent} run-steps, is less than {len(seeds) * horizon})")
            break
        extended.append(beyond)
        new = plan.Pair(beyond, chosen.decay, "extended past the edge")
        search.train_to([plan.node_of(new, horizon)], horizon)  # the whole schedule, from step 0
        spent += len(seeds) * horizon
        pairs.append(new)
        live.append(new)
        node = plan.node_of(new, horizon)
        reached[new], seen[new] = horizon, search.losses([node], horizon)[node]
        chosen, final = plan.final_choice({p: seen[p] for p in live})
    search.close()  # the packs' fork server (on an error it ends with this process: its stdin closes)
    status.update(final)
    records = pair_records(pairs, status, reached, seen, seeds, by_probe)
    result = SearchResult(chosen=chosen, records=records, horizon=horizon,
                          seeds=seeds, budget_run_steps=budget, spent_run_steps=spent,
                          seconds=time.monotonic() - t0, key=key, extended=extended, zoom_report=zoom_report,
                          notes=notes, probes=probed)
    return result  # its sentence is the study's last line before the report's path


def _first_rung_cost(pairs: list[plan.Pair], length: int, lengths: list[int], n_seeds: int,
                     n_lrs: int | None = None) -> int:
    """Run-steps of a first rung at `length` (`n_lrs` lrs, default all of `pairs`', each trained there and probed),
    then the cheapest fair way on from it with one constant run kept (search_plan.fair_cost)."""
    lrs = sorted({p.lr for p in pairs})
    n_lrs = len(lrs) if n_lrs is None else n_lrs
    rung = n_lrs * n_seeds * (length + (plan.probe_steps(length) if len(lrs) > 1 else 0))  # one lr: no probe
    later = sorted({length, *lengths})
    return rung + plan.fair_cost({(lrs[-1], ())}, pairs, length, later, n_seeds)


def _fits(keep: set[plan.Node], *, pairs: tuple[plan.Pair, ...], length: int, lengths: list[int], n_seeds: int,
          left: int) -> bool:
    """Whether the budget left carries `keep` to the horizon the cheapest fair way (search_plan.fair_cost)."""
    return plan.fair_cost(keep, pairs, length, lengths, n_seeds) <= left


def n_name(node: plan.Node) -> str:
    lr, decay = node
    return f"lr {lr:.4g}" + "".join(f" x{f:g}@{b}" for b, f in decay)


def _past_edge(best_lr: float, all_lrs: list[float], extended: list[float]) -> float | None:
    """The lr past the edge the best is at (twice the largest, half the smallest), None when it is inside."""
    if len(extended) >= MAX_EXTENSIONS or len(all_lrs) < 2:
        return None
    if best_lr >= max(all_lrs):
        return max(all_lrs) * EXTEND_FACTOR
    if best_lr <= min(all_lrs):
        return best_lr / EXTEND_FACTOR
    return None
