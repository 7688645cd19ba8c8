"""Load every step of many runs into two pandas frames, from offline run folders or the W&B cloud.

    loaded = load_runs("wandb", group="lr_range")      # offline: a folder, a run folder or a .wandb file
    loaded = load_runs("me/lrscan", sweep="abc123")    # cloud: entity/project[/sweep_id]
    loaded.steps   # one row per (run, step): ids, config fields, step, lr, lre, loss, log10_loss, ...
    loaded.runs    # one row per run: ids, state, exit code, step counts, config, summary

Both sources give the same frames. `steps` is built for size (50 runs x 200k steps in well under
1.5 GiB): run ids, names, groups and sweeps are categoricals, and so are the TrainConfig columns,
whose values repeat on every row of a run (as plain int64/float64/object columns ~40 of them would
take ~3 GB at 10M rows). Their categories carry the typed values (int64, float64, bool, str; lists
as strings like "[100000]"), so `==`, `isin`, `groupby` and seaborn's `hue` work unchanged; use
`.astype(float)` for arithmetic, or the plain columns of `runs`. Losses are float32 (ample for
plotting and picking), lr and lre float64 (exact exponents).

The cloud path uses the Public API: `api.flush()`, `api.runs(path, filters=..., per_page=...,
lazy=False)` and, per run, `.id .name .group .tags .config .summary_metrics .state .sweep_name
.job_type .heartbeat_at .history_keys .scan_history(keys=..., page_size=...)`. It never calls
`run.history()`, which samples 500 rows. The W&B cloud cannot be reached from the test machines:
tests/test_sources.py runs it through wandb 0.31's own `Api`/`Runs`/`Run`/`HistoryScan` over a
fake of wandb-core and the server (tests/public_api_fakes.py), fed with real offline runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline import keys as K
from pipeline.config import field_names, field_types
from pipeline.errors import LrscanError
from pipeline.fsutil import atomic_file
from pipeline.runlog import STEP_ITEM, RunFile, read_run_file

# history keys read when the caller names none: the four per-step keys and the optional two
DEFAULT_KEYS = (*K.STEP_KEYS, K.SMOOTH_LOSS, K.DEV_LOSS)
OPTIONAL_KEYS = (K.SMOOTH_LOSS, K.DEV_LOSS)  # columns only when some run logged them
FLOAT64_KEYS = (K.LR, K.LRE)  # exact exponents; every other loss-like key fits float32
FLOAT32_KEYS = (K.LOSS, K.LOG10_LOSS, K.SMOOTH_LOSS, K.DEV_LOSS)
SUMMARY_ORDER = (
    K.TRAIN_LOSS, K.DEV_LOSS, K.TEST_LOSS, K.FINAL_STEP, K.STOP_STEP, K.STOP_REASON,
    K.DIVERGED_AT_STEP, K.BEST_SMOOTH_LOSS, K.STEPS_PER_SECOND,
)
INT_SUMMARY_KEYS = (K.FINAL_STEP, K.STOP_STEP, K.DIVERGED_AT_STEP)
RUN_FILE_GLOB = "run-*.wandb"
CACHE_ENV = "LRSCAN_CACHE"
SCAN_PAGE_STEPS = 10_000  # scan_history's page_size counts steps
WIDE_RUN_EXTRA_KEYS = 32  # more logged keys than this beyond the wanted ones: keyed scans, not keys=None
UNSETTLED_STATES = ("running", "pending", "preempting", "")
RUNS_PAGE_SIZE = 200
_CLOUD_PATH = re.compile(r"^[\w.-]+/[\w.-]+(/[\w.-]+)?$")
_FOLDER_STAMP = re.compile(r"-(\d{8}_\d{6})-")


@dataclass
class Loaded:
    steps: pd.DataFrame    # tidy: one row per (run, step)
    runs: pd.DataFrame     # one row per run
    skipped_records: int = 0   # over all files
    problems: list[str] = field(default_factory=list)  # one human line per file/run not (fully) read


def load_runs(
    source: str | os.PathLike = ".",
    *,
    group: str | None = None,
    sweep: str | None = None,
    tags: Sequence[str] | str = (),
    state: str | Sequence[str] | None = None,
    job_type: str | None = K.JOB_TRAIN,
    keys: Sequence[str] | None = None,
    api: Any = None,
    cache_dir: str | os.PathLike | None = None,
) -> Loaded:
    """Every step of the matching runs, as `Loaded(steps, runs, skipped_records, problems)`.

    source: a folder searched recursively for run-*.wandb ("." means ./wandb when it exists), one
    offline run folder, one .wandb file, or `entity/project[/sweep_id]` on the W&B cloud.
    Filters: group; sweep (a sweep id or a group key); tags (all must be present); state
    ('finished', 'crashed', 'running'; or several); job_type (None: all). keys: history keys to read
    (default lr, lre, loss, log10_loss, smooth_loss, dev_loss). api: a `wandb.Api` (cloud only;
    made when needed). cache_dir: where ended cloud runs are cached (default $LRSCAN_CACHE or
    ~/.cache/lrscan).

    Raises LrscanError for an unknown source, a source without runs, no run matching the filters,
    or runs none of which logged the wanted keys. A damaged file or run among good ones is skipped
    or read in part, and named in `problems`.
    """
    tags = (tags,) if isinstance(tags, str) else tuple(tags)
    states = (state,) if isinstance(state, str) else tuple(state) if state is not None else None
    wanted = list(dict.fromkeys(keys)) if keys is not None else list(DEFAULT_KEYS)
    filters = _Filters(group=group, sweep=sweep, tags=tags, states=states, job_type=job_type)
    problems: list[str] = []
    path = Path(os.fspath(source))
    if path.exists() or api is None and not _CLOUD_PATH.match(str(source)):
        runs, skipped = _load_offline(path, filters, wanted, problems)
        where = str(path)
    else:
        runs = _load_cloud(str(source), filters, wanted, api, cache_dir, problems)
        skipped, where = 0, str(source)
    if not runs:
        raise LrscanError(f"no runs in {where} match {filters.describe()}")
    return _build(runs, wanted, explicit_keys=keys is not None, skipped=skipped, problems=problems)


# -- filters ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Filters:
    group: str | None
    sweep: str | None
    tags: tuple[str, ...]
    states: tuple[str, ...] | None
    job_type: str | None

    def meta_ok(self, run: RunFile) -> bool:
        """The filters that need no history: group, sweep, tags, job_type."""
        if self.group is not None and run.group != self.group:
            return False
        if self.sweep is not None and self.sweep not in (run.sweep_id, run.group):
            return False
        if not set(self.tags) <= set(run.tags):
            return False
        return self.job_type is None or run.job_type == self.job_type

    def ok(self, run: RunFile) -> bool:
        return self.meta_ok(run) and (self.states is None or run.state in self.states)

    def describe(self) -> str:
        parts = [f"{name}={value!r}" for name, value in (("group", self.group), ("sweep", self.sweep),
                 ("tags", list(self.tags) or None), ("state", self.states), ("job_type", self.job_type)) if value]
        return ", ".join(parts) if parts else "(no filters)"

    def cloud_filters(self) -> dict[str, Any]:
        """The same filters in the Public API's MongoDB-style language (rechecked on each run)."""
        clauses: list[dict[str, Any]] = []
        if self.group is not None:
            clauses.append({"group": self.group})
        if self.sweep is not None:
            clauses.append({"$or": [{"sweep": self.sweep}, {"group": self.sweep}]})
        clauses.extend({"tags": tag} for tag in self.tags)
        if self.states is not None:
            clauses.append({"state": {"$in": list(self.states)}})
        if self.job_type is not None:
            clauses.append({"jobType": self.job_type})
        return {"$and": clauses} if clauses else {}


