"""The study's prove stage: the range test's candidates as a constant-lr sweep (prove.yaml), candidates x seeds.

    candidates = judging.candidates_of(pick, extra_lrs)     # min_loss, fastai_minimum, steepest, ...
    path = write_prove_yaml(base_yaml, dest, prove_parameters(candidates, seeds=[1, 2, 3], steps=4000), note)

`prove.yaml` is an ordinary W&B sweep YAML (the same file runs under `wandb sweep` + `wandb agent`):
the decay grid's model and program with a constant schedule, one coupled `candidate` parameter per
candidate (its lr, and its name in the run's name and tags) times `seed`. Its points differ only in
lr, seed and where their runs live, so on the makemore MLP they pack in one process
(`pipeline.packing`). Same seed = same init and batches at every lr: the seeds are paired.

The budget: by default a third of the decay grid's steps (`default_prove_steps`), because the
ranking depends on it (a short budget favours large lrs) and the lr to prove is the one that trains
best for the run the study is about to make.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from lrscan.pipeline.errors import LrscanError
from lrscan.pipeline.fsutil import atomic_write_text
from lrscan.pipeline.yamlfile import read_yaml_mapping

PROVE_YAML = "prove.yaml"
DEFAULT_SEEDS = (1, 2, 3)
BUDGET_FRACTION = 3       # the default prove budget: 1/3 of the decay grid's steps (rounded up)
EVALS_PER_RUN = 4         # held-out loss this many times per prove run, for the curves
# the decay grid's parameters a constant-lr run has no use for
NOT_CONSTANT = ("lr", "decay_steps", "decay_lrs", "schedule", "steps", "eval_every_steps", "seed")


def default_prove_steps(decay_steps: int) -> int:
    """A third of the decay grid's length, rounded up: at least that much of the run being chosen for."""
    return max(1, math.ceil(int(decay_steps) / BUDGET_FRACTION))


def check_prove_flags(steps: int | None, seeds: Any, lrs: Any) -> tuple[int | None, tuple[int, ...], tuple[float, ...]]:
    """--prove-steps, --prove-seeds (a count or a list), --prove-lrs (comma-separated), each checked in one line."""
    if steps is not None and (isinstance(steps, bool) or int(steps) != steps or steps < 1):
        raise LrscanError(f"--prove-steps={steps}: need a whole number >= 1")
    try:
        if isinstance(seeds, str):
            parts = [p for p in seeds.replace(" ", "").split(",") if p]
            seeds = int(parts[0]) if len(parts) == 1 else parts  # one number is a count, several are the seeds
        seeds = list(range(1, int(seeds) + 1)) if isinstance(seeds, int) else [int(x) for x in seeds]
    except (TypeError, ValueError):
        raise LrscanError(f"--prove-seeds={seeds}: a number of seeds (3) or a list (1,2,3)") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise LrscanError(f"--prove-seeds={seeds}: need at least one seed, none repeated")
    if isinstance(lrs, str):
        try:
            lrs = [float(t) for t in lrs.split(",") if t.strip()]
        except ValueError:
            raise LrscanError(f"--prove-lrs={lrs}: expected learning rates such as 0.003,0.01") from None
    lrs = tuple(float(lr) for lr in lrs or ())
    bad = [lr for lr in lrs if not (math.isfinite(lr) and lr > 0)]
    if bad:
        raise LrscanError(f"--prove-lrs: {bad[0]} is not a learning rate (a positive number such as 0.003)")
    return (None if steps is None else int(steps)), tuple(seeds), lrs


def run_name(name: str, lr: float) -> str:
    """A prove run's W&B name: the candidate and its lr, said once (its seed is in its config):
    prove-min_loss-lr0.155, prove-lr0.001 (a grid's lr), prove-user-lr0.003 (the user's)."""
    for prefix in ("lr=", "lr"):
        if name.startswith(prefix):
            return f"prove-lr{lr:.4g}"
    if name.startswith("user_"):
        return f"prove-user-lr{lr:.4g}"
    return f"prove-{name}-lr{lr:.4g}"


def prove_parameters(candidates: pd.DataFrame, *, seeds: Sequence[int], steps: int) -> dict[str, Any]:
    """The sweep parameters of the prove stage: constant lr, `candidate` (lr + name + tags) x `seed`."""
    eval_every = steps // EVALS_PER_RUN if steps >= EVALS_PER_RUN else 0
    points = [{"lr": float(c["lr"]), "wandb_name": run_name(str(c["name"]), float(c["lr"])),
               "wandb_tags": ["prove", *[s.strip() for s in str(c["suggested_by"]).split(",")]]}
              for _, c in candidates.iterrows()]
    return {"schedule": {"value": "constant"}, "steps": {"value": int(steps)},
            "eval_every_steps": {"value": int(eval_every)}, "candidate": {"values": points},
            "seed": {"values": [int(s) for s in seeds]}}


