"""The only module that talks to wandb during training.

`wandb.log` costs ~300-500 us per call here, most of it waiting on the IPC round trip to wandb-core,
as long as a training step of this model. A logging thread does not help: it holds the GIL and
shares the 2 cores with the trainer and wandb-core. So the wandb run lives in its own process: the
trainer hands it the values of many steps at once through a bounded queue (ordered, one consumer;
a full queue blocks the trainer rather than dropping anything) and the logger process makes one
`run.log(..., step=s)` call per training step. At the end, and on any error, the trainer sends the
summary and a finish message and waits for the process to flush and exit.

If the trainer dies without a word (SIGKILL), the logger notices its parent is gone, logs what is
still queued, and finishes the run with a non-zero exit code: nothing that was handed over is lost.

The logger process also calls `wandb.init`, so it is the one that sees a sweep's locked config;
it sends `dict(run.config)` back and the trainer rebuilds its TrainConfig from it.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import keys
from pipeline.errors import LrscanError

QUEUE_CHUNKS = 16          # chunks in flight before the trainer waits for the logger
PARENT_POLL_SECONDS = 1.0  # how often an idle logger checks that the trainer is still alive
START_TIMEOUT_SECONDS = 300.0


@dataclass
class RunInfo:
    run_id: str
    name: str = ""
    project: str = ""
    url: str = ""
    run_dir: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    # steps up to here are already in the run's history (a resumed run): train them, do not log them again
    logged_through_step: int = -1


@dataclass(frozen=True)
class InitArgs:
    """What `wandb.init` gets; plain data so it crosses the process boundary."""

    run_id: str
    mode: str
    project: str
    entity: str
    group: str
    name: str
    tags: tuple[str, ...]
    job_type: str
    config: dict[str, Any]
    resume: bool
    define_lre_axis: bool  # range tests: plot loss against lre in the W&B UI
    lock_path: str = ""    # held while the run is open: one process per run id at a time


class RunLogger:
    """A wandb run in a separate process, fed chunks of per-step values in order."""

    def __init__(self, init: InitArgs, queue_chunks: int = QUEUE_CHUNKS):
        ctx = mp.get_context("spawn")  # no fork of a process holding torch's thread pools
        self._queue = ctx.Queue(maxsize=queue_chunks)
        self._parent_end, child_end = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(target=_logger_main, args=(init, self._queue, child_end, os.getpid()),
                                 name="lrscan-logger", daemon=False)
        self._proc.start()
        child_end.close()
        self._finished = False

    def start(self) -> RunInfo:
        """Wait until wandb.init has run in the logger process; its run id, dir and (locked) config."""
        if not self._parent_end.poll(START_TIMEOUT_SECONDS):
            self._proc.kill()
            raise LrscanError(f"wandb.init did not answer within {START_TIMEOUT_SECONDS:.0f} s")
        try:
            kind, payload = self._parent_end.recv()
        except EOFError:
            raise LrscanError("the wandb logging process died during wandb.init (see its output above)") from None
        if kind == "error":
            self._proc.join()
            raise LrscanError(f"wandb.init failed: {payload}")
        return payload

    def log_steps(self, steps: np.ndarray, columns: dict[str, np.ndarray], extra: dict[int, dict] | None = None) -> None:
        """Queue one row per step: {key: columns[key][i]} at step steps[i], plus extra[step] where given."""
        self._put(("steps", np.asarray(steps, dtype=np.int64), {k: np.asarray(v, dtype=np.float64) for k, v in columns.items()}, extra or {}))

    def summary(self, values: dict[str, Any]) -> None:
        self._put(("summary", values))

    def finish(self, exit_code: int = 0) -> None:
        """Log everything queued, finish the run, wait for the process. Idempotent."""
        if self._finished:
            return
        self._finished = True
        try:
            self._put(("finish", exit_code))
        except LrscanError:
            pass  # the process is gone already; nothing more can reach wandb
        self._proc.join()
        if self._proc.exitcode not in (0, None):
            raise LrscanError(f"the wandb logging process exited with code {self._proc.exitcode}")

    def _put(self, item: tuple) -> None:
        # a bounded put that notices a dead consumer instead of blocking forever
        while True:
            try:
                self._queue.put(item, timeout=1.0)
                return
            except queue.Full:
                if not self._proc.is_alive():
                    raise LrscanError("the wandb logging process died; the run's history stops at the last chunk it logged") from None


class NoLogger:
    """wandb_mode=disabled: the same interface, no process and no wandb."""

    def __init__(self, init: InitArgs):
        self._info = RunInfo(run_id=init.run_id, config=dict(init.config))

    def start(self) -> RunInfo:
        return self._info

    def log_steps(self, steps, columns, extra=None) -> None:
        pass

    def summary(self, values) -> None:
        pass

    def finish(self, exit_code: int = 0) -> None:
        pass


def open_logger(init: InitArgs) -> RunLogger | NoLogger:
    return NoLogger(init) if init.mode == "disabled" else RunLogger(init)


# -- the logger process ----------------------------------------------------------------------------


def _logger_main(init: InitArgs, q: "mp.Queue", conn, parent_pid: int) -> None:
    # Ctrl-C and SIGTERM reach the whole process group: the trainer decides when to stop and tells
    # us, or dies and we notice. Either way we drain the queue first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    lock = _hold_run_lock(init.lock_path) if init.lock_path else None  # noqa: F841 (released when we exit)
    import wandb

    try:
        run = wandb.init(
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
            settings=wandb.Settings(console="off", x_disable_stats=True),
        )
    except Exception as e:
        conn.send(("error", f"{type(e).__name__}: {e}"))
        return
    try:
        run.define_metric(keys.LRE)
        if init.define_lre_axis:
            for k in (keys.LOSS, keys.LOG10_LOSS, keys.SMOOTH_LOSS):
                run.define_metric(k, step_metric=keys.LRE)
        conn.send(("ok", RunInfo(
            run_id=run.id, name=run.name or "", project=run.project or "", url=run.url or "",
            run_dir=run.dir, config=dict(run.config), logged_through_step=_logged_through(run, init),
        )))
        exit_code = _drain(run, q, parent_pid, history_writer(run))
    except BaseException:
        traceback.print_exc()
        exit_code = 1
    run.finish(exit_code=exit_code)
    # finish() can return before wandb-core has written the .wandb file (seen with 0.31 offline:
    # a reader right after found only its header); teardown waits for wandb-core to exit
    wandb.teardown()


def _drain(run, q: "mp.Queue", parent_pid: int, write) -> int:
    """Log every queued item in order until told to finish (its exit code) or the trainer is gone (1)."""
    while True:
        try:
            item = q.get(timeout=PARENT_POLL_SECONDS)
        except queue.Empty:
            if os.getppid() != parent_pid:
                return 1
            continue
        kind = item[0]
        if kind == "steps":
            _, steps, columns, extra = item
            names = list(columns)
            rows = zip(*(columns[k].tolist() for k in names))
            for step, values in zip(steps.tolist(), rows):
                row = dict(zip(names, values))
                if step in extra:
                    row.update(extra[step])
                write(step, row)
        elif kind == "summary":
            run.summary.update(item[1])
        elif kind == "finish":
            return int(item[1])


def _hold_run_lock(path: str):
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


def history_writer(run):
    """A function (step, row) -> None that appends one history row to the run.

    `run.log` spends ~300-800 us per call here: dict-to-JSON conversion, telemetry, and a blocking
    hand-off to wandb's asyncio thread that waits for the socket write. For plain floats at an
    explicit step, the row it sends wandb-core is one `PartialHistoryRequest` with a JSON value per
    key; we build that record ourselves and queue it without waiting (~150 us). wandb-core sees
    exactly what `run.log(row, step=step)` would send, so history, summary and sync are unchanged
    (tests/test_tracking.py reads the `.wandb` file back). The record types are wandb's own
    protobufs; the two interface methods are private, so if a wandb release renames them we fall
    back to `run.log` rather than fail.
    """
    iface = getattr(run, "_interface", None)
    if iface is None or not hasattr(iface, "_make_request") or not hasattr(iface, "_publish"):
        return lambda step, row: run.log(row, step=step)
    from wandb.proto import wandb_internal_pb2 as pb

    def write(step: int, row: dict) -> None:
        request = pb.PartialHistoryRequest()
        for k, v in row.items():
            item = request.item.add()
            item.key = k
            item.value_json = _json_number(v)
        item = request.item.add()
        item.key = "_timestamp"
        item.value_json = repr(time.time())
        request.step.num = step
        request.action.flush = True
        iface._publish(iface._make_request(partial_history=request), nowait=True)

    return write


def _json_number(v: float) -> str:
    # wandb's JSON dialect: NaN, Infinity, -Infinity are tokens
    if v != v:
        return "NaN"
    if v in (float("inf"), float("-inf")):
        return "Infinity" if v > 0 else "-Infinity"
    return repr(float(v)) if not isinstance(v, int) else str(v)


def _logged_through(run, init: InitArgs) -> int:
    """The last step already in this run's history when it is resumed, else -1.

    Online, the server knows (`run.starting_step` is the next step). Offline, each process segment of
    a resumed run is its own `offline-run-*-<id>` folder: read the earlier segments' `.wandb` files.
    """
    if not init.resume:
        return -1
    if init.mode == "online":
        return int(getattr(run, "starting_step", 0) or 0) - 1
    from analysis.wandb_file import read_run_file  # the analysis' reader; imported only when resuming

    this_segment = Path(run.dir).parent
    last = -1
    for path in this_segment.parent.glob(f"*-{run.id}/run-{run.id}.wandb"):
        if path.parent == this_segment:
            continue
        steps = read_run_file(path, keys=[keys.LOSS]).history["step"]
        if len(steps):
            last = max(last, int(steps.max()))
    return last