# -- offline -----------------------------------------------------------------------------------


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


def _load_offline(path: Path, filters: _Filters, wanted: list[str], problems: list[str]) -> tuple[list[RunFile], int]:
    files = find_run_files(path)
    if not files:
        raise LrscanError(f"no wandb runs in {path}: no {RUN_FILE_GLOB} file below it")
    segments: list[RunFile] = []
    skipped = unreadable = 0
    for file, run in zip(files, _read_all(files, wanted)):
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
        if filters.meta_ok(run):
            segments.append(run)
    if unreadable == len(files):
        raise LrscanError(f"no readable wandb run in {path}: " + "; ".join(problems[:3]))
    runs = _merge_segments(segments, problems)
    return [run for run in runs if filters.ok(run)], skipped


def _read_one(path: Path, wanted: list[str]) -> RunFile | LrscanError:
    try:
        return read_run_file(path, wanted)
    except LrscanError as err:
        return err


def _read_all(files: list[Path], wanted: list[str]) -> list[RunFile | LrscanError]:
    # one process on purpose: worker processes (forkserver) measured slower here on 2 busy cores
    return [_read_one(f, wanted) for f in files]


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
            _report_gaps(run_id, parts[0].history["step"], problems)
            continue
        parts.sort(key=_segment_order)
        last = parts[-1]
        steps = np.concatenate([p.history["step"] for p in parts])
        # the last occurrence of each step (np.unique on the reversed steps gives first-of-reversed)
        _, first_rev = np.unique(steps[::-1], return_index=True)
        keep = len(steps) - 1 - first_rev
        duplicates = len(steps) - len(keep)
        history = {"step": steps[keep]}
        for key in last.history:
            if key != "step":
                history[key] = np.concatenate([p.history.get(key, np.full(len(p.history["step"]), np.nan)) for p in parts])[keep]
        config: dict = {}
        summary: dict = {}
        for p in parts:
            config.update(p.config)
            summary.update(p.summary)
        out = RunFile(
            path=last.path, run_id=run_id, name=last.name, project=last.project, entity=last.entity,
            group=last.group, tags=last.tags, job_type=last.job_type, sweep_id=last.sweep_id,
            config=config, summary=summary, exit_code=last.exit_code, state=last.state, history=history,
            skipped_records=sum(p.skipped_records for p in parts), truncated=last.truncated,
            start_time=parts[0].start_time,
        )
        if duplicates:
            problems.append(f"run {run_id}: {duplicates} step(s) logged by more than one of its {len(parts)} "
                            f"resumed segments; kept the later segment's values")
        _report_gaps(run_id, history["step"], problems)
        merged.append(out)
    return merged


