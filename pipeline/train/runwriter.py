"""The logging process' side of a run: open its wandb run, write its history rows fast, finish it.

The trainer's side (pipeline/train/tracking.py) starts this process and hands it chunks of rows
through a socket; everything here runs in the logging process, the only place that imports wandb
while training. The single run's process runs `logger_main`; a pack's (pipeline/pack/logger.py)
holds K runs with the same pieces: `init_run`, `set_up_run`, `history_writer`, `hold_run_lock`.
"""

from __future__ import annotations

import signal
import struct
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

from lrscan.pipeline import keys
from lrscan.pipeline.train.tracking import InitArgs, RunInfo


def logger_main() -> None:
    """The logger process: `python -c "from lrscan.pipeline.train.runwriter import logger_main; logger_main()" FD`."""
    conn = logger_connection()
    # before the run's InitArgs: a process the command line started ahead imports wandb while the trainer imports
    # torch and checks its run (tracking.SpawnedLogger)
    import wandb

    try:
        init: InitArgs = conn.recv()
    except EOFError:
        return  # the trainer ended (or died) before its run began: nothing was handed over, nothing to log
    lock = hold_run_lock(init.lock_path) if init.lock_path else None  # noqa: F841 (released when we exit)

    answer, failure = "ok", ""
    try:
        run = init_run(init)
    except Exception as e:
        failure = " ".join(f"{type(e).__name__}: {e}".split())  # one line (pydantic's errors span several)
        run = _offline_instead(init) if init.overlapped and init.mode != "offline" else None
        if run is None:
            conn.send(("error", failure))
            return
        answer = "offline"
    try:
        info = set_up_run(run, init)
        conn.send(("ok", info) if answer == "ok" else ("offline", (failure, info)))
        exit_code = _drain(run, conn, history_writer(run))
    except BaseException:
        traceback.print_exc()
        exit_code = 1
    run.finish(exit_code=exit_code)
    # finish() can return before wandb-core has written the .wandb file (seen with 0.31 offline:
    # a reader right after found only its header); teardown waits for wandb-core to exit
    wandb.teardown()


def _offline_instead(init: InitArgs):
    """The same run opened offline, after its online wandb.init failed while the trainer went on training: the
    rows it already handed over stay on disk for `wandb sync` (None when that fails too)."""
    try:
        return init_run(replace(init, mode="offline"))
    except Exception:
        traceback.print_exc()
        return None


def _drain(run, conn: Connection, write) -> int:
    """Log every message in order until told to finish (its exit code) or the trainer is gone (1)."""
    while True:
        try:
            item = conn.recv()
        except (EOFError, OSError):
            return 1
        kind = item[0]
        if kind == "steps":
            write(*item[1:])
        elif kind == "summary":
            run.summary.update(item[1])
        elif kind == "preempting":  # a W&B sweep requeues a run marked so that then exits non-zero
            run.mark_preempting()
        elif kind == "finish":
            return int(item[1])
        try:
            conn.send(("ack",))
        except OSError:
            return 1


def logger_connection() -> Connection:
    """A logger process' socket to the trainer (its fd is the process' first argument)."""
    # Ctrl-C and SIGTERM reach the whole process group, a scheduler's SIGUSR1 (a preemption notice) may
    # reach every process of a job: the trainer decides when to stop and tells us, or dies and we see the
    # socket close. Either way we log everything we were handed first.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
        signal.signal(signum, signal.SIG_IGN)
    return Connection(int(sys.argv[1]))


def init_run(init: InitArgs, **more):
    """`wandb.init` for `init` in a logger process, recorded as the trainer's program and arguments."""
    import wandb

    spare_init_work(wandb)
    launch = {}
    if init.launch is not None:
        # wandb records `program` from its settings, and `args` as this process's sys.argv[1:]
        # (`Settings._args`, no setting for it): both must be the trainer's, not this helper's
        sys.argv = [init.launch.program, *init.launch.args]
        launch = {"program": init.launch.program}
    return wandb.init(
        id=init.run_id,
        mode=init.mode,
        project=init.project or None,
        entity=init.entity or None,
        group=init.group or None,
        name=init.name or None,
        tags=list(init.tags) or None,
        job_type=init.job_type or None,
        config=init.config,
        resume="allow" if init.resume else None,
        # no console capture or system stats: lrscan logs what it means to. Summary derived on
        # the server: wandb-core otherwise writes 2 summary records per history row (half its
        # CPU here); lrscan writes the run's summary itself at the end.
        settings=wandb.Settings(console="off", x_disable_stats=True, x_server_side_derived_summary=True, **launch),
        **more,
    )


