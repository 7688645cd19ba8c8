"""The W&B cloud through the Public API: list the runs, scan every step of their history, cache ended runs.

Calls: `api.flush()`, `api.runs(path, filters=..., per_page=..., lazy=False)` and, per run, `.id .name
.group .tags .config .summary_metrics .state .sweep_name .job_type .heartbeat_at .history_keys
.scan_history(keys=..., page_size=...)`; never `run.history()`, which samples 500 rows. Which keys to
scan comes from the run's `history_keys` (the loss, lr and step keys `analysis.columns` chooses from
them, as offline); a run that does not list its keys is scanned whole. When the server's filters
leave nothing, one small listing (`len(api.runs(path, per_page=1))`) counts the project's runs for
the error message.

At scale the cloud fails now and then: a 429, a 5xx, a dropped connection, a timeout. Each is tried
again (`Retry`): a history scan goes on from the step after the last row it read, the waits back off
with a floor (a `Retry-After: 0` is not five immediate tries), and one deadline bounds all the
retries of a load, however many runs it reads.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from lrscan.analysis.columns import choose_keys, keys_to_read
from lrscan.analysis.sources.filters import Filters, LeftOut
from lrscan.analysis.sources.frame import OPTIONAL_KEYS
from lrscan.pipeline.errors import LrscanError
from lrscan.pipeline.fsutil import atomic_file
from lrscan.pipeline.runlog import STEP_ITEM, RunFile, last_logged

CACHE_ENV = "LRSCAN_CACHE"
SCAN_PAGE_STEPS = 10_000  # scan_history's page_size counts steps
WIDE_RUN_EXTRA_KEYS = 32  # more logged keys than this beyond the wanted ones: keyed scans, not keys=None
UNSETTLED_STATES = ("running", "pending", "preempting", "")
RUNS_PAGE_SIZE = 200
CACHE_FORMAT = 2  # 2: the rows logged as NaN are kept (columns NAN_LOGGED_PREFIX + key)
NAN_LOGGED_PREFIX = "__nan_logged__/"
CLOUD_PATH = re.compile(r"^[\w.-]+/[\w.-]+(/[\w.-]+)?$")


_T = TypeVar("_T")
RETRY_STATUSES = frozenset((429, *range(500, 600)))  # rate limited, or the server's own trouble
# wandb-core (Go) reports a failed transport as an API error with no HTTP status and Go's words
_TRANSPORT_TROUBLE = re.compile(
    r"timed? ?out|deadline exceeded|did not respond in time|connection (?:refused|reset|aborted|closed)"
    r"|broken pipe|\bEOF\b|no such host|network is unreachable|temporary failure in name resolution",
    re.IGNORECASE)


@dataclass(frozen=True)
class Retry:
    """How a listing or a history scan that meets a 429, a 5xx, a lost connection or a timeout is tried
    again: at most `attempts` tries in a row without progress (a history scan that read rows since its
    last failure starts counting again), waiting the backoff, `first_wait_seconds` doubling each
    time up to `max_wait_seconds`, or the reply's Retry-After when that is longer (a `Retry-After: 0`
    still waits the backoff); and no retry at all once `deadline_seconds` from the start of the load
    would pass, whatever run it is for. `sleep` and `clock` are injectable so tests need not wait."""

    attempts: int = 5
    first_wait_seconds: float = 2.0
    max_wait_seconds: float = 60.0
    deadline_seconds: float = 600.0
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic

    def wait_seconds(self, attempt: int, retry_after: float | None) -> float:
        """The wait after failed try number `attempt` (1-based) in a row."""
        backoff = min(self.first_wait_seconds * 2 ** (attempt - 1), self.max_wait_seconds)
        if retry_after is None:
            return backoff
        return min(max(retry_after, backoff), self.max_wait_seconds)

    def deadline(self) -> Deadline:
        """The one deadline of a whole load: every retry of its listing and of all its scans."""
        return Deadline(self.clock() + self.deadline_seconds, self.deadline_seconds)


@dataclass(frozen=True)
class Deadline:
    """When the retries of one load stop (by `Retry.clock`), and how long it allowed."""

    ends_at: float
    seconds: float


class GaveUp(Exception):
    """A request still failing after its last try, or when the load's deadline came; its message says so."""