def _report_gaps(run_id: str, steps: np.ndarray, problems: list[str]) -> None:
    """Name a history with holes (steps that were never logged, e.g. a segment lost before it was
    written): they stay "not measured" in the analysis, but a user should know."""
    if len(steps) < 2:
        return
    ordered = np.sort(steps)
    holes = np.flatnonzero(np.diff(ordered) > 1)
    if len(holes):
        missing = int(ordered[-1] - ordered[0] + 1 - len(np.unique(ordered)))
        problems.append(f"run {run_id}: {missing} step(s) missing from its history, the first after step "
                        f"{int(ordered[holes[0]])}")


# -- cloud -------------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "lrscan")


def _load_cloud(source: str, filters: _Filters, wanted: list[str], api: Any, cache_dir: Any,
                problems: list[str]) -> list[RunFile]:
    if not _CLOUD_PATH.match(source):
        raise LrscanError(f"no such file or folder, and not a W&B path entity/project[/sweep_id]: {source}")
    entity, project, *rest = source.split("/")
    if rest:
        filters = _Filters(group=filters.group, sweep=rest[0], tags=filters.tags, states=filters.states,
                           job_type=filters.job_type)
    if api is None:
        import wandb  # only the cloud path needs it; constructing Api checks the credentials

        try:
            api = wandb.Api(timeout=30)
        except Exception as err:  # wandb raises several types for a missing key or no network
            raise LrscanError(f"{source}: no such file or folder, and the W&B cloud cannot be reached: {err}") from None
    cache = Path(os.fspath(cache_dir)) if cache_dir is not None else default_cache_dir()
    try:
        # a wandb.Api keeps every listing it made and hands it out again: forget them, or a run
        # that finished (or was resumed) since an earlier call would come back as it was then
        flush = getattr(api, "flush", None)
        if callable(flush):
            flush()
        # lazy=False: config, summary and history keys come with the listing, not a request per run
        listed = api.runs(f"{entity}/{project}", filters=filters.cloud_filters(), per_page=RUNS_PAGE_SIZE, lazy=False)
        cloud_runs = list(listed)
    except Exception as err:  # the Public API raises its own CommError/ValueError types
        raise LrscanError(f"cannot list the runs of {entity}/{project}: {err}") from None
    out = []
    for run in cloud_runs:
        meta = _cloud_meta(run, entity, project)
        if not filters.ok(meta):
            continue
        try:
            meta.history = _cloud_history(run, meta, wanted, cache, problems)
        except Exception as err:  # one bad run must not sink the others
            problems.append(f"run {meta.run_id}: history not read: {err}")
            continue
        # as offline (read_run_file): a logged key's summary is its last logged value, unless the run
        # set it; a run synced from offline holds only what lrscan set, so the frames match either way
        meta.summary = {**_last_values(meta.history), **meta.summary}
        out.append(meta)
    return out


