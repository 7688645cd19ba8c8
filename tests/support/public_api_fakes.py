"""The W&B cloud below wandb 0.31's own Public API objects, for tests that cannot reach the cloud.

What is real and what is faked:

- real (wandb 0.31.0's code, unchanged): `wandb.Api.runs` and its memo, `Runs` (the GraphQL query
  text, paging by cursor, `lazy=`), `Run` (built from the reply's attrs: `id` from `name`, `name`
  from `displayName`, `config` unwrapped from `{"value": ...}` with `_wandb` moved to `rawconfig`,
  `summaryMetrics` parsed from JSON text, `history_keys`, `sweep_name`), `Run.scan_history`
  (`lastHistoryStep` via the `RunHistoryKeys` query) and `HistoryScan` (pages of `page_size`
  *steps*, each row's `value_json` decoded with `json.loads`).
- faked: only what sits behind `ServiceApi.send_api_request`, i.e. wandb-core and the W&B server.
  `FakeServiceApi` answers the GraphQL operations the listing needs (Runs, Run, RunHistoryKeys,
  GetDefaultEntity) and wandb-core's history-scan requests. `OfflineApi` is a real `wandb.Api`
  whose constructor skips the credential check and uses that service.

The history reader follows wandb-core's `runhistoryreader` (read at wandb/wandb b6e2950, the newest
source at hand; the Rust parquet reader in the 0.31 wheel has the same error strings):
steps below a run's `exported_through` come from its exported parquet history, the rest "live" from
the backend, and each page is sorted by step.

- parquet, `keys=None`: every column of the file; a step that did not log a key has it as null,
  so the row holds `None`; NaN and infinities are floats (wandb-core writes the tokens NaN/Infinity).
- parquet, `keys=[...]`: `_step` and those of the requested columns that exist, every row of the
  step range kept; a null cell is `None`.
- live, `keys=None`: the backend's `history` rows as logged (a key not logged at a step is absent).
- live, `keys=[...]`: the backend's `sampledHistory`, which returns only the rows holding every
  requested key, with NaN and infinities as the strings "NaN", "Infinity", "-Infinity" (the
  backend's GraphQL JSON cannot hold the tokens).

`sync_offline_run` builds what the server would hold after `wandb sync` of an offline run, from the
run's own `.wandb` file, read here with protobuf (independent of pipeline.runlog): its history
rows, config, and the summary that the run's own summary records give. lrscan's logger sets
`x_server_side_derived_summary=True`, so that summary holds only what lrscan put in it (train_loss,
dev_loss, ...), not the last lr, lre or loss; a sync sends no request to derive more.
"""

from __future__ import annotations

import base64
import json
import math
import re
import struct
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import wandb
from wandb.apis.public import Api
from wandb.apis.public.service_api import ServiceApi
from wandb.proto import wandb_api_pb2 as apb
from wandb.sdk.lib.service.service_connection import WandbApiFailedError

HEARTBEAT = "2026-11-25T01:00:00Z"


# -- what the server holds for one run --------------------------------------------------------------


