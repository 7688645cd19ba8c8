"""One wandb logging process for all the members of a pack: K runs in it (`reinit="create_new"`), one per member.

The single trainer's logger (`pipeline.train.tracking.RunLogger`) keeps its wandb run in a process of
its own; a pack could start one such process per member. Measured here with K=8 runs of 20k rows
each (2 shared cores, wandb 0.31 offline, `benchmarks/bench_pack.py --loggers`, two runs): one process
per member took 17.2-17.3 s wall, 33.5-34.8 s CPU, 2.5 GiB peak memory (K Python processes and K
wandb-core services); one process holding the K runs took 6.2-14.6 s wall, 11.9-20.3 s CPU, 306 MiB.
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

import os
import signal
import socket
import struct
import subprocess
import sys
import time
import traceback
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import keys
from pipeline.errors import LrscanError
from pipeline.train.tracking import (
    ACK_TIMEOUT_SECONDS,
    FINISH_NOTICE_SECONDS,
    FINISH_TIMEOUT_SECONDS,
    KILL_WAIT_SECONDS,
    PARENT_POLL_SECONDS,
    QUEUE_CHUNKS,
    START_TIMEOUT_SECONDS,
    InitArgs,
    RunInfo,
    history_writer,
    hold_run_lock,
    logged_through,
)

_DIED = "the wandb logging process of the pack died; the runs' histories stop at the last chunk it logged"


class PackLogger:
    """The trainer's side: K wandb runs in one separate process, fed in order, every wait bounded.

    `start()` opens the runs (a list with one RunInfo or error line per member); `member(k)` is a
    handle with the single trainer's logger interface (log_steps, summary, flush, finish).
    """

    def __init__(self, inits: list[InitArgs], *, ack_timeout_s: float = ACK_TIMEOUT_SECONDS,
                 finish_timeout_s: float = FINISH_TIMEOUT_SECONDS):
        parent_sock, child_sock = socket.socketpair()
        whole_s = int(ack_timeout_s)
        parent_sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO,
                               struct.pack("ll", whole_s, int((ack_timeout_s - whole_s) * 1e6)))
        self._conn = Connection(parent_sock.detach())
        fd = child_sock.fileno()
        root = str(Path(__file__).resolve().parents[2])  # the folder holding the pipeline package
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)}
        # a session of its own: a kill of the pack's process group must not take the runs' last steps with it
        main = "from pipeline.pack.logger import logger_main; logger_main()"
        self._proc = subprocess.Popen([sys.executable, "-c", main, str(fd)], pass_fds=(fd,), stdin=subprocess.DEVNULL,
                                      env=env, start_new_session=True)
        child_sock.close()
        self._n = len(inits)
        self._queue = QUEUE_CHUNKS * max(1, len(inits))  # each member sends one chunk per pack chunk
        self._ack_timeout_s = ack_timeout_s
        self._finish_timeout_s = finish_timeout_s
        self._in_flight = 0
        self._open: set[int] = set()
        self.finish_errors: dict[int, str] = {}  # member -> why its run could not be finished
        self._closed = False
        self._failed = False
        self._conn.send(inits)

    @property
    def pid(self) -> int:
        return self._proc.pid

    def start(self) -> list[RunInfo | str]:
        """Wait until every member's wandb.init has run: its RunInfo, or the line saying why it failed."""
        deadline = time.monotonic() + START_TIMEOUT_SECONDS * max(1, self._n)
        while not self._conn.poll(PARENT_POLL_SECONDS):
            if self._proc.poll() is not None:
                raise self._failure("the wandb logging process died during wandb.init (see its output above)")
            if time.monotonic() > deadline:
                self._kill()
                raise self._failure("wandb.init did not answer in time; the wandb logging process was killed")
        _, results = self._recv()
        self._open = {k for k, r in enumerate(results) if isinstance(r, RunInfo)}
        return results

    def member(self, k: int) -> MemberLogger:
        return MemberLogger(self, k)

    # -- what the member handles call

    def _put(self, item: tuple) -> None:
        if self._failed:
            raise LrscanError("the wandb logging process failed earlier (see the error above); nothing more reaches "
                              "the runs")
        while self._in_flight >= self._queue:
            self._wait_for_ack()
        try:
            self._conn.send(item)
        except BlockingIOError:
            self._kill()
            raise self._failure(self._stuck_message()) from None
        except OSError:
            raise self._failure(_DIED) from None
        self._in_flight += 1

    def flush(self) -> None:
        while self._in_flight:
            self._wait_for_ack()

    def _finish_member(self, k: int, exit_code: int) -> None:
        # the run is finished in the logger process while the pack goes on; its outcome comes back as an ack
        if k in self._open and not self._failed:
            self._open.discard(k)
            self._put(("finish", k, exit_code))

    def close(self, exit_code: int = 0) -> None:
        """Finish every run still open with `exit_code`, wait (bounded) for the process to exit. Idempotent.

        Raises LrscanError when the process failed, unless that was raised already."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._failed:
                self._reap()
                return
            for k in sorted(self._open):
                self._put(("finish", k, exit_code))
            self._open.clear()
            self._put(("close",))
            self.flush()
            code = self._wait_for_exit()
            if code != 0:
                raise self._failure(f"the wandb logging process exited with code {code}; "
                                    f"the runs may lack their last steps or their summaries")
        finally:
            self._conn.close()

    # -- waiting, bounded

    def _recv(self) -> tuple:
        try:
            return self._conn.recv()
        except (EOFError, OSError):
            raise self._failure(_DIED) from None

    def _wait_for_ack(self) -> None:
        deadline = time.monotonic() + self._ack_timeout_s
        while not self._conn.poll(min(PARENT_POLL_SECONDS, max(deadline - time.monotonic(), 0.0))):
            if self._proc.poll() is not None:
                raise self._failure(_DIED)
            if time.monotonic() >= deadline:
                self._kill()
                raise self._failure(self._stuck_message())
        message = self._recv()
        if message[0] == "finished" and message[2]:
            self.finish_errors[message[1]] = message[2]
        self._in_flight -= 1

    def _wait_for_exit(self) -> int:
        deadline = time.monotonic() + self._finish_timeout_s
        try:
            return self._proc.wait(timeout=min(FINISH_NOTICE_SECONDS, self._finish_timeout_s))
        except subprocess.TimeoutExpired:
            pass
        remaining_s = deadline - time.monotonic()
        if remaining_s > 0:
            print(f"lrscan: waiting for wandb to finish the pack's runs (at most {remaining_s:.0f} s more)",
                  file=sys.stderr, flush=True)
            try:
                return self._proc.wait(timeout=remaining_s)
            except subprocess.TimeoutExpired:
                pass
        self._kill()
        raise self._failure(f"the wandb logging process did not finish the runs within {self._finish_timeout_s:.0f} s "
                            f"and was killed; the runs may lack their last steps or their summaries")

    def _stuck_message(self) -> str:
        return (f"the wandb logging process took no steps for {self._ack_timeout_s:.0f} s and was killed; "
                f"the runs' histories stop at the last chunk it logged")

    def _failure(self, message: str) -> LrscanError:
        self._failed = True
        return LrscanError(message)

    def _kill(self) -> None:
        self._proc.kill()
        self._reap()

    def _reap(self) -> None:
        try:
            self._proc.wait(timeout=KILL_WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            print(f"lrscan: the wandb logging process (pid {self._proc.pid}) is still there {KILL_WAIT_SECONDS:.0f} s "
                  f"after it was told to exit or killed; leaving it", file=sys.stderr)


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
        self._infos = [RunInfo(run_id=i.run_id, config=dict(i.config)) for i in inits]
        self.finish_errors: dict[int, str] = {}

    def start(self) -> list[RunInfo | str]:
        return list(self._infos)

    def member(self, k: int) -> NoMemberLogger:
        return NoMemberLogger()

    def flush(self) -> None:
        pass

    def close(self, exit_code: int = 0) -> None:
        pass


class NoMemberLogger:
    def log_steps(self, steps, columns, extra=None) -> None:
        pass

    def summary(self, values) -> None:
        pass

    def flush(self) -> None:
        pass

    def finish(self, exit_code: int = 0) -> None:
        pass


def open_pack_logger(inits: list[InitArgs]) -> PackLogger | NoPackLogger:
    # a pack's members share the wandb mode (it is part of the pack key)
    return NoPackLogger(inits) if all(i.mode == "disabled" for i in inits) else PackLogger(inits)


# -- the logger process ----------------------------------------------------------------------------


def logger_main() -> None:
    """The pack's logger process: `python -c "from pipeline.pack.logger import logger_main; logger_main()" FD`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    conn = Connection(int(sys.argv[1]))
    inits: list[InitArgs] = conn.recv()
    import wandb

    runs: dict[int, Any] = {}
    writers: dict[int, Any] = {}
    locks: dict[int, Any] = {}
    results: list[RunInfo | str] = []
    for k, init in enumerate(inits):
        locks[k] = hold_run_lock(init.lock_path) if init.lock_path else None
        launch = {}
        if init.launch is not None:
            # wandb records `program` from its settings and `args` from sys.argv when the run starts
            sys.argv = [init.launch.program, *init.launch.args]
            launch = {"program": init.launch.program}
        try:
            run = wandb.init(
                id=init.run_id, mode=init.mode, project=init.project or None, entity=init.entity or None,
                group=init.group or None, name=init.name or None, tags=list(init.tags) or None,
                job_type=init.job_type or None, config=init.config, resume="allow" if init.resume else None,
                reinit="create_new",  # several runs in this process, each held here, none global
                settings=wandb.Settings(console="off", x_disable_stats=True, x_server_side_derived_summary=True,
                                        **launch),
            )
            run.define_metric(keys.LRE)
            if init.define_lre_axis:
                for key in (keys.LOSS, keys.LOG10_LOSS, keys.SMOOTH_LOSS):
                    run.define_metric(key, step_metric=keys.LRE)
            results.append(RunInfo(run_id=run.id, name=run.name or "", project=run.project or "", url=run.url or "",
                                   run_dir=run.dir, config=dict(run.config),
                                   logged_through_step=logged_through(run, init)))
            runs[k], writers[k] = run, history_writer(run)
        except Exception as e:
            results.append(f"{type(e).__name__}: {e}")
    conn.send(("started", results))
    try:
        _drain(conn, runs, writers)
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
            _, k, steps, columns, extra = item
            names = list(columns)
            rows = [dict(zip(names, values)) for values in zip(*(columns[c].tolist() for c in names))]
            first = int(steps[0]) if len(steps) else 0
            for step, extra_row in extra.items():
                if 0 <= step - first < len(rows):
                    rows[step - first].update(extra_row)
            writers[k](list(zip(steps.tolist(), rows)))
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
