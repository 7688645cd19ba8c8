"""Write an analysis report: figures, summary.json, blocks.csv, a zoom sweep and report.md.

The one place of the analysis that writes files (and, when asked, logs back to wandb). Everything
is written into a temporary folder beside `out_dir` and swapped into place at the end, so a failure
leaves either the old report or the new one, never half of one, and a reader never finds the folder
gone. A report folder carries a marker (`.lrscan-report.json`, the files it holds): only such a
folder, with nothing added to it, is ever replaced.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import shutil
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from lrscan.analysis.blocks import (
    SCHEDULE,
    SCHEDULE_RANGE,
    DecaySummary,
    block_means,
    decay_grid,
    decay_summary,
    fitting_block_steps,
)
from lrscan.analysis.columns import KEY_MEANINGS
from lrscan.analysis.grids import judge_grids
from lrscan.analysis.judge import Judgement
from lrscan.analysis.labels import value_label  # pipeline.study imports it from here too
from lrscan.analysis.outdir import MARKER_FILE, check_out_dir, replace_dir, staging_dir
from lrscan.analysis.pick import ExponentPick, ci_description, pick_exponent, running_runs
from lrscan.analysis.plain import frame_records, json_safe, object_frame
from lrscan.analysis.runconfig import with_config
from lrscan.analysis.zoom import write_sweep_yaml, zoom_sweep
from lrscan.pipeline import keys
from lrscan.pipeline.errors import LrscanError
from lrscan.pipeline.fsutil import atomic_write_text

SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.md"
BLOCKS_FILE = "blocks.csv"
FIGURES = {
    "range_lre": "range_loss_vs_lre.png",
    "range_lr": "range_loss_vs_lr.png",
    "blocks": "decay_block_means.png",
    "heatmap": "decay_heatmap.png",
}
# every name a report folder can hold (see _write_files)
PROVE_FIGURE, PROVE_TABLE = "prove_loss_vs_lr.png", "prove_table.csv"  # a second grid's get _2, ...
REPORT_FILE_NAMES = frozenset({SUMMARY_FILE, REPORT_FILE, BLOCKS_FILE, "zoom.yaml", "range_curve.csv",
                               "range_per_run.csv", "decay_table.csv", PROVE_FIGURE, PROVE_TABLE, *FIGURES.values()})


@dataclass
class Report:
    """Where the report went and what it says (the content of summary.json)."""

    out_dir: Path
    summary: dict[str, Any]
    pick: ExponentPick | None = None
    decay: DecaySummary | None = None
    files: list[str] = field(default_factory=list)
    prove: list[Judgement] = field(default_factory=list)  # the lr grids judged (analysis.judge)


def write_report(
    out_dir: str | os.PathLike,
    loaded: Any,
    *,
    block_steps: int = 1000,
    bin_width: float | None = None,
    n_bins: int | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    zoom_base: str | os.PathLike | Mapping[str, Any] | None = None,
    source: str | None = None,
    filters: Mapping[str, Any] | None = None,
    log_to_wandb: bool = False,
    wandb_mode: str = "offline",
    dpi: int = 110,
    include_running: bool = False,
    prove_candidates: pd.DataFrame | None = None,
    prove: bool = True,
    held_out_key: str | None = None,
) -> Report:
    """Analyse `loaded` (an `analysis.sources.Loaded`) and write the report folder `out_dir`.

    Range-test runs get the exponent pick (three suggesters, bootstrap CI over seeds), its two
    figures and a zoom sweep YAML; step-decay runs get block-mean curves per config, a heatmap of
    the final dev loss over the grid and the best config. Files: ``summary.json`` (pick, CI,
    suggesters, per-run table, decay table, counts of runs/steps read and records skipped,
    problems), ``blocks.csv`` (block means of every run), the PNGs, ``zoom.yaml`` and
    ``report.md`` linking them. Runs still running are named there and left out of the pick
    unless `include_running` (`--state running`). Each lr grid of constant-lr runs (`analysis.grids`:
    runs equal in every hyperparameter but lr and seed; or the study's prove stage, its
    `prove_candidates`) is judged by `analysis.judge` (criterion: `held_out_key`, else the first
    held-out loss every run logged, else the training tail): its table (``prove_table.csv``,
    summary's ``prove``) and figure; a grid it cannot judge is a note. `prove=False`: no grid is judged.
    Runs shorter than `block_steps` get blocks of a quarter of the longest run, said in a note.

    `out_dir` must not exist, be empty, or be a report this function wrote, with nothing added
    (it is then replaced in one step; see `check_out_dir`). With `log_to_wandb`, a run with
    ``job_type='analysis'`` logs the figures and the summary as ``wandb.Table``s (offline unless
    `wandb_mode` says otherwise).
    """
    out_dir = Path(out_dir)
    check_out_dir(out_dir)
    steps: pd.DataFrame = loaded.steps
    runs: pd.DataFrame | None = getattr(loaded, "runs", None)
    if steps is None or steps.empty:
        raise LrscanError("no steps were loaded: nothing to analyse (check the source and the filters)")
    problems = list(getattr(loaded, "problems", []) or [])
    notes: list[str] = list(getattr(loaded, "notes", []) or [])  # the loader's: runs left out, keys, schedules

    block_steps = fitting_block_steps(steps, block_steps, notes)
    is_range = steps[SCHEDULE] == SCHEDULE_RANGE if SCHEDULE in steps.columns else pd.Series(True, index=steps.index)
    pick = decay = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if is_range.any():
            try:
                pick = pick_exponent(_rows(steps, is_range), runs, bin_width=bin_width, n_bins=n_bins, n_boot=n_boot,
                                     seed=seed, include_running=include_running)
            except LrscanError as err:
                raise with_first_problem(err, problems, steps.loc[is_range, "run_id"]) from None
            notes += pick.notes
        if (~is_range).any():
            try:
                decay = decay_summary(_rows(steps, ~is_range), runs, block_steps)
            except LrscanError as err:
                raise with_first_problem(err, problems, steps.loc[~is_range, "run_id"]) from None
        verdicts: list[Judgement] = []
        if prove_candidates is not None or prove:
            verdicts, grid_notes = judge_grids(steps, runs, prove_candidates, held_out_key=held_out_key,
                                               include_running=include_running)
            notes += grid_notes
        # every run's config beside its blocks, the fields `steps` leaves to `runs` too
        blocks = with_config(block_means(steps, keys.LOG10_LOSS, block_steps), runs)
    notes += list(dict.fromkeys(str(w.message) for w in caught))

    summary: dict[str, Any] = {
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "source": source,
        "filters": dict(filters or {}),
        "counts": {
            "runs_read": int(steps["run_id"].nunique()) if runs is None else int(len(runs)),
            "steps_read": int(len(steps)),
            "records_skipped": int(getattr(loaded, "skipped_records", 0) or 0),
            "range_runs": int(steps.loc[is_range, "run_id"].nunique()),
            "decay_runs": int(steps.loc[~is_range, "run_id"].nunique()),
        },
        "problems": problems,
        "notes": notes,
    }
    if pick is not None:
        summary.update({k: v for k, v in pick.to_dict().items() if k != "notes"})
    else:
        summary.update({k: None for k in ("best_lre", "best_lr", "best_lre_ci", "steepest_lre", "steepest_lr",
                                          "steepest_lre_ci", "valley_lre", "valley_lr", "ci_method")})
        summary.update({"n_runs": 0, "n_seeds": 0, "per_run": []})
    summary["blocks"] = {"file": BLOCKS_FILE, "block_steps": block_steps,
                         "partial_blocks_dropped": int(blocks.attrs.get("partial_blocks_dropped", 0)),
                         "rows": int(len(blocks))}
    summary["decay"] = None if decay is None else {
        "by": decay.by, "metric": decay.metric, "best": decay.best, "table": frame_records(decay.table)}
    summary["prove"] = [r.to_dict() for r in verdicts]
    summary["runs"] = run_keys(runs)
    summary["running"] = {"runs": running_runs(runs), "in_pick": include_running}
    if include_running and summary["running"]["runs"]:
        notes.append(f"still running, in the pick as asked (--state running): {', '.join(summary['running']['runs'])}")

    parent, tmp = staging_dir(out_dir)
    try:
        files = _write_files(tmp, summary, pick, decay, blocks, steps, runs, block_steps, zoom_base, dpi, verdicts)
        summary["files"] = files
        _write_json(tmp / SUMMARY_FILE, summary)
        (tmp / REPORT_FILE).write_text(_markdown(summary, pick, decay, files, verdicts))
        _write_json(tmp / MARKER_FILE, {"written_by": "lrscan analysis.report.write_report",
                                        "created": summary["created"], "files": [SUMMARY_FILE, REPORT_FILE, *files]})
        replace_dir(tmp, parent / out_dir.name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    report = Report(out_dir=out_dir, summary=summary, pick=pick, decay=decay, files=[SUMMARY_FILE, REPORT_FILE, *files],
                    prove=verdicts)
    if log_to_wandb:
        summary["wandb_run"] = log_report_to_wandb(report, steps, mode=wandb_mode, runs=runs)
        _write_json(out_dir / SUMMARY_FILE, summary)
    return report


def log_report_to_wandb(report: Report, steps: pd.DataFrame, *, mode: str = "offline",
                        runs: pd.DataFrame | None = None) -> dict[str, str]:
    """Log a written report as a wandb run with job_type 'analysis': figures, summary and per-run tables.

    The project and group are the analysed runs' when they all share one; ``job_type`` keeps the
    analysis run out of the next analysis (`load_runs` reads ``train`` runs by default).
    """
    import wandb  # here: importing wandb costs a second, and most reports do not log

    # a config field: every run's is in `runs`; `steps` holds it only where it differs between runs
    per_run = runs if runs is not None and "wandb_project" in runs.columns else steps
    project = _shared_value(per_run, "wandb_project") or "lrscan"
    group = _shared_value(steps, "group") or None
    scalars = {k: v for k, v in report.summary.items() if isinstance(v, (int, float, str)) or v is None}
    run = wandb.init(
        mode=mode, project=project, group=group, job_type=keys.JOB_ANALYSIS, name=f"analysis-{report.out_dir.name}",
        config={"source": report.summary.get("source"), "filters": report.summary.get("filters"),
                "block_steps": report.summary["blocks"]["block_steps"]},
        dir=os.environ.get("WANDB_DIR") or None,  # read now: wandb reads it once per process otherwise
        settings=wandb.Settings(console="off", x_disable_stats=True), reinit="create_new",
    )
    try:
        images = {name: wandb.Image(str(report.out_dir / path)) for name, path in FIGURES.items()
                  if (report.out_dir / path).is_file()}
        table = wandb.Table(columns=["key", "value"], data=[[k, json.dumps(json_safe(v))] for k, v in scalars.items()])
        logged: dict[str, Any] = {"summary": table, **images}
        if report.pick is not None:
            logged["per_run"] = wandb.Table(dataframe=object_frame(report.pick.per_run))
        if report.decay is not None:
            logged["decay_table"] = wandb.Table(dataframe=object_frame(report.decay.table))
        run.log(logged)
        run.summary.update({k: v for k, v in json_safe(scalars).items() if v is not None})
        return {"id": run.id, "dir": str(Path(run.dir).parent), "mode": mode}
    finally:
        run.finish()


# -- files -------------------------------------------------------------------------------------------


def _write_files(folder: Path, summary, pick, decay, blocks, steps, runs, block_steps, zoom_base, dpi, prove
                 ) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")  # files only: never open a window, work without a display
    import matplotlib.pyplot as plt

    from lrscan.analysis import plots

    files: list[str] = []

    def save(ax, name: str) -> None:
        ax.figure.savefig(folder / name, dpi=dpi)
        plt.close(ax.figure)
        files.append(name)

    blocks.to_csv(folder / BLOCKS_FILE, index=False)
    files.append(BLOCKS_FILE)
    if pick is not None:
        save(plots.plot_loss_vs_lre(pick), FIGURES["range_lre"])
        save(plots.plot_loss_vs_lr(pick), FIGURES["range_lr"])
        pick.curve.to_csv(folder / "range_curve.csv", index=False)
        pick.per_run.to_csv(folder / "range_per_run.csv", index=False)
        files += ["range_curve.csv", "range_per_run.csv"]
        write_sweep_yaml(zoom_sweep(pick, steps=steps, runs=runs, base_yaml=zoom_base), folder / "zoom.yaml")
        files.append("zoom.yaml")
    if decay is not None:
        decay.table.to_csv(folder / "decay_table.csv", index=False)
        files.append("decay_table.csv")
        hue = "decay_steps" if "decay_steps" in decay.by else (decay.by[0] if decay.by else "config")
        style = next((c for c in decay.by if c != hue), None)
        fig, (full, late) = plt.subplots(1, 2, figsize=(15, 5.5), layout="constrained")
        plots.plot_block_means(decay.curves, hue=hue, style=style, block_steps=block_steps, ax=full)
        # the second half of training, where the decays differ; the first blocks dwarf it
        half = decay.curves["step_end"] > decay.curves["step_end"].max() / 2
        plots.plot_block_means(decay.curves.loc[half], hue=hue, style=style, block_steps=block_steps, ax=late)
        late.set_title("second half of training")
        save(full, FIGURES["blocks"])
        if len(decay.by) >= 2:
            both = {"decay_steps", "decay_lrs"} <= set(decay.by)
            index, columns = ("decay_steps", "decay_lrs") if both else decay.by[:2]
            grid = decay_grid(decay.table, index, columns, decay.metric)
            label = "final dev loss (nats)" if decay.metric == "final_dev_loss" else f"final block {decay.column}"
            save(plots.plot_decay_heatmap(grid, value_label=label), FIGURES["heatmap"])
    for i, result in enumerate(prove):
        suffix = f"_{i + 1}" if i else ""
        result.table.to_csv(folder / PROVE_TABLE.replace(".csv", f"{suffix}.csv"), index=False)
        files.append(PROVE_TABLE.replace(".csv", f"{suffix}.csv"))
        save(plots.plot_prove(result.table, steps=result.steps, judged_by=result.criterion_label(),
                              chosen=result.chosen),
             PROVE_FIGURE.replace(".png", f"{suffix}.png"))
    return files


def _markdown(summary: dict[str, Any], pick: ExponentPick | None, decay: DecaySummary | None, files: list[str],
              prove: Sequence[Judgement] = ()) -> str:
    c = summary["counts"]
    lines = [
        "# lrscan report",
        "",
        f"Source `{summary.get('source')}`, created {summary['created']}. Read {c['runs_read']} runs "
        f"({c['range_runs']} range tests, {c['decay_runs']} decay/constant runs), {c['steps_read']} steps; "
        f"{c['records_skipped']} unreadable records skipped.",
        "",
    ]
    if pick is not None:
        low, high = pick.best_lre_ci
        ci = f"[{low:.3f}, {high:.3f}]" if math.isfinite(low) else _no_ci_reason(pick.n_boot, pick.n_seeds)
        lines += [
            "## Range test",
            "",
            f"**Picked exponent: lre = {pick.best_lre:.3f} (lr = {pick.best_lr:.4g})**, "
            f"{pick.ci_level:.0%} CI {ci}; {pick.n_runs} runs over {pick.n_seeds} seeds, "
            f"lre bins of {pick.bin_width:.3g} decades.",
            "",
            f"How the CI was made: {ci_description(pick.ci_method)}.",
            "",
            markdown_table(pd.DataFrame({
                "suggester": list(pick.suggestions),
                "lre": list(pick.suggestions.values()),
                "lr": [10.0 ** lre for lre in pick.suggestions.values()],
            })),
            "",
            f"![loss vs lre]({FIGURES['range_lre']})",
            "",
            f"![loss vs lr]({FIGURES['range_lr']})",
            "",
            "Per run ([range_per_run.csv](range_per_run.csv)):",
            "",
            markdown_table(pick.per_run),
            "",
            "Zoom in: [zoom.yaml](zoom.yaml), a narrower range test around the pick "
            "(`lrscan sweep zoom.yaml`, or `wandb sweep zoom.yaml`).",
            "",
        ]
    if decay is not None:
        lines += [
            "## Step-decay grid",
            "",
            f"Best config: **{config_text(decay.best, decay.by)}**, {decay.metric} {decay.best['value']:.4g} "
            f"(lowest of {len(decay.table)}).",
            "",
            markdown_table(readable_table(decay.table, decay.by)),
            "",
            f"![block means]({FIGURES['blocks']})",
            "",
        ]
        if FIGURES["heatmap"] in files:
            lines += [f"![decay heatmap]({FIGURES['heatmap']})", ""]
    for i, result in enumerate(prove):
        figure = PROVE_FIGURE.replace(".png", f"_{i + 1}.png" if i else ".png")
        lines += [f"## Prove: {result.group}", "", *result.markdown(), f"![prove]({figure})", ""]
    if summary.get("runs"):
        lines += ["## Runs read", "", *[f"- {line}" for line in keys_lines(summary["runs"])], ""]
    lines += [
        "## Files",
        "",
        f"- [{SUMMARY_FILE}]({SUMMARY_FILE}): every number above, machine-readable",
        f"- [{BLOCKS_FILE}]({BLOCKS_FILE}): block means of log10 loss per run "
        f"({summary['blocks']['block_steps']} steps per block)",
        *[f"- [{f}]({f})" for f in files if f.endswith(".csv") and f != BLOCKS_FILE],
        "",
    ]
    if summary["problems"] or summary["notes"]:
        lines += ["## Problems and notes", "", *[f"- {p}" for p in [*summary["problems"], *summary["notes"]]], ""]
    return "\n".join(lines)


def _rows(steps: pd.DataFrame, which: pd.Series) -> pd.DataFrame:
    """steps.loc[which], without copying the frame when every row is wanted (a sweep of range tests)."""
    return steps if bool(which.all()) else steps.loc[which]


def with_first_problem(err: LrscanError, problems: Sequence[str], run_ids: pd.Series) -> LrscanError:
    """`err`, followed by the first problem of the runs it is about: often the real cause (a key not logged)."""
    ids = {str(r) for r in run_ids.unique()}
    first = next((p for p in problems if p.startswith("run ") and p[len("run "):].split(":", 1)[0] in ids), None)
    return LrscanError(f"{err} ({first})") if first else err


RUN_KEY_COLUMNS = ("run_id", "loss_key", "lr_key", "step_key", SCHEDULE, "schedule_from", "schedule_note")


def run_keys(runs: pd.DataFrame | None) -> list[dict[str, Any]]:
    """Per run: the logged keys its loss, lr and step came from, and its schedule and where that came from."""
    if runs is None or "loss_key" not in runs.columns:
        return []
    return frame_records(runs[[c for c in RUN_KEY_COLUMNS if c in runs.columns]])


def keys_lines(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """Runs that used the same keys, one line each: "loss from train/loss, lr from ..., step from ...: runs a, b"."""
    by_keys: dict[tuple, list[Mapping[str, Any]]] = {}
    by_guess: dict[str, list[Mapping[str, Any]]] = {}
    for r in records:
        by_keys.setdefault((r.get("loss_key"), r.get("lr_key"), r.get("step_key")), []).append(r)
        if r.get("schedule_from") == "lr trace":
            by_guess.setdefault(str(r.get(SCHEDULE)), []).append(r)
    lines = []
    for (loss, lr, step), group in by_keys.items():
        lines.append(f"loss from {_key_text(loss)}, lr from {_key_text(lr)}, step from {step or '_step'}: "
                     f"{_runs_text(group)}")
    for kind, group in by_guess.items():
        lines.append(f"schedule {kind}, read from the lr trace (no schedule in the config): "
                     f"{_runs_text(group, with_note=True)}")
    return lines


def _key_text(key: str | None) -> str:
    """A logged key as the runs table names it: with what it means where its name alone doesn't say (fastai's)."""
    if not key:
        return "(none)"
    return f"{key} ({KEY_MEANINGS[key]})" if key in KEY_MEANINGS else key


def _runs_text(records: Sequence[Mapping[str, Any]], with_note: bool = False) -> str:
    """ "2 runs (a, b)"; one run with its schedule note: "1 run (a: lr piecewise constant: ...)"."""
    ids = [str(r["run_id"]) for r in records]
    if len(ids) == 1 and with_note:
        return f"1 run ({ids[0]}: {records[0].get('schedule_note')})"
    shown = ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
    return f"{len(ids)} run{'s' if len(ids) != 1 else ''} ({shown})"


def config_text(best: Mapping[str, Any], by: Sequence[str]) -> str:
    """A decay config in words: ``decay_steps 9000, decay_lrs 0.001`` (its swept fields), not a dict."""
    if not by:
        return str(best.get("config", "all runs"))
    return ", ".join(f"{c} {value_label(best.get(c))}" for c in by)


def readable_table(table: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """The decay table for people: the swept fields as `value_label`s, the `config` column (their repeat) left out."""
    shown = table.drop(columns=["config"]) if by and "config" in table.columns else table.copy()
    for c in by:
        if c in shown.columns:
            shown[c] = shown[c].map(value_label)
    return shown


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-markdown table (hand-written: pandas' to_markdown needs the tabulate package)."""
    def cell(v: Any) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
            return ""
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v).replace("|", "\\|")

    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.astype(object).itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def _write_json(path: Path, value: Any) -> None:
    atomic_write_text(path, json.dumps(json_safe(value), indent=2, allow_nan=False) + "\n")