@dataclass
class SyncedRun:
    """One run as the W&B server holds it after a sync."""

    run_id: str
    display_name: str = ""
    group: str = ""
    tags: tuple[str, ...] = ()
    job_type: str = "train"
    sweep_name: str = ""
    state: str = "finished"
    config: dict[str, Any] = field(default_factory=dict)   # user config, plain values; `_wandb` kept apart
    wandb_config: dict[str, Any] = field(default_factory=lambda: {"cli_version": wandb.__version__})
    summary: dict[str, Any] = field(default_factory=dict)
    rows: dict[int, dict[str, Any]] = field(default_factory=dict)  # step -> {key: value}, `_step` included
    heartbeat_at: str = HEARTBEAT
    created_at: str = "2026-11-25T00:00:00Z"
    exported_through: int | None = None  # steps below it are in the exported parquet; None: all of them

    def history_keys(self) -> dict[str, Any]:
        """`historyKeys` as the server's GraphQL reply holds it (a JSON object, not text)."""
        keys: dict[str, dict[str, Any]] = {}
        for step in sorted(self.rows):
            for key, value in self.rows[step].items():
                info = keys.setdefault(key, {"counts": {}, "monotonic": True, "previousValue": None})
                kind = _type_name(value)
                info["counts"][kind] = info["counts"].get(kind, 0) + 1
                previous = info["previousValue"]
                if isinstance(value, (int, float)) and isinstance(previous, (int, float)) and value < previous:
                    info["monotonic"] = False
                info["previousValue"] = value
        return {
            "keys": {
                key: {"typeCounts": [{"type": t, "count": n} for t, n in info["counts"].items()],
                      "monotonic": info["monotonic"], "previousValue": info["previousValue"]}
                for key, info in keys.items()
            },
            "lastStep": max(self.rows, default=-1),
            "sets": [],
        }

    def attrs(self, project_id: str = "1", lightweight: bool = False) -> dict[str, Any]:
        """The run node of a GraphQL reply: RunFragment, or LightweightRunFragment for `lazy=True`."""
        node = {
            "projectId": project_id,
            "id": base64.b64encode(f"Run:v1:{self.run_id}:lrscan:me".encode()).decode(),
            "tags": list(self.tags),
            "name": self.run_id,
            "displayName": self.display_name or self.run_id,
            "sweepName": self.sweep_name or None,
            "state": self.state,
            "group": self.group or None,
            "jobType": self.job_type or None,
            "commit": None,
            "readOnly": False,
            "createdAt": self.created_at,
            "heartbeatAt": self.heartbeat_at,
            "description": "",
            "notes": None,
            "historyLineCount": len(self.rows),
            "user": {"name": "me", "username": "me"},
        }
        if not lightweight:
            config = {key: {"desc": None, "value": value} for key, value in self.config.items()}
            config["_wandb"] = {"desc": None, "value": self.wandb_config}
            node.update(config=json.dumps(config), systemMetrics="{}", summaryMetrics=json.dumps(self.summary),
                        historyKeys=self.history_keys())
        return node


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "object" if isinstance(value, dict) else "other"


def sync_offline_run(path: str | Path, *, state: str | None = None, heartbeat_at: str = HEARTBEAT,
                     exported_through: int | None = None) -> SyncedRun:
    """What the server holds after `wandb sync` of the offline run in this `.wandb` file."""
    run = SyncedRun(run_id="", heartbeat_at=heartbeat_at, exported_through=exported_through)
    exit_code = None
    for record in _records(Path(path).read_bytes()):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run.run_id, run.display_name, run.group = r.run_id, r.display_name, r.run_group
            run.job_type, run.sweep_name, run.tags = r.job_type, r.sweep_id, tuple(r.tags)
            _fold(run.config, r.config.update)
            _fold(run.summary, r.summary.update)
        elif kind == "config":
            _fold(run.config, record.config.update)
        elif kind == "summary":
            _fold(run.summary, record.summary.update)
        elif kind == "history":
            row = {_item_key(item): json.loads(item.value_json) for item in record.history.item}
            step = record.history.step.num if record.history.HasField("step") else int(row["_step"])
            run.rows[int(step)] = {**row, "_step": int(step)}
        elif kind == "exit":
            exit_code = record.exit.exit_code
    run.wandb_config.update(run.config.pop("_wandb", None) or {})
    # W&B's states: failed = ended with a non-zero exit code; crashed = stopped sending heartbeats
    run.state = state or ("crashed" if exit_code is None else "finished" if exit_code == 0 else "failed")
    return run


def _item_key(item: Any) -> str:
    return item.key or ".".join(item.nested_key)


def _fold(tree: dict, updates: Iterable[Any]) -> None:
    for item in updates:
        path = [item.key] if item.key else list(item.nested_key)
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = json.loads(item.value_json)


def _records(data: bytes) -> Iterable[Any]:
    """Every record of an undamaged `.wandb` file (leveldb-log framing in 32 KiB blocks)."""
    from wandb.proto import wandb_internal_pb2 as pb

    pos, parts = 7, []
    while pos + 7 <= len(data):
        left = 32 * 1024 - pos % (32 * 1024)
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack_from("<IHB", data, pos)
        if kind == 0 and length == 0:
            pos += left
            continue
        parts = [] if kind in (1, 2) else parts
        parts.append(data[pos + 7 : pos + 7 + length])
        pos += 7 + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(b"".join(parts))
            yield record