def _last_values(history: dict[str, np.ndarray]) -> dict[str, float]:
    out = {}
    for key, values in history.items():
        present = np.flatnonzero(~np.isnan(values)) if key != "step" else ()
        if len(present):
            out[key] = float(values[present[-1]])
    return out


def _cloud_meta(run: Any, entity: str, project: str) -> RunFile:
    sweep_id = getattr(run, "sweep_name", None) or getattr(getattr(run, "sweep", None), "id", None) or ""
    config = {k: (v.get("value") if isinstance(v, dict) and set(v) == {"value"} else v)
              for k, v in dict(run.config or {}).items() if not k.startswith("_")}
    summary = {k: v for k, v in dict(run.summary_metrics or {}).items() if not k.startswith("_")}
    state = str(getattr(run, "state", "") or "")
    exit_code = None
    if state == "finished":
        exit_code = 0
    return RunFile(
        path=f"{entity}/{project}/{run.id}", run_id=str(run.id), name=str(getattr(run, "name", "") or run.id),
        project=project, entity=entity, group=str(getattr(run, "group", "") or ""),
        tags=tuple(getattr(run, "tags", ()) or ()), job_type=str(getattr(run, "job_type", "") or ""),
        sweep_id=str(sweep_id), config=config, summary=summary, exit_code=exit_code, state=state,
    )


def _cloud_stamp(run: Any) -> str:
    for attr in ("heartbeat_at", "updated_at", "created_at"):
        value = getattr(run, attr, None)
        if value:
            return re.sub(r"[^0-9A-Za-z]", "", str(value))
    return ""


def _cloud_history(run: Any, meta: RunFile, wanted: list[str], cache: Path,
                   problems: list[str]) -> dict[str, np.ndarray]:
    """Every step of the wanted keys, via scan_history; from the cache for a run that ended.

    What to read comes from what the run says it logged (`run.history_keys`, fetched with the
    `lazy=False` listing), never from its summary: lrscan's runs derive their summary on the server
    (`x_server_side_derived_summary`), so a run synced from offline holds only train_loss,
    dev_loss, ... there. A history that comes back short of what the run lists is not cached.
    """
    logged = _logged_counts(run)
    to_read = [k for k in wanted if logged is None or k in logged]
    stamp = _cloud_stamp(run)
    keys_hash = hashlib.sha1(json.dumps(wanted).encode()).hexdigest()[:10]
    # a run that ended (finished, crashed, failed, killed) no longer changes unless resumed, which
    # moves its heartbeat, so the stamp keys the cache
    cacheable = bool(stamp) and meta.state not in UNSETTLED_STATES
    base = cache / meta.entity / meta.project / f"{meta.run_id}-{stamp}-{keys_hash}"
    if cacheable:
        cached = _cache_read(base)
        if cached is not None:
            return cached
    if not to_read:  # the run says it logged none of them (an analysis run, an empty history)
        return {"step": np.zeros(0, np.int64), **{k: np.zeros(0, np.float64) for k in wanted}}
    columns: dict[str, dict[int, float]] = {k: {} for k in wanted}
    all_steps: set[int] = set()
    for keys in _scan_passes(run, to_read, logged):
        read = to_read if keys is None else keys
        for row in run.scan_history(keys=keys if keys is None else [STEP_ITEM, *keys], page_size=SCAN_PAGE_STEPS):
            step = row.get(STEP_ITEM)
            if step is None:
                continue
            step = int(step)
            all_steps.add(step)
            for key in read:
                value = row.get(key)
                if value is not None:  # None: not logged at this step (a null parquet cell)
                    columns[key][step] = _cloud_number(value)
    steps = np.array(sorted(all_steps), np.int64)
    history = {"step": steps}
    for key in wanted:
        values = columns[key]
        history[key] = np.array([values.get(int(s), np.nan) for s in steps], np.float64)
    if not cacheable:
        return history
    if logged is None:
        short = "no rows at all" if not len(steps) else ""
    else:
        short = ", ".join(f"{len(columns[k])} of the {logged[k]} values of {k} it lists" for k in to_read
                          if len(columns[k]) < logged[k])
    if short:
        # never cached: a history read while W&B was still exporting it would come back on every call
        problems.append(f"run {meta.run_id}: scan_history returned {short}; not cached, read again next time")
    else:
        _cache_write(base, history)
    return history