def spare_init_work(wandb) -> None:
    """Take two costs off every `wandb.init` in a logger process, neither changing what a run records (measured: a
    pack's logger opening 6 offline runs, 1.32-1.49 s of CPU with them, 0.79-0.88 s without; a search opens tens):

    - the list of installed packages each run saves (requirements.txt): wandb reads it with
      `wandb.util.working_set()`, which parses every installed package's metadata twice (~60 ms a run here). It
      is listed once per process and every run gets the same list;
    - W&B Launch's staged inputs: each `wandb.init` imports `wandb.sdk.launch` (the Public API and its pydantic
      models, ~0.2 s) to apply inputs a Launch job staged in the same process. A logger process runs no user code,
      so nothing is ever staged in it; a user's `wandb.launch` calls run in the trainer, whose inputs never reached
      the logger's runs either way.

    Either is left as wandb has it where the wandb release lacks the names (checked at each call: cheap)."""
    util, run_class = getattr(wandb, "util", None), getattr(getattr(wandb, "sdk", None), "wandb_run", None)
    listing = getattr(util, "working_set", None)
    if callable(listing) and not getattr(listing, "listed_once", False):
        listed = list(listing())

        def working_set():
            return iter(listed)

        working_set.listed_once = True
        util.working_set = working_set
    run = getattr(run_class, "Run", None)
    if callable(getattr(run, "_detect_and_apply_job_inputs", None)):
        run._detect_and_apply_job_inputs = _no_staged_launch_inputs


def _no_staged_launch_inputs(run) -> None:
    """What `Run._detect_and_apply_job_inputs` does in a process where no Launch input was staged: nothing."""


def set_up_run(run, init: InitArgs) -> RunInfo:
    """Define the run's metrics (lre, and the range test's loss-against-lre axis); what the trainer learns of it."""
    run.define_metric(keys.LRE)
    if init.define_lre_axis:
        for k in (keys.LOSS, keys.LOG10_LOSS, keys.SMOOTH_LOSS):
            run.define_metric(k, step_metric=keys.LRE)
    return RunInfo(
        run_id=run.id, name=run.name or "", project=run.project or "", url=run.url or "",
        run_dir=run.dir, config=dict(run.config), logged_through_step=logged_through(run, init),
    )


def chunk_rows(steps: np.ndarray, columns: dict[str, np.ndarray], extra: dict[int, dict]) -> list[tuple[int, dict]]:
    """A chunk's history rows [(step, {key: value}), ...]: columns[key][i] at steps[i], plus extra[step] where given."""
    names = list(columns)
    rows = [dict(zip(names, values)) for values in zip(*(columns[k].tolist() for k in names))]
    at = {step: i for i, step in enumerate(steps.tolist())}
    for step, extra_row in extra.items():
        if step in at:
            rows[at[step]].update(extra_row)
    return list(zip(steps.tolist(), rows))


def hold_run_lock(path: str):
    """An exclusive flock on the run's lock file, waited for: a killed trainer's logger may still be
    flushing the run's last steps, and a resumed run must not start (or read its history) before."""
    import fcntl

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"lrscan: waiting for another process of this run to finish logging ({path})", flush=True)
        fcntl.flock(f, fcntl.LOCK_EX)
    return f


# The wandb minor releases the hand-framed history path was tested with (tests/pipeline/train/test_runwriter.py
# passes on each): on any other, the logger writes through run.log. Add a release here only after those tests
# pass with it.
FAST_PATH_WANDB = ("0.31",)


@dataclass(frozen=True)
class HistoryWriter:
    """Appends one history row per step to a run: writer(steps, columns, extra); see `history_writer`."""

    write: Callable[[np.ndarray, dict[str, np.ndarray], dict[int, dict]], None]
    fast: bool  # the hand-framed path; else wandb's public run.log
    why: str = ""  # why not the fast path ("" when it is)

    def __call__(self, steps: np.ndarray, columns: dict[str, np.ndarray], extra: dict[int, dict]) -> None:
        self.write(steps, columns, extra)