def adopt_unmarked_report(out_dir: str | os.PathLike) -> bool:
    """Mark a report written before reports carried a marker, when it holds nothing but report files.

    For a caller that owns the path (the study's report/range): its earlier report can then be
    replaced. Never for a user's --out: an unmarked folder there is not known to be ours.
    """
    out_dir = Path(out_dir)
    if not out_dir.is_dir() or (out_dir / MARKER_FILE).exists():
        return False
    entries = list(out_dir.iterdir())
    if not entries or not all(p.is_file() and p.name in REPORT_FILE_NAMES for p in entries):
        return False
    if not (out_dir / SUMMARY_FILE).is_file():
        return False
    _write_json(out_dir / MARKER_FILE, {"written_by": "lrscan analysis.report (adopted: written before markers)",
                                        "files": sorted(p.name for p in entries)})
    return True


def _shared_value(frame: pd.DataFrame, column: str) -> str | None:
    if column not in frame.columns:
        return None
    values = frame[column].dropna().astype(str).unique()
    return str(values[0]) if len(values) == 1 and values[0] else None


def default_out_dir(root: str | os.PathLike = "reports", name: str | None = None,
                    now: _dt.datetime | None = None) -> Path:
    """``reports/<name>-<UTC timestamp>``, or ``reports/<timestamp>``: a new folder per analysis."""
    stamp = (now or _dt.datetime.now(_dt.UTC)).strftime("%Y%m%d-%H%M%S")
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) if name else ""
    return Path(root) / (f"{safe}-{stamp}" if safe else stamp)