def http_status(err: BaseException) -> tuple[int | None, float | None]:
    """(HTTP status, Retry-After seconds) of an error the Public API raised, from its chain.

    wandb 0.31 raises `CommError(message, exc)` around `requests.HTTPError` (its `response` has the
    status and headers) or around wandb-core's `WandbApiFailedError` (its `response.http_status`).
    """
    for e in _chain(err):
        response = getattr(e, "response", None)
        status = getattr(response, "status_code", None) or getattr(response, "http_status", None)
        if isinstance(status, int) and status:
            headers = getattr(response, "headers", None) or {}
            return status, _retry_after_seconds(headers.get("Retry-After") if hasattr(headers, "get") else None)
    return None, None


def transient(err: BaseException) -> tuple[str, float | None] | None:
    """What makes `err` worth another try ("HTTP 503", "connection lost", "timed out") and the server's
    Retry-After; None for an error that would come back the same (403, 404, a bad reply)."""
    status, retry_after = http_status(err)
    if status is not None:
        return (f"HTTP {status}", retry_after) if status in RETRY_STATUSES else None
    for e in _chain(err):
        # requests' ConnectionError and Timeout are OSErrors; builtin ConnectionError/TimeoutError too
        name = type(e).__name__
        if isinstance(e, TimeoutError) or name in ("Timeout", "ReadTimeout", "ConnectTimeout", "ReadTimeoutError"):
            return "timed out", None
        if isinstance(e, ConnectionError) or name in ("ConnectionError", "ProtocolError", "NewConnectionError",
                                                      "MaxRetryError", "ChunkedEncodingError"):
            return "connection lost", None
    if _TRANSPORT_TROUBLE.search(str(err)):
        return "connection lost", None
    return None


def _chain(err: BaseException) -> list[BaseException]:
    """`err` and every exception it wraps (`exc`, as wandb's CommError holds it; cause; context)."""
    seen: set[int] = set()
    out: list[BaseException] = []
    todo: list[BaseException | None] = [err]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        out.append(e)
        todo += [getattr(e, "exc", None), e.__cause__, e.__context__]
    return out


def _retry_after_seconds(value: Any) -> float | None:
    """Retry-After as seconds: a number of seconds, or an HTTP date."""
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        pass
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(str(value))
    except (TypeError, ValueError):
        return None
    return when.timestamp() - time.time()


def with_retries(call: Callable[[], _T], retry: Retry, deadline: Deadline | None = None,
                 before_retry: Callable[[], None] | None = None, progress: Callable[[], int] | None = None) -> _T:
    """`call()`, tried again after a transient failure as `retry` says, within `deadline` (None: one of
    its own); GaveUp when it still fails. `progress()`: a count that grows while `call` gets somewhere
    (rows read); a failure after progress starts the count of tries in a row again."""
    deadline = deadline or retry.deadline()
    waited = 0.0
    attempt = 0
    done = progress() if progress is not None else 0
    while True:
        attempt += 1
        try:
            return call()
        except Exception as err:
            why = transient(err)
            if why is None:
                raise
            cause, retry_after = why
            if progress is not None and progress() != done:
                done, attempt = progress(), 1
            if attempt >= retry.attempts:
                raise GaveUp(f"{_first_line(err)} ({cause}; gave up after {attempt} tries in a row over "
                             f"{waited:.0f} s)") from err
            seconds = retry.wait_seconds(attempt, retry_after)
            if retry.clock() + seconds > deadline.ends_at:
                raise GaveUp(f"{_first_line(err)} ({cause}; gave up: the {deadline.seconds:.0f} s this load "
                             f"allows for retries are spent)") from err
            retry.sleep(seconds)
            waited += seconds
            if before_retry is not None:
                before_retry()


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "lrscan")


