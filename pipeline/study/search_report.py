"""The study's report when it searched: summary.json and report.md from the range report and the search result.

    summary = write_search_report(study, range_report, search_result, best_lre, seconds)

summary.json says `chosen_by` ("search"), `rule` (how ties at the horizon are decided), the `horizon`
and the chosen `schedule`, the budget and what was spent, and each candidate pair's status. With --zoom
the pick, its curve and the candidates shown are the zoomed range test's.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd

from lrscan.pipeline.fsutil import atomic_write_text
from lrscan.pipeline.study.prove_stage import lre_text, save_range_candidates


def write_search_report(study: Any, range_report: Any, result: Any, best_lre: float, seconds: float
                        ) -> dict[str, Any]:
    from lrscan.analysis.pick import ci_description

    folder = study.out / "report"
    shown = result.zoom_report or range_report  # --zoom: the zoomed pick, curve and candidates
    rs = shown.summary
    pick_lre = float(rs.get("best_lre", best_lre)) if result.zoom_report else best_lre
    search = result.to_dict()
    summary = {
        "size": study.size, "task": study.task or "makemore MLP", "task_args": study.task_args,
        "wandb_mode": study.wandb_mode, "seconds": round(seconds, 1),
        "best_lre": pick_lre, "best_lr": 10.0 ** pick_lre, "best_lre_ci": rs.get("best_lre_ci"),
        "ci_method": rs.get("ci_method"), "n_seeds": rs.get("n_seeds"), "zoomed": bool(result.zoom_report),
        "suggesters": rs.get("suggesters") or {"min_loss": rs.get("best_lre"), "steepest": rs.get("steepest_lre"),
                                               "valley": rs.get("valley_lre")},
        "chosen_lr": result.chosen.lr, "chosen_by": "search", "rule": search["rule"], "horizon": result.horizon,
        "schedule": search["schedule"], "search": search, "prove": search["candidates"],
        "range": {"report": "range/report.md", "counts": range_report.summary.get("counts"),
                  "per_run": range_report.summary.get("per_run")},
        "notes": list(dict.fromkeys([*range_report.summary.get("notes", []), *result.notes])),
        "commands": list(study.commands),
    }
    summary["opening"] = result.sentence()
    atomic_write_text(folder / "summary.json", json.dumps(summary, indent=2, default=str))
    lrs = sorted({(r["lr"], r["suggested_by"]) for r in search["candidates"]})
    marks = pd.DataFrame([{"name": f"lr{lr:.4g}", "suggested_by": by, "lr": lr, "lre": math.log10(lr)}
                          for lr, by in lrs]).drop_duplicates("lr")
    save_range_candidates(shown.pick, marks, f"lr{result.chosen.lr:.4g}", folder / "prove_range_candidates.png")
    where = "zoom" if result.zoom_report else "range"
    figures = [f for f in shown.files if f.endswith(".png")]
    lines = [
        summary["opening"], "",
        f"# lrscan study ({study.size}" + (f", task {study.task}" if study.task else "") + ")", "",
        f"Picked exponent **{pick_lre:.3f}** (95% CI {lre_text(summary['best_lre_ci'])}), lr = {10.0 ** pick_lre:.4g}"
        + (" (the zoomed range test)" if result.zoom_report else "")
        + f". Other suggesters: steepest {lre_text(rs.get('steepest_lre'))}, "
          f"valley {lre_text(rs.get('valley_lre'))}.", "",
        f"How the CI was made: {ci_description(summary['ci_method'])}.", "",
        *[f"![{f}]({where}/{f})" for f in figures], "",
        "## Search: peak lr x decay, trained to the horizon", "",
        f"Horizon {result.horizon} steps; candidates: the range test's suggestions x the decay grid's options, "
        f"paired over seeds {result.seeds}, judged by the held-out loss where each run reached. Budget "
        f"{result.budget_run_steps} run-steps (the prove stage plus the decay grid it replaces), spent "
        f"{result.spent_run_steps}." + (f" Extended past the edge: {', '.join(f'{x:.4g}' for x in result.extended)}."
                                       if result.extended else ""), "",
        f"Rule at the horizon: {search['rule']}.", "",
        *result.table_lines(), "",
        *(["Runs still at a constant lr were judged by probes (mean held-out loss over the seeds; a decay moves the "
           "best lr, and the probes measure by how much on this model):", "", *result.probe_lines(), ""]
          if result.probes else []),
        "![candidates on the range test](prove_range_candidates.png)", "",
        f"Full report: [range test]({where}/report.md).", "",
    ]
    if summary["notes"]:
        lines += ["## Notes", "", *[f"- {n}" for n in summary["notes"]], ""]
    lines += ["## Redo each stage by hand", "", "```", *study.commands, "```", ""]
    atomic_write_text(folder / "report.md", "\n".join(lines))
    return summary
