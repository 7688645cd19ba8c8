"""Regret of the study's lr against the truth at the horizon, beside each single suggester's.

    python benchmarks/bench_regret.py [--model mlp|wavenet|both] [--size small|demo] [--data data/names.txt]

For each model: run the study (range test -> pick -> the search over (peak lr, decay) pairs) offline in a
scratch folder; then train every candidate lr the study or a suggester named (min-loss, min/10, valley,
steepest, the study's own) at the horizon with the schedule the study chose, on seeds 1-3, packed
(`lrscan.prove`), and report each one's held-out loss and its regret: its loss minus the best
candidate's. The targets: the study's regret <= 0.01 nats and never worse than the best single
suggester's. The makemore MLP is the decay grid's (n_embd 10, n_hidden 200, SGD), trained for the truth as
`lrscan.pipeline.train.mlp_task` (the same model, init and batches); WaveNet is examples/wavenet.py (AdamW).
Sizes: small (range test 3 seeds x 500 steps, horizon 2000, decays at 1000/1500 to x0.1: minutes) and demo
(the demo study's sizes: horizon 12000, decays at 3000/6000/9000 to x0.1/x0.01). The load average is printed
beside the figures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

from record import record  # noqa: E402
from scratch import scratch_dir  # noqa: E402

SIZES = {
    "small": {"range_steps": 500, "range_seeds": [1, 2, 3], "horizon": 2000, "decay_steps": [[1000], [1500]],
              "factors": "0.1", "block_steps": 100},
    "demo": {"range_steps": 1000, "range_seeds": [1, 2, 3, 4, 5], "horizon": 12000,
             "decay_steps": [[3000], [6000], [9000]], "factors": "0.1,0.01", "block_steps": 500},
}
MODELS = {
    "mlp": {"task": "", "truth": "lrscan.pipeline.train.mlp_task:make", "truth_args": {"n_embd": 10, "n_hidden": 200},
            "lre": None},
    "wavenet": {"task": str(REPO / "examples" / "wavenet.py") + ":make", "truth": None, "truth_args": {},
                "lre": (-4.0, -1.0)},
}


def load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def study_of(model: str, size: str, out: Path):
    from lrscan.pipeline.study.study import YAMLS, Size, Study

    s, m = SIZES[size], MODELS[model]
    model_params = {} if m["task"] else {"n_embd": {"value": 10}, "n_hidden": {"value": 200}}
    custom = Size(range_overrides={"steps": {"value": s["range_steps"]}, "seed": {"values": s["range_seeds"]},
                                   **({"lre_min": {"value": -3.0}, "lre_max": {"value": 0.0}} if not m["lre"] else {})},
                  decay_overrides={**model_params, "steps": {"value": s["horizon"]},
                                   "decay_steps": {"values": s["decay_steps"]}, "eval_every_steps": {"value": 0}},
                  block_steps=s["block_steps"])
    lre = m["lre"] or (None, None)
    return Study(size=custom, out=out, workers=2, wandb_mode="offline", project="", entity="",
                 range_yaml=YAMLS / "lr_range.yaml", decay_yaml=YAMLS / "decay_grid.yaml", n_boot=200,
                 decay_factors=s["factors"], task=m["task"], lre_min=lre[0], lre_max=lre[1], prove=True,
                 prove_seeds=3)


def regret_table(summary: dict, truth) -> list[dict]:
    """Each suggester's lr and the study's, with its mean loss at the horizon and its regret."""
    lre = summary["suggesters"]
    named = {"min-loss": 10 ** lre["min_loss"], "min/10": 10 ** (lre["min_loss"] - 1),
             "valley": 10 ** lre["valley"], "steepest": 10 ** lre["steepest"], "lrscan": summary["chosen_lr"]}
    means = {float(r["lr"]): float(r["mean"]) for _, r in truth.table.iterrows()}
    best = min(v for v in means.values() if math.isfinite(v))
    rows = []
    for name, lr in named.items():
        at = min(means, key=lambda x: abs(math.log10(x) - math.log10(lr)))
        rows.append({"who": name, "lr": lr, "mean": means[at], "regret": means[at] - best})
    return rows


def tie_rules(summary: dict, truth) -> dict[str, float] | None:
    """The tie rules compared on this model: among the pairs the search left tied at the horizon (won or tied),
    the lr each rule would choose and its regret in the truth table; None when nothing was tied."""
    tied = [c for c in summary["search"]["candidates"] if c["status"] in ("won", "tied")]
    if len(tied) < 2:
        return None
    means = {float(r["lr"]): float(r["mean"]) for _, r in truth.table.iterrows()}
    best = min(v for v in means.values() if math.isfinite(v))
    picks = {"lowest_mean": min(tied, key=lambda c: c["mean"])["lr"], "largest_tied_lr": max(c["lr"] for c in tied),
             "smallest_tied_lr": min(c["lr"] for c in tied)}
    return {rule: means[min(means, key=lambda x: abs(math.log10(x) - math.log10(lr)))] - best
            for rule, lr in picks.items()}


def run(model: str, size: str, data: str) -> dict:
    from lrscan.pipeline.study.horizon import StepDecay
    from lrscan.pipeline.study.prove_api import prove

    out = Path(scratch_dir(f"lrscan-bench-regret-{model}-"))
    t0 = time.monotonic()
    summary = study_of(model, size, out / "study").run()
    study_s = time.monotonic() - t0
    schedule = StepDecay(at=tuple(summary["schedule"]["at"]), factors=tuple(summary["schedule"]["factors"]))
    lre = summary["suggesters"]
    lrs = {10 ** lre["min_loss"], 10 ** (lre["min_loss"] - 1), 10 ** lre["valley"], 10 ** lre["steepest"],
           *{c["lr"] for c in summary["search"]["candidates"]}}
    m = MODELS[model]
    truth_task = m["truth"] or m["task"]
    t1 = time.monotonic()
    truth = prove(truth_task, sorted(lrs), horizon=summary["horizon"], schedule=schedule, seeds=[1, 2, 3],
                  task_args={**m["truth_args"], "data": data}, wandb_mode="disabled")
    truth_s = time.monotonic() - t1
    rows = regret_table(summary, truth)
    rules = tie_rules(summary, truth)
    return {"model": model, "size": size, "horizon": summary["horizon"], "schedule": schedule.text(),
            "chosen_pair": summary["search"]["chosen_pair"], "study_s": round(study_s, 1),
            "truth_s": round(truth_s, 1), "spent": summary["search"]["spent_run_steps"],
            "budget": summary["search"]["budget_run_steps"], "rows": rows, "rules": rules,
            "truth": [{"lr": float(r["lr"]), "mean": float(r["mean"])} for _, r in truth.table.iterrows()],
            "load": load()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="both", choices=("mlp", "wavenet", "both"))
    p.add_argument("--size", default="small", choices=sorted(SIZES))
    p.add_argument("--data", default=os.environ.get("LRSCAN_DATA") or str(REPO / "data" / "names.txt"))
    p.add_argument("--json", default="", help="also write the results here")
    args = p.parse_args()
    os.environ["LRSCAN_DATA"] = str(Path(args.data).resolve())
    os.environ.setdefault("WANDB_SILENT", "true")
    results = []
    for model in (("mlp", "wavenet") if args.model == "both" else (args.model,)):
        print(f"{model} ({args.size}): {load()}", flush=True)
        r = run(model, args.size, os.environ["LRSCAN_DATA"])
        results.append(r)
        print(f"\n{model}, horizon {r['horizon']} ({r['schedule']}, the study's choice {r['chosen_pair']}); study "
              f"{r['study_s']} s, truth {r['truth_s']} s; search spent {r['spent']} of {r['budget']} run-steps; "
              f"{r['load']}")
        print("| suggester | lr | held-out loss at the horizon (3 seeds) | regret (nats) |\n|---|---|---|---|")
        for row in r["rows"]:
            print(f"| {row['who']} | {row['lr']:.4g} | {row['mean']:.4f} | {row['regret']:.4f} |")
        print(f"tie rules (regret of each rule's choice among the tied pairs): {r['rules'] or 'no tie at the horizon'}")
        print("truth: " + ", ".join(f"{t['lr']:.4g} {t['mean']:.4f}" for t in r["truth"]), flush=True)
        record(f"regret_{model}_{args.size}", f"Regret at the horizon: {model}, {args.size} size",
               [{"suggester": row["who"], "lr": f"{row['lr']:.4g}", "held-out loss (3 seeds)": f"{row['mean']:.4f}",
                 "regret (nats)": f"{row['regret']:.4f}"} for row in r["rows"]],
               target="lrscan's regret <= 0.01 nats and never worse than the best single suggester's",
               note=(f"Horizon {r['horizon']} steps, {r['schedule']} (the study's choice {r['chosen_pair']}); "
                     f"the search spent {r['spent']} of {r['budget']} run-steps."))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
