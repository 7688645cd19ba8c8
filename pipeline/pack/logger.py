"""One wandb logging process for all the members of a pack: K runs in it (`reinit="create_new"`), one per member.

The single trainer's logger (`pipeline.train.tracking.RunLogger`) keeps its wandb run in a process of
its own; a pack could start one such process per member. Measured here with K=8 runs of 20k rows
each (2 shared cores, wandb 0.31 offline, `benchmarks/bench_pack.py --loggers`, two runs): one process
per member took 15.0-17.3 s wall, 29.1-34.8 s CPU, 2.4-2.5 GiB peak memory (K Python processes and
K wandb-core services); one process holding the K runs took 6.2-14.6 s wall, 11.8-20.3 s CPU, ~300 MiB.
So a pack has one logger process, fed through one socket, each message naming its member; each run
is still its own run (its id, name, group, tags, config, history, summary, and the trainer's program
and arguments as W&B's record of the run's command), written with the same records as the single
trainer's logger.

A member's run can end while the pack goes on (its member stopped or finished): the process
finishes that run and says whether it could. If the trainer dies (SIGKILL), the process sees its
socket close, logs what it was handed and finishes every open run with exit code 1, like the
single trainer's logger. Every wait of the trainer on the process has a bound.
"""

from __future__ import annotations

import traceback
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from lrscan.pipeline.train.runwriter import history_writer, hold_run_lock, init_run, logger_connection, set_up_run
from lrscan.pipeline.train.tracking import (
    ACK_TIMEOUT_SECONDS,
    FINISH_TIMEOUT_SECONDS,
    QUEUE_CHUNKS,
    START_TIMEOUT_SECONDS,
    InitArgs,
    LoggerProcess,
    NoLogger,
    RunInfo,
)


class PackLogger(LoggerProcess):
    """The trainer's side: K wandb runs in one separate process (see LoggerProcess), fed in order, every wait bounded.

    `start()` opens the runs (a list with one RunInfo or error line per member); `member(k)` is a
    handle with the single trainer's logger interface (log_steps, summary, flush, finish).
    """

    DIED = "the wandb logging process of the pack died; the runs' histories stop at the last chunk it logged"
    HISTORY_STOPS = "the runs' histories stop at the last chunk it logged"
    RUNS = "the runs"
    WAITING_FOR = "the pack's runs"
    MAY_LACK = "the runs may lack their last steps or their summaries"

    def __init__(self, inits: list[InitArgs], *, ack_timeout_s: float = ACK_TIMEOUT_SECONDS,
                 finish_timeout_s: float = FINISH_TIMEOUT_SECONDS, fork: bool = False):
        # each member sends one chunk per pack chunk; fork: see tracking.ForkedProcess
        super().__init__("from lrscan.pipeline.pack.logger import logger_main; logger_main()", inits,
                         QUEUE_CHUNKS * max(1, len(inits)), ack_timeout_s=ack_timeout_s,
                         finish_timeout_s=finish_timeout_s, fork=fork)
        self._n = len(inits)
        self._open: set[int] = set()
        self.finish_errors: dict[int, str] = {}  # member -> why its run could not be finished

    def start(self) -> list[RunInfo | str]:
        """Wait until every member's wandb.init has run: its RunInfo, or the line saying why it failed."""
        _, results = self._wait_for_start(START_TIMEOUT_SECONDS * max(1, self._n),
                                          "wandb.init did not answer in time; the wandb logging process was killed")
        self._open = {k for k, r in enumerate(results) if isinstance(r, RunInfo)}
        return results

    def member(self, k: int) -> MemberLogger:
        return MemberLogger(self, k)

    def _finish_member(self, k: int, exit_code: int) -> None:
        # the run is finished in the logger process while the pack goes on; its outcome comes back as an ack
        if k in self._open and not self._failed:
            self._open.discard(k)
            self._put(("finish", k, exit_code))

    def close(self, exit_code: int = 0) -> None:
        """Finish every run still open with `exit_code`, wait (bounded) for the process to exit. Idempotent.

        Raises LrscanError when the process failed, unless that was raised already."""
        last = [("finish", k, exit_code) for k in sorted(self._open)]
        self._open.clear()
        self._end([*last, ("close",)], acknowledged=True)

    def _wait_for_ack(self) -> tuple:
        message = super()._wait_for_ack()
        if message[0] == "finished" and message[2]:
            self.finish_errors[message[1]] = message[2]
        return message