def _logged_counts(run: Any) -> dict[str, int] | None:
    """{key: number of steps that logged it} from `run.history_keys`, or None if the run does not say.

    The server's `historyKeys` is {"keys": {name: {"typeCounts": [{"type": "number", "count": n}, ...],
    ...}}, "lastStep": n}; wandb 0.31 hands it over as parsed JSON (text in some replies, so both).
    """
    raw = getattr(run, "history_keys", None)  # absent from a lazy listing: then read the wanted keys
    if isinstance(raw, (str, bytes)):
        try:
            raw = json.loads(raw)
        except ValueError:
            return None
    keys = raw.get("keys") if isinstance(raw, dict) else None
    if not isinstance(keys, dict):
        return None
    counts = {}
    for name, info in keys.items():
        type_counts = info.get("typeCounts") if isinstance(info, dict) else None
        counts[str(name)] = sum(int(t.get("count") or 0) for t in type_counts or () if isinstance(t, dict))
    return counts


def _scan_passes(run: Any, to_read: list[str], logged: dict[str, int] | None) -> list[list[str] | None]:
    """The scan_history calls that read `to_read` without losing a row: None means keys=None.

    `scan_history(keys=[...])` may drop every row that lacks one of the keys: wandb-core serves a
    run's live (not yet exported) steps with the backend's `sampledHistory`, which returns only the
    rows holding all requested keys, and 0.31 documents that rule for the whole scan. dev_loss is
    logged on eval steps only, so asking for it with the per-step keys would keep just the eval
    steps. keys=None returns every row with every column (wandb-core then downloads the run's whole
    parquet export once, into its own cache): one pass, no row lost. lrscan runs log a handful of
    keys, so that is the pass. For a wide run (many more logged keys than needed) that download
    would be mostly waste: then one keyed pass for the keys logged at every step, and one per key
    logged on some steps only.
    """
    if logged is None or sum(not k.startswith("_") and k not in to_read for k in logged) <= WIDE_RUN_EXTRA_KEYS:
        return [None]
    rows = logged.get(STEP_ITEM) or getattr(run, "history_line_count", None)
    dense = [k for k in to_read if rows and logged.get(k) == rows]
    return ([dense] if dense else []) + [[k] for k in to_read if k not in dense]


def _cloud_number(value: Any) -> float:
    if value is None:
        return np.nan
    try:
        return float(value)  # also "NaN" / "Infinity" strings
    except (TypeError, ValueError):
        return np.nan


def _have_pyarrow() -> bool:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    return True


def _cache_read(base: Path) -> dict[str, np.ndarray] | None:
    for suffix in (".parquet", ".pkl"):
        path = base.with_name(base.name + suffix)
        if not path.is_file():
            continue
        try:
            frame = pd.read_parquet(path) if suffix == ".parquet" else pd.read_pickle(path)
        except Exception:  # a torn or foreign cache file: read the run again
            return None
        return {column: frame[column].to_numpy() for column in frame.columns}
    return None


def _cache_write(base: Path, history: dict[str, np.ndarray]) -> None:
    """Parquet when pyarrow is installed, else pickle; written to a temp name, then renamed."""
    frame = pd.DataFrame(history)
    suffix = ".parquet" if _have_pyarrow() else ".pkl"
    path = base.with_name(base.name + suffix)
    try:
        with atomic_file(path, "wb") as f:
            if suffix == ".parquet":
                frame.to_parquet(f)
            else:
                frame.to_pickle(f, protocol=pickle.HIGHEST_PROTOCOL)
    except OSError:
        pass  # a cache that cannot be written only costs speed next time


# -- frames --------------------------------------------------------------------------------