def summary_lines(report: Report) -> Sequence[str]:
    """The short text summary the CLI prints."""
    s = report.summary
    c = s["counts"]
    lines = [f"read {c['runs_read']} runs, {c['steps_read']} steps ({c['records_skipped']} records skipped)"]
    if s.get("best_lre") is not None:
        ci = s["best_lre_ci"]
        has_ci = ci and ci[0] is not None
        ci_text = f"[{ci[0]:.3f}, {ci[1]:.3f}]" if has_ci else _no_ci_reason(s["n_boot"], s["n_seeds"])
        lines.append(f"picked lre {s['best_lre']:.3f} (lr {s['best_lr']:.4g}), {s['ci_level']:.0%} CI {ci_text}, "
                     f"{s['n_runs']} range runs over {s['n_seeds']} seeds")
        lines.append(f"CI: {ci_description(s.get('ci_method'))}")
        lines.append(f"suggesters: min_loss {s['best_lre']:.3f}, steepest {s['steepest_lre']:.3f}, "
                     f"valley {s['valley_lre']:.3f}")
    else:
        lines.append("no range-test runs: no exponent picked")
    if s.get("decay"):
        d = s["decay"]
        lines.append(f"decay grid: best {config_text(d['best'], d['by'])} ({d['metric']} {d['best']['value']:.4g})")
    lines += [f"lr grid {p['group']}: {p['headline']} {p['opening']}" for p in s.get("prove") or []]
    lines += [f"runs: {line}" for line in keys_lines(s.get("runs") or [])]
    for p in s["problems"]:
        lines.append(f"problem: {p}")
    lines += [f"note: {n}" for n in s.get("notes") or []]
    lines.append(f"report: {report.out_dir}")
    return lines


def _no_ci_reason(n_boot: int, n_seeds: int) -> str:
    return "n/a (no bootstrap: --n-boot 0)" if not n_boot else f"n/a ({n_seeds} seed{'s' if n_seeds != 1 else ''})"