def load_cloud(source: str, filters: Filters, keys: list[str] | None, api: Any, cache_dir: Any, problems: list[str],
               *, loss_key: str | None = None, lr_key: str | None = None,
               retry: Retry = Retry()) -> tuple[list[RunFile], LeftOut]:
    """The runs of `entity/project[/sweep_id]` that pass `filters`, with every step of their history.

    keys: the history keys to read, as they are; None: the loss, lr and step keys each run logged
    (chosen from its `history_keys` as `analysis.columns` says) and the optional lrscan keys.
    A 429 or 5xx while listing or scanning is tried again as `retry` says. A run whose history
    cannot be read is named in `problems` and the others are read; when none can be, the first
    one's cause is the error.
    """
    if not CLOUD_PATH.match(source):
        raise LrscanError(f"no such file or folder, and not a W&B path entity/project[/sweep_id]: {source}")
    entity, project, *rest = source.split("/")
    if rest:
        filters = Filters(group=filters.group, sweep=rest[0], tags=filters.tags, states=filters.states,
                           job_type=filters.job_type)
    if api is None:
        import wandb  # only the cloud path needs it; constructing Api checks the credentials

        try:
            api = wandb.Api(timeout=30)
        except Exception as err:  # wandb raises several types for a missing key or no network
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise LrscanError(f"{source}: not a file or folder, and the W&B cloud cannot be reached: {first}") from None
    cache = Path(os.fspath(cache_dir)) if cache_dir is not None else default_cache_dir()
    # a wandb.Api keeps every listing it made and hands it out again: forget them, or a run
    # that finished (or was resumed) since an earlier call would come back as it was then
    flush = getattr(api, "flush", None)
    forget = flush if callable(flush) else None

    def listing() -> list[Any]:
        # lazy=False: config, summary and history keys come with the listing, not a request per run
        return list(api.runs(f"{entity}/{project}", filters=filters.cloud_filters(), per_page=RUNS_PAGE_SIZE,
                             lazy=False))

    deadline = retry.deadline()  # one for the whole load: the listing and every run's scans
    try:
        if forget is not None:
            forget()
        cloud_runs = with_retries(listing, retry, deadline, before_retry=forget)
    except Exception as err:  # the Public API raises its own CommError/ValueError types
        raise LrscanError(f"cannot list the runs of {entity}/{project}: {err}") from None
    out = []
    unread = []
    left_out = LeftOut(filters)
    for run in cloud_runs:
        meta = _cloud_meta(run, entity, project)
        if not left_out.keep(meta):
            continue
        try:
            logged = _logged_counts(run)
            wanted = keys if keys is not None else _keys_for(logged, loss_key, lr_key)
            meta.history = _cloud_history(run, meta, wanted, logged, cache, problems, partial(
                with_retries, retry=retry, deadline=deadline))
        except Exception as err:  # one bad run must not sink the others
            unread.append(f"run {meta.run_id}: history not read: {_first_line(err)}")
            continue
        # as offline (read_run_file): a logged key's summary is its last logged value, unless the run
        # set it; a run synced from offline holds only what lrscan set, so the frames match either way
        meta.summary = {**last_logged(meta.history, meta.nan_logged), **meta.summary}
        out.append(meta)
    problems += unread
    if not out and unread:
        more = f" (and {len(unread) - 1} more run(s) like it)" if len(unread) > 1 else ""
        raise LrscanError(f"{entity}/{project}: {unread[0]}{more}")
    if not out and not left_out.seen:
        left_out.seen = _count_runs(api, f"{entity}/{project}")  # the server's filters hid them all
    return out, left_out


def _keys_for(logged: dict[str, int] | None, loss_key: str | None, lr_key: str | None) -> list[str] | None:
    """The keys to scan for a run that lists what it logged; None (every key) for one that does not say."""
    if logged is None:
        return None
    choice = choose_keys([k for k, n in logged.items() if n], loss_key=loss_key, lr_key=lr_key)
    return keys_to_read(choice, [k for k in OPTIONAL_KEYS if logged.get(k)])


def _count_runs(api: Any, path: str) -> int:
    """How many runs the project holds (one small listing; 0 when it cannot say)."""
    try:
        return len(api.runs(path, per_page=1))
    except Exception:  # only a better error message depends on it
        return 0


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