def _build(runs: list[RunFile], wanted: list[str], *, explicit_keys: bool, skipped: int, problems: list[str]) -> Loaded:
    runs = sorted(runs, key=lambda r: r.run_id)
    for run in runs:
        _sort_by_step(run)
    logged = {k: any(np.any(~np.isnan(r.history.get(k, _EMPTY))) for r in runs) for k in wanted}
    expected = wanted if explicit_keys else list(K.STEP_KEYS)
    if not any(logged.get(k) for k in expected):
        why = f" ({'; '.join(problems[:2])})" if problems else ""
        raise LrscanError(f"none of the {len(runs)} matching runs logged any of {', '.join(expected)}: "
                          f"not lrscan training runs? (keys read: {', '.join(wanted)}){why}")
    for run in runs:
        missing = [k for k in expected if not np.any(~np.isnan(run.history.get(k, _EMPTY)))]
        if missing:
            problems.append(f"run {run.run_id}: no values logged for {', '.join(missing)}")
    value_keys = [k for k in wanted if explicit_keys or k not in OPTIONAL_KEYS or logged[k]]
    config_fields = [f for f in field_names() if any(f in r.config for r in runs)]
    # TrainConfig has fields named like frame columns (run_id, lr): there the column wins
    step_taken = {*K.ID_COLUMNS, K.STEP_COLUMN, *value_keys}
    return Loaded(
        steps=_steps_frame(runs, value_keys, [f for f in config_fields if f not in step_taken]),
        runs=_runs_frame(runs, [f for f in config_fields if f not in RUN_COLUMNS]),
        skipped_records=skipped,
        problems=problems,
    )


_EMPTY = np.zeros(0)
RUN_COLUMNS = ("run_id", "run_name", "group", "sweep", "tags", "job_type", "state", "exit_code", "path",
               "n_steps", "first_step", "last_step")


def _sort_by_step(run: RunFile) -> None:
    steps = run.history.get("step")
    if steps is None:
        run.history = {"step": np.zeros(0, np.int64)}
        return
    if len(steps) > 1 and not np.all(steps[1:] > steps[:-1]):
        # keep the last row of a repeated step, as wandb's own summary would
        _, first_rev = np.unique(steps[::-1], return_index=True)
        order = len(steps) - 1 - first_rev
        run.history = {k: v[order] for k, v in run.history.items()}


def _value_dtype(key: str) -> np.dtype:
    return np.dtype(np.float32) if key in FLOAT32_KEYS else np.dtype(np.float64)


def _typed(value: Any, tp: Any) -> Any:
    """A config value as the TrainConfig field type (whole floats come back from JSON as ints)."""
    if value is None:
        return None
    try:
        if typing.get_origin(tp) is tuple:
            inner = typing.get_args(tp)[0]
            items = value if isinstance(value, (list, tuple)) else [value]
            return json.dumps([_typed(v, inner) for v in items])
        if tp is bool:
            flag = parse_bool(value)
            return flag if flag is not None else str(value)  # an odd value: shown as given, not guessed
        if tp is int:
            return int(value) if float(value).is_integer() else float(value)
        if tp is float:
            return float(value)
        if tp is str:
            return str(value)
    except (TypeError, ValueError):
        pass
    return str(value)  # an odd value from an older run: shown, not dropped


_TRUE_WORDS = ("true", "1")
_FALSE_WORDS = ("false", "0")