def history_writer(run, fast: bool = True) -> HistoryWriter:
    """A writer (steps, columns, extra) -> None that appends one history row per step to the run, in
    order: row i is {key: columns[key][i]} at step steps[i], plus extra[steps[i]] where given.

    `run.log` costs ~300-800 us per call here: dict-to-JSON conversion, telemetry, and a blocking
    hand-off to wandb's asyncio thread for every row. For plain numbers at explicit steps, the row
    it sends wandb-core is one `PartialHistoryRequest` with a JSON value per key; the fast path builds
    those records itself from a template made by wandb's own interface, frames them as wandb's socket
    client does, and hands a whole chunk to wandb's asyncio thread as one write: ~9 us of CPU per row
    instead of ~190 with `run.log` (measured in an 80k-row probe).

    The interface attributes it uses are private, so it runs only where it is known to be right: on
    the wandb releases in FAST_PATH_WANDB, with every attribute present, and after a self-check at
    start-up (one row framed by us is byte-for-byte the frame wandb's own `run.log` sends). Anywhere
    else, or with fast=False, every row goes through `run.log`: the same records, slower.
    """
    why = "told to use run.log" if not fast else _fast_path_refused(run)
    if not why:
        frame, send = _framer(run)
        why = _self_check(run, frame, send)
        if not why:
            def write(steps: np.ndarray, columns: dict[str, np.ndarray], extra: dict[int, dict]) -> None:
                # a chunk's rows are handed over at once: they share the time they were
                send(frame(steps, columns, extra, repr(time.time())))

            return HistoryWriter(write, fast=True)
        print(f"lrscan: the fast history path failed its self-check ({why}); logging through run.log",
              file=sys.stderr, flush=True)

    def write_slow(steps: np.ndarray, columns: dict[str, np.ndarray], extra: dict[int, dict]) -> None:
        # commit=True: each row is written at once, as the fast path's flush does
        for step, row in chunk_rows(steps, columns, extra):
            run.log(row, step=step, commit=True)

    return HistoryWriter(write_slow, fast=False, why=why)


def _fast_path_refused(run) -> str:
    """Why the hand-framed path cannot run on this run's wandb ("" when it may)."""
    import wandb

    release = ".".join(wandb.__version__.split(".")[:2])
    if release not in FAST_PATH_WANDB:
        return f"wandb {wandb.__version__} is not a release it was tested with ({', '.join(FAST_PATH_WANDB)})"
    iface = getattr(run, "_interface", None)
    client = getattr(iface, "_client", None)
    try:
        from wandb.sdk.lib.service import service_client

        service_client._HEADER_BYTE_INT_FMT  # noqa: B018 (only its presence is checked)
    except (ImportError, AttributeError):
        return "wandb's socket client has no _HEADER_BYTE_INT_FMT"
    missing = [a for a in ("_make_request", "_assign", "_asyncer") if not hasattr(iface, a)]
    missing += [a for a in ("_writer",) if not hasattr(client, a)]
    return f"wandb's interface lacks {', '.join(missing)}" if missing else ""


def _framer(run):
    """(frame, send): frame(steps, columns, extra, now) -> the bytes wandb's socket client would write for
    those rows; send(bytes) writes them, in order, on wandb's own connection and event loop."""
    from wandb.proto import wandb_internal_pb2 as pb
    from wandb.proto import wandb_server_pb2 as spb
    from wandb.sdk.lib.service import service_client

    iface = run._interface
    client = iface._client
    header_format = service_client._HEADER_BYTE_INT_FMT
    record = iface._make_request(partial_history=pb.PartialHistoryRequest())
    iface._assign(record)
    template = spb.ServerRequest()
    template.record_publish.CopyFrom(record)
    magic = ord("W")

    def frame(steps: np.ndarray, columns: dict[str, np.ndarray], extra: dict[int, dict], now: str) -> bytes:
        names = list(columns)
        texts = [_json_column(np.asarray(columns[k])) for k in names]
        frames = []
        for i, step in enumerate(np.asarray(steps).tolist()):
            request = spb.ServerRequest()
            request.CopyFrom(template)
            history = request.record_publish.request.partial_history
            row = dict(zip(names, (t[i] for t in texts)))
            if step in extra:
                row.update((k, _json_number(v)) for k, v in extra[step].items())
            for key, text in row.items():
                history.item.add(key=key, value_json=text)
            history.item.add(key="_timestamp", value_json=now)
            history.step.num = step
            history.action.flush = True
            data = request.SerializeToString()
            frames += (struct.pack(header_format, magic, len(data)), data)
        return b"".join(frames)

    def send(blob: bytes) -> None:
        async def write() -> None:
            # one write of the whole chunk; a connection wandb already found broken fails here as
            # its own publish would
            broken = getattr(client, "_broken_exc", None)
            if broken is not None:
                raise broken
            client._writer.write(blob)
            await client._writer.drain()

        iface._asyncer.run(write)

    return frame, send