def synced_from_rows(run_id: str, rows: Sequence[tuple[int, Mapping[str, Any]]], **fields: Any) -> SyncedRun:
    """A synced run from `[(step, {key: value}), ...]`, for tests that need no real run file."""
    return SyncedRun(run_id=run_id, rows={int(s): {**row, "_step": int(s)} for s, row in rows}, **fields)


# -- the server and wandb-core behind ServiceApi -----------------------------------------------------


class FakeBackend:
    """The W&B server and wandb-core's history reader, for one entity/project, recording every request."""

    def __init__(self, runs: Iterable[SyncedRun], *, entity: str = "me", project: str = "lrscan",
                 page_limit: int | None = None, viewer_entity: str | None = "me") -> None:
        self.runs: dict[str, SyncedRun] = {run.run_id: run for run in runs}
        self.entity, self.project = entity, project
        self.page_limit = page_limit  # the most runs the server returns per page
        self.viewer_entity = viewer_entity
        self.operations: list[str] = []                        # GraphQL operation names, in order
        self.listings: list[tuple[str, Any, int]] = []         # (entity/project, filters, perPage) per Runs page
        self.scans: list[tuple[str, list[str] | None]] = []    # (run id, keys or None) per scan_history
        self.pages: list[tuple[str, int, int]] = []            # (run id, min_step, max_step) per page read
        self._open_scans: dict[int, tuple[SyncedRun, list[str] | None]] = {}
        self._next_scan = 1
        # errors to raise instead of answering, in order: "Runs" (a page of the listing), "scan <run id>"
        # (a page of that run's history scan); what the server or wandb-core would fail with; None
        # answers that request as usual
        self.failures: dict[str, list[BaseException]] = {}

    def _maybe_fail(self, what: str) -> None:
        queued = self.failures.get(what)
        if queued:
            failure = queued.pop(0)
            if failure is not None:  # None: this one is answered, a later one fails
                raise failure

    # GraphQL

    def graphql(self, query: str, variables: Mapping[str, Any]) -> Any:
        match = re.search(r"\b(?:query|mutation)\s+(\w+)", query)
        name = match.group(1) if match else ""
        self.operations.append(name)
        if name == "GetDefaultEntity":
            return {"viewer": {"id": "VXNlcjox", "entity": self.viewer_entity}}
        if (variables.get("entity"), variables.get("project")) != (self.entity, self.project):
            return {"project": None}
        if name == "Runs":
            self._maybe_fail("Runs")
            return self._runs_page(query, variables)
        run = self.runs.get(variables.get("name", ""))
        if name == "Run":
            lightweight = "...LightweightRunFragment" in query
            return {"project": {"run": run.attrs(lightweight=lightweight) if run else None}}
        if name == "RunHistoryKeys":
            return {"project": {"run": {"historyKeys": run.history_keys()} if run else None}}
        raise AssertionError(f"the fake W&B server does not answer the GraphQL operation {name!r}")

    def _runs_page(self, query: str, variables: Mapping[str, Any]) -> dict[str, Any]:
        filters = json.loads(variables.get("filters") or "{}")
        per_page = int(variables.get("perPage") or 50)
        self.listings.append((f"{self.entity}/{self.project}", filters, per_page))
        order = (variables.get("order") or "+created_at").lstrip("+-")
        matching = [run for run in self.runs.values() if _matches(run, filters)]
        matching.sort(key=lambda run: (run.created_at, run.run_id) if order == "created_at" else run.run_id)
        start = int(variables.get("cursor") or 0)
        size = min(per_page, self.page_limit or per_page)
        page = matching[start : start + size]
        lightweight = "...LightweightRunFragment" in query
        edges = [{"node": run.attrs(lightweight=lightweight), "cursor": str(start + i + 1)}
                 for i, run in enumerate(page)]
        return {"project": {
            "internalId": "UHJvamVjdDox", "runCount": len(matching), "readOnly": False,
            "runs": {"edges": edges, "pageInfo": {"endCursor": str(start + len(page)),
                                                  "hasNextPage": start + len(page) < len(matching)}},
        }}

    # history scans (wandb-core's runhistoryreader)

    def scan_init(self, request: Any) -> int:
        if (request.entity, request.project) != (self.entity, self.project) or request.run_id not in self.runs:
            raise WandbApiFailedError(f"no parquet history found for run {request.run_id}")
        keys = list(request.keys) or None
        if keys and "_step" not in keys:
            keys = ["_step", *keys]
        run = self.runs[request.run_id]
        self.scans.append((request.run_id, list(request.keys) or None))
        scan_id, self._next_scan = self._next_scan, self._next_scan + 1
        self._open_scans[scan_id] = (run, keys)
        return scan_id

    def scan_page(self, request: Any) -> list[list[tuple[str, str]]]:
        """[(key, value_json), ...] per row with min_step <= step < max_step, sorted by step."""
        if request.request_id not in self._open_scans:
            raise WandbApiFailedError("Run history scan not initialized.")
        run, keys = self._open_scans[request.request_id]
        self._maybe_fail(f"scan {run.run_id}")
        self.pages.append((run.run_id, request.min_step, request.max_step))
        exported_through = max(run.rows, default=-1) + 1 if run.exported_through is None else run.exported_through
        columns = sorted({key for step, row in run.rows.items() if step < exported_through for key in row})
        out = []
        for step in sorted(s for s in run.rows if request.min_step <= s < request.max_step):
            row = run.rows[step]
            if step < exported_through:  # parquet: a column per key, null where the step did not log it
                wanted = [k for k in columns if keys is None or k in keys]
                out.append([(k, _json_token(row.get(k))) for k in wanted])
            elif keys is None:  # live `history`: the row as logged
                out.append([(k, _json_token(v)) for k, v in row.items()])
            elif all(k in row for k in keys):  # live `sampledHistory`: rows holding every key, NaN de-NaN'd
                out.append([(k, json.dumps(_denan(row[k]))) for k in keys])
        return out

    def scan_cleanup(self, request: Any) -> None:
        self._open_scans.pop(request.request_id, None)