def parse_bool(value: Any) -> bool | None:
    """A config flag as a bool: True/False, 1/0 and the strings "True"/"true"/"1", "False"/"false"/"0"
    (a sweep's `--flag=False` or a hand-written config); None for anything else. Not `bool(value)`,
    for which the string "False" is True."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
    return None


def _category_dtype(tp: Any) -> Any:
    if tp is int:
        return np.int64
    if tp is float:
        return np.float64
    if tp is bool:
        return bool
    return None  # strings: pandas' default string dtype


def _categorical(per_run: list[Any], lengths: np.ndarray, dtype: Any = None) -> pd.Categorical:
    """A categorical column with one value per run repeated over its rows, built from codes."""
    present = [v for v in per_run if v is not None and not (isinstance(v, float) and np.isnan(v))]
    try:
        categories = sorted(set(present))
    except TypeError:  # mixed types (an odd old run): keep them as strings
        per_run = [None if v is None else str(v) for v in per_run]
        categories = sorted({v for v in per_run if v is not None})
        dtype = None
    if dtype is not None and any(type(c) is float for c in categories) and dtype is np.int64:
        dtype = np.float64  # an int field holding a non-whole value somewhere
    kinds = {bool: (bool,), np.int64: (int,), np.float64: (int, float)}.get(dtype, ())
    if kinds and not all(isinstance(c, kinds) and (dtype is bool or not isinstance(c, bool)) for c in categories):
        dtype = None  # an odd value kept as given (a string): the field's dtype would change it
    index = pd.Index(categories, dtype=dtype) if categories else pd.Index([], dtype=dtype or object)
    code_of = {v: i for i, v in enumerate(categories)}
    codes = np.array([code_of.get(v, -1) if v is not None else -1 for v in per_run], np.int32)
    return pd.Categorical.from_codes(np.repeat(codes, lengths), dtype=pd.CategoricalDtype(index))


def _steps_frame(runs: list[RunFile], value_keys: list[str], config_fields: list[str]) -> pd.DataFrame:
    lengths = np.array([len(r.history["step"]) for r in runs], np.int64)
    types = field_types()
    columns: dict[str, Any] = {
        "run_id": _categorical([r.run_id for r in runs], lengths),
        "run_name": _categorical([r.name for r in runs], lengths),
        "group": _categorical([r.group for r in runs], lengths),
        "sweep": _categorical([r.sweep_id for r in runs], lengths),
    }
    for name in config_fields:
        tp = types[name]
        columns[name] = _categorical([_typed(r.config.get(name), tp) for r in runs], lengths, _category_dtype(tp))
    columns[K.STEP_COLUMN] = np.concatenate([r.history["step"] for r in runs]).astype(np.int64, copy=False)
    for key in value_keys:
        dtype = _value_dtype(key)
        out = np.empty(int(lengths.sum()), dtype)
        at = 0
        for run, n in zip(runs, lengths):
            values = run.history.get(key)
            out[at : at + n] = values if values is not None else np.nan
            at += n
        columns[key] = out
    return pd.DataFrame(columns, copy=False)


def _runs_frame(runs: list[RunFile], config_fields: list[str]) -> pd.DataFrame:
    types = field_types()
    rows = []
    summary_keys: dict[str, None] = dict.fromkeys(k for k in SUMMARY_ORDER if any(k in r.summary for r in runs))
    summary_keys.update(dict.fromkeys(sorted({k for r in runs for k in r.summary if not k.startswith("_")})))
    for run in runs:
        steps = run.history["step"]
        row = {
            "run_id": run.run_id, "run_name": run.name, "group": run.group, "sweep": run.sweep_id,
            "tags": ",".join(run.tags), "job_type": run.job_type, "state": run.state,
            "exit_code": run.exit_code, "path": run.path, "n_steps": len(steps),
            "first_step": int(steps[0]) if len(steps) else None,
            "last_step": int(steps[-1]) if len(steps) else None,
        }
        row.update({name: _typed(run.config.get(name), types[name]) for name in config_fields})
        row.update({key: run.summary.get(key) for key in summary_keys if key not in row})
        rows.append(row)
    frame = pd.DataFrame(rows)
    frame = frame.astype({"exit_code": "Int64", "first_step": "Int64", "last_step": "Int64", "n_steps": "int64"})
    for name in config_fields:
        frame[name] = _plain_column(frame[name], _category_dtype(types[name]))
    for key in summary_keys:
        if key in frame and key not in config_fields:
            frame[key] = _plain_column(frame[key], np.int64 if key in INT_SUMMARY_KEYS else None)
    return frame


def _plain_column(column: pd.Series, dtype: Any) -> pd.Series:
    """Typed run-level values: ints (nullable when some run lacks them), floats, bools, strings."""
    values = [v for v in column if v is not None and not (isinstance(v, float) and np.isnan(v))]
    if dtype is np.int64 or (dtype is None and values and all(isinstance(v, int) and not isinstance(v, bool) for v in values)):
        if all(isinstance(v, (int, float)) and float(v).is_integer() for v in values):
            return column.astype("Int64")
        return column.astype("float64")
    if dtype is np.float64 or (values and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)):
        return column.astype("float64")
    if values and all(isinstance(v, bool) for v in values):  # a flag given as a string stays a string
        return column.astype("boolean") if len(values) < len(column) else column.astype(bool)
    if values and all(isinstance(v, str) for v in values):
        return column.astype("str")
    return column