class MemberLogger:
    """Member k's run, with the interface of the single trainer's logger."""

    def __init__(self, pack: PackLogger, k: int):
        self._pack, self.k = pack, k

    def log_steps(self, steps: np.ndarray, columns: dict[str, np.ndarray],
                  extra: dict[int, dict] | None = None) -> None:
        self._pack._put(("steps", self.k, np.asarray(steps, dtype=np.int64),
                         {c: np.asarray(v, dtype=np.float64) for c, v in columns.items()}, extra or {}))

    def summary(self, values: dict[str, Any]) -> None:
        self._pack._put(("summary", self.k, values))

    def flush(self) -> None:
        self._pack.flush()

    def finish(self, exit_code: int = 0) -> None:
        self._pack._finish_member(self.k, exit_code)


class NoPackLogger:
    """wandb_mode=disabled for every member: the same interface, no process and no wandb."""

    def __init__(self, inits: list[InitArgs]):
        self._members = [NoLogger(i) for i in inits]
        self.finish_errors: dict[int, str] = {}

    def start(self) -> list[RunInfo | str]:
        return [m.start() for m in self._members]

    def member(self, k: int) -> NoLogger:
        return self._members[k]

    def flush(self) -> None:
        pass

    def close(self, exit_code: int = 0) -> None:
        pass


def open_pack_logger(inits: list[InitArgs], fork: bool = False) -> PackLogger | NoPackLogger:
    # a pack's members share the wandb mode (it is part of the pack key)
    return NoPackLogger(inits) if all(i.mode == "disabled" for i in inits) else PackLogger(inits, fork=fork)


# -- the logger process ----------------------------------------------------------------------------


def logger_main() -> None:
    """The pack's logger, a process of its own: `python -c "from lrscan.pipeline.pack.logger import logger_main;
    logger_main()" FD`."""
    conn = logger_connection()
    inits: list[InitArgs] = conn.recv()
    import wandb

    runs: dict[int, Any] = {}
    writers: dict[int, Any] = {}
    locks: dict[int, Any] = {}
    results: list[RunInfo | str] = []
    for k, init in enumerate(inits):
        locks[k] = hold_run_lock(init.lock_path) if init.lock_path else None
        try:
            run = init_run(init, reinit="create_new")  # several runs in this process, each held here, none global
            results.append(set_up_run(run, init))
            runs[k], writers[k] = run, history_writer(run)
        except Exception as e:
            results.append(f"{type(e).__name__}: {e}")
    try:
        conn.send(("started", results))
        _drain(conn, runs, writers)
    except OSError:
        pass  # the trainer died before the runs were open: they end below like any other
    except BaseException:
        traceback.print_exc()
    for k in list(runs):  # the trainer is gone, or this process failed: what was handed over is logged
        _finish_run(runs.pop(k), 1)
    # teardown waits for wandb-core to write every run's file; the run locks are released after it
    # (when this process exits), so a resumed member never reads a run file still being written
    wandb.teardown()


def _drain(conn: Connection, runs: dict, writers: dict) -> None:
    """Log every message in order until told to close, or until the trainer is gone."""
    while True:
        try:
            item = conn.recv()
        except (EOFError, OSError):
            return
        kind = item[0]
        reply: tuple = ("ack",)
        if kind == "steps":
            writers[item[1]](*item[2:])
        elif kind == "summary":
            runs[item[1]].summary.update(item[2])
        elif kind == "finish":
            k = item[1]
            reply = ("finished", k, _finish_run(runs.pop(k), int(item[2])))
        try:
            conn.send(reply)
        except OSError:
            return
        if kind == "close":
            return


def _finish_run(run, exit_code: int) -> str:
    # one run's failure to finish is said for that run; the others go on
    try:
        run.finish(exit_code=exit_code)
        return ""
    except Exception as e:
        traceback.print_exc()
        return f"{type(e).__name__}: {e}"