def http_error(status: int, retry_after: str | None = None, text: str = "") -> Exception:
    """`requests.HTTPError` with a real `requests.Response`, as a request to the W&B server fails."""
    import requests

    response = requests.Response()
    response.status_code = status
    response.reason = {429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
                       503: "Service Unavailable", 404: "Not Found"}.get(status, "")
    response.url = "https://api.wandb.ai/graphql"
    if retry_after is not None:
        response.headers["Retry-After"] = retry_after
    response._content = text.encode()
    return requests.HTTPError(f"{status} Server Error: {response.reason} for url: {response.url}", response=response)


def core_error(status: int, message: str) -> WandbApiFailedError:
    """wandb-core's failure of an API request with the server's HTTP status (`ApiErrorResponse.http_status`)."""
    return WandbApiFailedError(message, response=apb.ApiErrorResponse(message=message, http_status=status))


def _json_token(value: Any) -> str:
    """wandb-core's JSON (simplejsonext): NaN, Infinity, -Infinity as bare tokens."""
    return json.dumps(value)  # Python's json writes exactly those tokens


def _denan(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
    return value


def _matches(run: SyncedRun, filters: Mapping[str, Any]) -> bool:
    """The MongoDB-style run filters this project sends: $and, $or, $in, equality, tags membership."""
    for key, want in filters.items():
        if key == "$and":
            ok = all(_matches(run, f) for f in want)
        elif key == "$or":
            ok = any(_matches(run, f) for f in want)
        else:
            have = {"group": run.group, "sweep": run.sweep_name, "tags": run.tags, "state": run.state,
                    "jobType": run.job_type, "name": run.run_id, "displayName": run.display_name}.get(key, _missing)
            if have is _missing:
                raise AssertionError(f"the fake W&B server does not filter on {key!r}")
            if isinstance(want, Mapping):
                ok = all(_operator(op, have, value) for op, value in want.items())
            else:
                ok = want in have if key == "tags" else have == want
        if not ok:
            return False
    return True


_missing = object()


def _operator(op: str, have: Any, value: Any) -> bool:
    if op == "$in":
        return have in value
    if op == "$eq":
        return have == value
    if op == "$ne":
        return have != value
    raise AssertionError(f"the fake W&B server does not know the filter operator {op!r}")


class FakeServiceApi(ServiceApi):
    """wandb 0.31's `ServiceApi` with the wandb-core round trip replaced by `FakeBackend`.

    `execute_graphql` is the real one (it builds the GraphQLRequest and parses the reply's JSON
    text); only `send_api_request` and `finalize` are replaced. Anything else that would reach
    wandb-core fails the test.
    """

    def __init__(self, backend: FakeBackend) -> None:
        super().__init__(settings=wandb.Settings(), timeout=30)
        self.backend = backend

    def _get_api_session(self) -> Any:
        raise AssertionError("a test tried to start wandb-core: a request the fake does not answer")

    def send_api_request(self, request: apb.ApiRequest, timeout: float | None = None) -> apb.ApiResponse:
        kind = request.WhichOneof("request")
        if kind == "graphql_request":
            graphql = request.graphql_request
            data = self.backend.graphql(graphql.query, json.loads(graphql.variables_json))
            return apb.ApiResponse(graphql_response=apb.GraphQLResponse(data_json=json.dumps(data)))
        if kind == "read_run_history_request":
            history = request.read_run_history_request
            which = history.WhichOneof("request")
            if which == "scan_run_history_init":
                scan_id = self.backend.scan_init(history.scan_run_history_init)
                return apb.ApiResponse(read_run_history_response=apb.ReadRunHistoryResponse(
                    scan_run_history_init=apb.ScanRunHistoryInitResponse(request_id=scan_id)))
            if which == "scan_run_history":
                rows = self.backend.scan_page(history.scan_run_history)
                reply = apb.RunHistoryResponse(history_rows=[
                    apb.HistoryRow(history_items=[apb.ParquetHistoryItem(key=k, value_json=v) for k, v in row])
                    for row in rows])
                return apb.ApiResponse(read_run_history_response=apb.ReadRunHistoryResponse(run_history=reply))
            if which == "scan_run_history_cleanup":
                self.backend.scan_cleanup(history.scan_run_history_cleanup)
                return apb.ApiResponse()
        raise AssertionError(f"the fake wandb-core does not answer {kind} requests")

    def finalize(self, obj: object, cleanup: apb.ApiRequest) -> Any:
        # like the real one: the cleanup request goes out when `obj` is garbage collected
        return weakref.finalize(obj, self.send_api_request, cleanup)


class OfflineApi(Api):
    """A real `wandb.Api` over `FakeServiceApi`: the constructor only skips the credential check."""

    def __init__(self, backend: FakeBackend, *, entity: str | None = None, project: str | None = None) -> None:
        self.settings = {"base_url": "https://api.wandb.ai", "entity": entity, "project": project, "organization": None}
        self.api_key = None
        self._viewer = None
        self._projects: dict = {}
        self._runs: dict = {}
        self._sweeps: dict = {}
        self._reports: dict = {}
        self._default_entity = None
        self._timeout = 30
        self._service_api = FakeServiceApi(backend)
        self.backend = backend

    @property
    def calls(self) -> list[tuple[str, Any, int]]:
        """(entity/project, filters, per_page) of every page of runs listed."""
        return self.backend.listings


# -- the older, spec-based interface (tests/pipeline/study/test_study.py builds runs so) ------------


class FakeRun:
    """A run given as a spec (name, group, tags, job_type, config, rows [(step, {key: value})], summary,
    exit_code, sweep_id), served through `FakeApi` as a real `wandb.apis.public.Run`."""

    def __init__(self, run_id: str, spec: Mapping[str, Any], state: str = "", drop_keys: Sequence[str] = ()) -> None:
        code = spec.get("exit_code")
        self.synced = synced_from_rows(
            run_id, [(step, {k: v for k, v in row.items() if k not in drop_keys}) for step, row in spec["rows"]],
            display_name=spec.get("name") or run_id, group=spec.get("group") or "", tags=tuple(spec.get("tags", ())),
            job_type=spec.get("job_type", "train"), sweep_name=spec.get("sweep_id") or "",
            state=state or ("finished" if not code else "failed"), config=dict(spec.get("config") or {}),
            summary=dict(spec.get("summary") or {}),
        )
        self.id = run_id


def FakeApi(runs: Sequence[FakeRun], page_limit: int = 2) -> OfflineApi:  # noqa: N802 (the older class name)
    return OfflineApi(FakeBackend([run.synced for run in runs], page_limit=page_limit))