def _cloud_history(run: Any, meta: RunFile, wanted: list[str] | None, logged: dict[str, int] | None, cache: Path,
                   problems: list[str], retrying: Callable[..., Any]) -> dict[str, np.ndarray]:
    """Every step of the wanted keys (None: of every key), via scan_history; from the cache for a run that ended.

    What to read comes from what the run says it logged (`run.history_keys`, fetched with the
    `lazy=False` listing), never from its summary: lrscan's runs derive their summary on the server
    (`x_server_side_derived_summary`), so a run synced from offline holds only train_loss,
    dev_loss, ... there. A history that comes back short of what the run lists is not cached.
    `retrying(call, progress=...)`: `with_retries` with the load's Retry and deadline.
    """
    to_read = None if wanted is None else [k for k in wanted if logged is None or k in logged]
    stamp = _cloud_stamp(run)
    keys_hash = hashlib.sha1(json.dumps([CACHE_FORMAT, wanted]).encode()).hexdigest()[:10]
    # a run that ended (finished, crashed, failed, killed) no longer changes unless resumed, which
    # moves its heartbeat, so the stamp keys the cache
    cacheable = bool(stamp) and meta.state not in UNSETTLED_STATES
    base = cache / meta.entity / meta.project / f"{meta.run_id}-{stamp}-{keys_hash}"
    if cacheable:
        cached = _cache_read(base)
        if cached is not None:
            history, meta.nan_logged = _split_marks(cached)
            return history
    if to_read is not None and not to_read:  # the run says it logged none of them (an analysis run, no history)
        return {"step": np.zeros(0, np.int64), **{k: np.zeros(0, np.float64) for k in wanted or ()}}
    columns: dict[str, dict[int, float]] = {k: {} for k in wanted or ()}
    all_steps: set[int] = set()
    for keys in [None] if to_read is None else _scan_passes(run, to_read, logged):
        _scan(run, keys, retrying, partial(_keep_row, keys if keys is not None else to_read, columns, all_steps))
    steps = np.array(sorted(all_steps), np.int64)
    history = {"step": steps}
    for key in wanted if wanted is not None else sorted(columns):
        values = columns[key]
        history[key] = np.array([values.get(int(s), np.nan) for s in steps], np.float64)
        # a value logged as NaN is in `values` (a row, NaN); a step that did not log it is not
        logged_nan = np.isnan(history[key]) & np.fromiter((int(s) in values for s in steps), bool, len(steps))
        if logged_nan.any():
            meta.nan_logged[key] = logged_nan
    if not cacheable:
        return history
    if logged is None:
        short = "no rows at all" if not len(steps) else ""
    else:
        short = ", ".join(f"{len(columns[k])} of the {logged[k]} values of {k} it lists" for k in to_read or ()
                          if len(columns[k]) < logged[k])
    if short:
        # never cached: a history read while W&B was still exporting it would come back on every call
        problems.append(f"run {meta.run_id}: scan_history returned {short}; not cached, read again next time")
    else:
        _cache_write(base, {**history, **{NAN_LOGGED_PREFIX + k: v for k, v in meta.nan_logged.items()}})
    return history


def _keep_row(read: list[str] | None, columns: dict[str, dict[int, float]], all_steps: set[int], step: int,
              row: dict[str, Any]) -> None:
    """One scanned row into `columns` (key -> {step: value}); `read` None: every key it holds."""
    all_steps.add(step)
    for key in read if read is not None else [k for k in row if not k.startswith("_")]:
        value = row.get(key)
        if value is not None:  # None: not logged at this step (a null parquet cell)
            columns.setdefault(key, {})[step] = _cloud_number(value)


def _scan(run: Any, keys: list[str] | None, retrying: Callable[..., Any],
          on_row: Callable[[int, dict[str, Any]], None]) -> None:
    """`on_row(step, row)` for every row of one `scan_history` pass (keys None: every column). After a
    429, 5xx, lost connection or timeout the scan goes on from the step after the last row it read,
    not from step 0: wandb's HistoryScan loads whole pages of steps, so every row before the failed
    page has been handed on."""
    next_step = 0
    rows = 0

    def from_next_step() -> None:
        nonlocal next_step, rows
        scan = run.scan_history(keys=keys if keys is None else [STEP_ITEM, *keys], page_size=SCAN_PAGE_STEPS,
                                min_step=next_step)
        for row in scan:
            step = row.get(STEP_ITEM)
            if step is None:
                continue
            on_row(int(step), row)
            rows += 1
            next_step = max(next_step, int(step) + 1)

    retrying(from_next_step, progress=lambda: rows)


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


def _split_marks(cached: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(history, nan_logged) of a cached history, whose marks are columns named NAN_LOGGED_PREFIX + key."""
    history = {k: v for k, v in cached.items() if not k.startswith(NAN_LOGGED_PREFIX)}
    marks = {k[len(NAN_LOGGED_PREFIX):]: v.astype(bool) for k, v in cached.items() if k.startswith(NAN_LOGGED_PREFIX)}
    return history, marks


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


