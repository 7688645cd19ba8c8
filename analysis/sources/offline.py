"""Offline runs: find the run-*.wandb files, read them (pipeline.runlog), join the segments of resumed runs.

Reading is by key (the fast path of `pipeline.runlog`): first lrscan's own keys and the step
counters of other loggers; a run that logged none of lrscan's loss or lr keys is read again with the
other common names, and, when still lacking one, with every key it logged (the slow path), so that
Lightning's lr-<Optimizer> names are found and an error can say what the run did log.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from lrscan.analysis.columns import LOSS_NAMES, LR_NAMES, STEP_NAMES, choose_keys, logged_keys
from lrscan.analysis.judge import HELD_OUT_KEYS
from lrscan.analysis.sources.filters import Filters, LeftOut
from lrscan.analysis.sources.frame import DEFAULT_KEYS
from lrscan.pipeline.errors import LrscanError
from lrscan.pipeline.runlog import RunFile, read_files

RUN_FILE_GLOB = "run-*.wandb"
_FOLDER_STAMP = re.compile(r"-(\d{8}_\d{6})-")
EVERY_KEY = None  # read_run_file(path, None): every key whose values are numbers


def find_run_files(source: str | os.PathLike) -> list[Path]:
    """The run-*.wandb files of a folder (recursively), of a run folder, or the file itself."""
    path = Path(os.fspath(source))
    if not path.exists():
        raise LrscanError(f"no such file or folder: {path}")
    if path.is_file():
        if path.suffix != ".wandb":
            raise LrscanError(f"{path} is not a .wandb run file (expected run-<id>.wandb or a folder of runs)")
        return [path]
    if path == Path(".") and (path / "wandb").is_dir():
        path = path / "wandb"
    found = []
    for root, dirs, files in os.walk(path):
        # skip hidden folders (.venv, .git) and site-packages; symlinks such as latest-run are not followed
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in ("site-packages", "__pycache__"))
        found.extend(Path(root) / name for name in sorted(files) if name.startswith("run-") and name.endswith(".wandb"))
    return found


def load_offline(path: Path, filters: Filters, keys: list[str] | None, problems: list[str], *,
                 loss_key: str | None = None, lr_key: str | None = None,
                 workers: int | None = None) -> tuple[list[RunFile], int, LeftOut]:
    """The runs below `path` that pass `filters`, their resumed segments joined; and the records skipped.

    keys: the history keys to read, as they are; None: the loss, lr and step keys each run logged
    (see `analysis.columns`), found as the module's docstring says. workers: processes reading the
    files in parallel (None: one per core this process may use, when the files are big; 1: none).
    """
    files = find_run_files(path)
    if not files:
        raise LrscanError(f"no wandb runs in {path}: no {RUN_FILE_GLOB} file below it")
    first_keys = keys if keys is not None else list(dict.fromkeys(
        [*DEFAULT_KEYS, *STEP_NAMES, *(k for k in (loss_key, lr_key) if k is not None),
         *HELD_OUT_KEYS]))  # held-out losses: read so their last value is in the run's summary (analysis.judge)
    segments: list[RunFile] = []
    skipped = unreadable = 0
    for file, run in zip(files, read_files(files, first_keys, workers)):
        if isinstance(run, LrscanError):
            problems.append(f"skipped {run}")  # the message starts with the file's path
            unreadable += 1
            continue
        skipped += run.skipped_records
        if run.skipped_records:
            problems.append(f"{file}: {run.skipped_records} damaged record(s) skipped (bad checksum or framing)")
        if run.truncated and run.state != "running":
            problems.append(f"{file}: ends inside a record (killed while writing?); read up to step "
                            f"{int(run.history['step'][-1]) if len(run.history['step']) else 'none'}")
        segments.append(run)
    if unreadable == len(files):
        raise LrscanError(f"no readable wandb run in {path}: " + "; ".join(problems[:3]))
    left_out = LeftOut(filters)
    runs = [run for run in _merge_segments(segments, problems) if left_out.keep(run)]
    if keys is None:
        runs = [_with_other_names(run, segments, first_keys, loss_key, lr_key) for run in runs]
    return runs, skipped, left_out


def _with_other_names(run: RunFile, segments: list[RunFile], first_keys: list[str], loss_key: str | None,
                      lr_key: str | None) -> RunFile:
    """`run`, read again with more key names when lrscan's (or the named) keys gave no loss or no lr."""
    for more in ([*first_keys, *LOSS_NAMES, *LR_NAMES], EVERY_KEY):
        choice = choose_keys(logged_keys(run.history), loss_key=loss_key, lr_key=lr_key)
        if choice.loss is not None and choice.lr is not None:
            break
        parts = [s for s in segments if s.run_id == run.run_id]
        again = [part for part in read_files([Path(s.path) for s in parts], more) if isinstance(part, RunFile)]
        if len(again) == len(parts):  # its damage was named on the first read; not again
            run = _merge_segments(again, [])[0]
    return run


def _segment_order(run: RunFile) -> tuple[str, float, str]:
    """Resumed segments sort by the start stamp in their folder name, then by file time."""
    folder = os.path.basename(os.path.dirname(run.path))
    stamp = _FOLDER_STAMP.search(folder)
    try:
        mtime = os.path.getmtime(run.path)
    except OSError:
        mtime = 0.0
    return (stamp.group(1) if stamp else "", mtime, run.path)


def _merge_segments(segments: list[RunFile], problems: list[str]) -> list[RunFile]:
    """One RunFile per run id: the segments of a resumed run joined, the later segment winning."""
    by_id: dict[str, list[RunFile]] = {}
    for run in segments:
        by_id.setdefault(run.run_id, []).append(run)
    merged = []
    for run_id, parts in by_id.items():
        if len(parts) == 1:
            merged.append(parts[0])
            continue
        parts.sort(key=_segment_order)
        last = parts[-1]
        steps = np.concatenate([p.history["step"] for p in parts])
        # the last occurrence of each step (np.unique on the reversed steps gives first-of-reversed)
        _, first_rev = np.unique(steps[::-1], return_index=True)
        keep = len(steps) - 1 - first_rev
        duplicates = len(steps) - len(keep)
        history = {"step": steps[keep]}
        for key in dict.fromkeys(k for p in parts for k in p.history):  # segments read in other passes differ
            if key != "step":
                values = [p.history.get(key, np.full(len(p.history["step"]), np.nan)) for p in parts]
                history[key] = np.concatenate(values)[keep]
        nan_logged = {}
        for key in dict.fromkeys(k for p in parts for k in p.nan_logged):
            marks = np.concatenate([p.nan_logged.get(key, np.zeros(len(p.history["step"]), bool)) for p in parts])[keep]
            if marks.any():
                nan_logged[key] = marks
        config: dict = {}
        summary: dict = {}
        for p in parts:
            config.update(p.config)
            summary.update(p.summary)
        out = RunFile(
            path=last.path, run_id=run_id, name=last.name, project=last.project, entity=last.entity,
            group=last.group, tags=last.tags, job_type=last.job_type, sweep_id=last.sweep_id,
            config=config, summary=summary, exit_code=last.exit_code, state=last.state, history=history,
            nan_logged=nan_logged, skipped_records=sum(p.skipped_records for p in parts), truncated=last.truncated,
            start_time=parts[0].start_time,
        )
        if duplicates:
            problems.append(f"run {run_id}: {duplicates} step(s) logged by more than one of its {len(parts)} "
                            f"resumed segments; kept the later segment's values")
        merged.append(out)
    return merged