def write_prove_yaml(base_yaml: Path, dest: Path, parameters: Mapping[str, Any], note: str) -> Path:
    """`base_yaml` (the decay grid) turned into the prove sweep at `dest` (the same text on every resume)."""
    config = read_yaml_mapping(base_yaml, "sweep file")
    if not isinstance(config.get("parameters"), dict):
        raise LrscanError(f"{base_yaml}: not a sweep file with parameters")
    kept = {k: v for k, v in config["parameters"].items() if k not in NOT_CONSTANT}
    config.update(name="prove", description="the range test's candidates trained at a constant lr, paired seeds",
                  metric={"name": "dev_loss", "goal": "minimize"}, method="grid", parameters={**kept, **parameters})
    text = (f"# derived by pipeline.study from {base_yaml.name}: {note}\n"
            f"# each candidate x seed trains at its constant lr; the lowest mean held-out loss wins\n"
            + yaml.safe_dump(config, sort_keys=False))
    if not dest.exists() or dest.read_text() != text:
        atomic_write_text(dest, text)
    return dest


# -- the stage, as the study runs it ------------------------------------------------------------------


def decay_grid_steps(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> int:
    """The decay grid's run length (its `steps` value, the size's override first; the longest if several)."""
    spec = {**base.get("parameters", {}), **overrides}.get("steps") or {}
    values = spec.get("values") or [spec.get("value")]
    steps = [int(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if not steps:
        raise LrscanError("the decay grid names no steps: give --prove-steps")
    return max(steps)


def run_prove_stage(study: Any, pick_summary: Mapping[str, Any], state: dict[str, Any], stage: Any) -> Any:
    """Derive prove.yaml from the pick, run it like the other stages, analyse it; returns its judge verdict.

    `study`: the `Study` (its sweep runner, analysis, folders, flags); `state`: its state.json, where
    the candidates are kept so a resumed study proves the same lrs; `stage(text)` prints the header.
    """
    from lrscan.pipeline.study.judging import candidates_of
    from lrscan.pipeline.study.study import read_base
    from lrscan.pipeline.sweep import load_sweep

    if study.zoom:  # the zoomed range test's pick and CI are the candidates' source
        pick_summary = run_zoom_stage(study, stage).summary
    asked = {"prove_lrs": list(study.prove_lrs), "prove_zoom": study.zoom}
    if state.get("prove_candidates") and all(state.get(k) == v for k, v in asked.items()):
        candidates = pd.DataFrame(state["prove_candidates"])
    else:
        best = pick_summary["best_lre"] if study.zoom else state["best_lre"]
        candidates = candidates_of({**pick_summary, "best_lre": best}, study.prove_lrs)
        state.update(prove_candidates=candidates.to_dict("records"), **asked)
        study.save_state(state)
    steps = study.prove_steps or default_prove_steps(decay_grid_steps(read_base(study.decay_yaml),
                                                                      study.spec.decay_overrides))
    # the decay grid's model and data (the size's overrides too), at the candidates' constant lrs
    same_model = {k: v for k, v in study.spec.decay_overrides.items() if k not in NOT_CONSTANT}
    parameters = {**same_model, **study.task_parameters(),
                  **prove_parameters(candidates, seeds=study.prove_seeds, steps=steps)}
    path = write_prove_yaml(study.decay_yaml, study.out / "stages" / PROVE_YAML, parameters,
                            f"{study.note()}, {len(candidates)} candidates x {len(study.prove_seeds)} seeds, "
                            f"{steps} steps")
    sweep = load_sweep(path)
    names = ", ".join(f"{c['suggested_by']} {c['lr']:.3g}" for _, c in candidates.iterrows())
    stage(f"prove: {len(candidates)} candidates x {len(study.prove_seeds)} seeds at a constant lr for {steps} steps "
          f"({sweep.key}): {names}")
    study.sweep(sweep)
    # blocks no longer than a quarter of a prove run, so a short --prove-steps still has block means
    report = study.analyse(sweep, "prove", prove_candidates=candidates,
                            block_steps=min(study.spec.block_steps, max(1, steps // 4)))
    result = report.prove[0]
    print(f"{result.headline()}\n{result.opening()}", flush=True)
    return result


def run_zoom_stage(study: Any, stage: Any) -> Any:
    """--zoom: run the zoom sweep the range report wrote (report/range/zoom.yaml, a narrower range test
    around the pick, copied to stages/lr_zoom.yaml) and pick again on it; returns its report."""
    from lrscan.pipeline.sweep import load_sweep

    written = study.out / "report" / "range" / "zoom.yaml"
    if not written.is_file():
        raise LrscanError(f"--zoom: the range report wrote no zoom sweep ({written})")
    dest = study.out / "stages" / "lr_zoom.yaml"
    if not dest.exists() or dest.read_text() != written.read_text():
        atomic_write_text(dest, written.read_text())
    sweep = load_sweep(dest)
    stage(f"zoom: a narrower range test around the pick, {len(sweep.points)} runs ({sweep.key})")
    study.sweep(sweep)
    report = study.analyse(sweep, "zoom")
    if report.summary.get("best_lre") is None:
        raise LrscanError(f"--zoom: the zoomed range test gave no pick; see {study.out / 'report' / 'zoom'}")
    print(f"zoomed pick: lre {report.summary['best_lre']:.3f} (95% CI {report.summary.get('best_lre_ci')})", flush=True)
    return report


def save_range_candidates(pick: Any, candidates: pd.DataFrame, winner: str, dest: Path, dpi: int = 110) -> None:
    """The range-test curve with the candidates marked and the winner highlighted, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lrscan.analysis.plots import plot_range_candidates

    ax = plot_range_candidates(pick, candidates, winner=winner)
    tmp = dest.with_suffix(".tmp.png")
    ax.figure.savefig(tmp, dpi=dpi)
    plt.close(ax.figure)
    tmp.replace(dest)