_CHECK_STEPS = np.array([0])
_CHECK_COLUMNS = {"lrscan_check_lr": np.array([0.001]), "lrscan_check_loss": np.array([float("nan")]),
                  "lrscan_check_inf": np.array([float("-inf")]), "lrscan_check_count": np.array([3])}
_CHECK_EXTRA = {0: {"lrscan_check_dev": 2.5}}


def _self_check(run, frame, send) -> str:
    """"" when one row framed by `frame` is byte-for-byte what wandb's own `run.log` sends, else what differed.

    run.log's frame is caught on its way to the socket (wandb's client writes through `_writer`) and
    never reaches wandb-core: the check leaves no row in the run. Anything else written meanwhile is
    passed on unchanged.
    """
    from wandb.proto import wandb_server_pb2 as spb
    from wandb.sdk.lib.service import service_client

    client = run._interface._client
    header_format = service_client._HEADER_BYTE_INT_FMT
    caught = bytearray()

    class Catch:
        def write(self, data: bytes) -> None:
            caught.extend(data)

        async def drain(self) -> None:
            pass

    row = {k: v[0].item() for k, v in _CHECK_COLUMNS.items()} | _CHECK_EXTRA[0]
    local_step = getattr(run, "_local_step", None)
    real, client._writer = client._writer, Catch()
    try:
        run.log(row, step=int(_CHECK_STEPS[0]), commit=True)
    except Exception as e:
        return f"run.log raised {type(e).__name__}: {e}"
    finally:
        client._writer = real
        if local_step is not None:
            run._local_step = local_step  # the check's row is not a step of the run
    header_bytes = struct.calcsize(header_format)
    theirs, others, pos = None, [], 0
    while pos + header_bytes <= len(caught):
        _, length = struct.unpack_from(header_format, caught, pos)
        piece = bytes(caught[pos : pos + header_bytes + length])
        request = spb.ServerRequest()
        request.ParseFromString(piece[header_bytes:])
        items = request.record_publish.request.partial_history.item
        if theirs is None and any(item.key == "lrscan_check_lr" for item in items):
            theirs, now = piece, next((item.value_json for item in items if item.key == "_timestamp"), "")
        else:
            others.append(piece)
        pos += header_bytes + length
    if others:
        send(b"".join(others))
    if theirs is None:
        return "run.log sent no history record on wandb's socket"
    ours = frame(_CHECK_STEPS, _CHECK_COLUMNS, _CHECK_EXTRA, now)
    if ours != theirs:
        return f"our frame differs from run.log's ({len(ours)} vs {len(theirs)} bytes)"
    return ""


def _json_column(values: np.ndarray) -> list[str]:
    # wandb's JSON dialect for a column of numbers (ints stay ints); NaN and the infinities are tokens
    texts = [repr(v) for v in values.tolist()]
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        texts = [_NON_FINITE.get(t, t) for t in texts]
    return texts


_NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def _json_number(v: float) -> str:
    # wandb's JSON dialect: NaN, Infinity, -Infinity are tokens
    if v != v:
        return "NaN"
    if v in (float("inf"), float("-inf")):
        return "Infinity" if v > 0 else "-Infinity"
    return repr(float(v)) if not isinstance(v, int) else str(v)


def logged_through(run, init: InitArgs) -> int:
    """The last step up to which this run's history is complete when it is resumed, else -1.

    The resumed trainer re-trains from its checkpoint's step and logs only the steps after this
    one. Online, the server knows (`run.starting_step` is the next step). Offline, each process
    segment of a resumed run is its own `offline-run-*-<id>` folder: read the earlier segments and
    find the first step missing from the checkpoint's step on (a segment killed before wandb-core
    flushed may end early, or have a hole); everything from there is logged again. A damaged or
    empty segment counts for the steps it still holds.
    """
    if not init.resume:
        return -1
    if init.mode == "online":
        return int(getattr(run, "starting_step", 0) or 0) - 1
    from lrscan.pipeline.runlog import read_run_file  # the analysis' reader; imported only when resuming

    this_segment = Path(run.dir).parent
    logged: set[int] = set()
    for path in this_segment.parent.glob(f"*-{run.id}/run-{run.id}.wandb"):
        if path.parent == this_segment:
            continue
        try:
            logged.update(read_run_file(path, keys=[keys.LOSS]).history["step"].tolist())
        except Exception as e:  # an unreadable segment holds no steps we can trust
            print(f"lrscan: skipping unreadable segment {path}: {e}", file=sys.stderr)
    step = init.resume_step
    while step in logged:
        step += 1
    return step - 1
