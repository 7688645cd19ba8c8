"""The trainer's side of a run's W&B logging: a logging process fed chunks of rows, every wait bounded.

`wandb.log` costs ~300-500 us per call here, most of it waiting on the IPC round trip to wandb-core,
as long as a training step of this model. A logging thread does not help: it holds the GIL and
shares the 2 cores with the trainer and wandb-core. So the wandb run lives in its own process: the
trainer hands it the values of many steps at once through a bounded queue (ordered, one consumer;
a full queue blocks the trainer rather than dropping anything) and the logger process writes one
history row per training step, exactly what `run.log(row, step=s)` would (that process' side, the
only code that talks to wandb during training, is pipeline/train/runwriter.py). At the end, and on any
error, the trainer sends the summary and a finish message and waits for the process to flush and exit.

If the trainer dies without a word (SIGKILL), the logger sees its socket close, logs what it was
handed, and finishes the run with a non-zero exit code: nothing that was handed over is lost. The
other way round, every wait of the trainer on the logger has a bound: a logger that stops answering
is killed with a message saying so, and a training error is never hidden by a failure to finish.

wandb records the program and arguments of the process that calls `wandb.init` (the W&B UI's
"command" of a run). That is the logger, so the trainer sends its own (`Launch`) and the logger
records those instead.

The logger process also calls `wandb.init`, so it is the one that sees a sweep's locked config;
it sends `dict(run.config)` back and the trainer rebuilds its TrainConfig from it.

Start-up: a fresh interpreter, `import wandb`, its service and `wandb.init` take seconds, as long as
thousands of training steps. Where the trainer needs nothing from `wandb.init` (not under a sweep agent,
whose config comes from it, nor when resuming, which needs the run's logged history), it does not wait:
`start(wait=False)` returns at once and the first steps train while the logger comes up. Their rows are
buffered meanwhile, bounded: in the socket and at most `queue_chunks` unacknowledged chunks, after which
the trainer waits for the logger (within the start's bound). A run whose online `wandb.init` fails keeps
its rows in an offline run on disk (the logger opens one with the same id instead) and fails with one
line naming the folder `wandb sync` uploads, at the first chunk after the answer came; nothing trained is lost.
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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from lrscan.pipeline.errors import LrscanError

QUEUE_CHUNKS = 16          # chunks in flight before the trainer waits for the logger
PARENT_POLL_SECONDS = 1.0  # how often a waiting trainer checks that the logger is still alive
START_TIMEOUT_SECONDS = 300.0  # wandb.init, including the wait for a previous process of the same run
# a healthy logger takes a chunk in milliseconds (wandb-core queues it); minutes of silence mean it hangs
ACK_TIMEOUT_SECONDS = 300.0
# run.finish uploads whatever is left online: for a long run on a slow link that can take many minutes
FINISH_TIMEOUT_SECONDS = 1800.0
FINISH_NOTICE_SECONDS = 30.0  # a finish slower than this says what the trainer is waiting for
KILL_WAIT_SECONDS = 10.0  # after SIGKILL, how long to wait for the process to be gone
RUN_LOGGER_MAIN = "from lrscan.pipeline.train.runwriter import logger_main; logger_main()"  # a run's logging process


@dataclass(frozen=True)
class Launch:
    """How the training process was started, as W&B records it for every run (`program`, `args`)."""

    program: str              # as wandb writes it: a script's path, or "-m package.module"
    args: tuple[str, ...] = ()


def this_process_launch() -> Launch:
    """What `wandb.init` would record had it been called in this process (wandb's own rule, which
    reads `__main__` and `sys.argv`); for a command line's edge, and for callers of `train()` in Python."""
    import __main__

    spec = getattr(__main__, "__spec__", None)
    # `python -m pipeline.train` runs the package's __main__ module: record what the user typed
    module = spec.name.removesuffix(".__main__") if spec is not None else ""
    program = f"-m {module}" if module else getattr(__main__, "__file__", "")
    return Launch(program=program or "<python with no main file>", args=tuple(sys.argv[1:]))


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
    resume_step: int = 0   # a resumed run restarts here: its history must be complete from this step on
    launch: Launch | None = None  # the trainer's program and arguments, for W&B's record of the run
    # the trainer trains while wandb.init runs: a failed online init keeps the rows in an offline run instead
    overlapped: bool = False


class SpawnedLogger:
    """A logging process and the trainer's end of its socket, started before the message that says what to log.

    `LoggerProcess` starts one for itself. The command line starts a run's own ahead (`spawn_run_logger`),
    once its flags are good and before it imports torch, so the fresh interpreter imports wandb while the
    trainer imports torch (~0.9 s each here) and is ready sooner. A process that never gets its run (bad
    data, a finished run, W&B disabled) is closed: it has logged nothing, so it is killed at once.
    """

    def __init__(self, main: str, ack_timeout_s: float = ACK_TIMEOUT_SECONDS, *, fork: bool = False):
        parent_sock, child_sock = socket.socketpair()
        # a send into a full socket (a logger that stopped reading) fails after the same bound as an acknowledgement
        whole_s = int(ack_timeout_s)
        parent_sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO,
                               struct.pack("ll", whole_s, int((ack_timeout_s - whole_s) * 1e6)))
        self.conn = Connection(parent_sock.detach())
        fd = child_sock.fileno()
        root = str(Path(__file__).resolve().parents[2])  # the folder holding the pipeline package
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)}
        # its own wandb service, as every run started from the command line has and as `wandb agent` gives its
        # children: a run never opens in the service of the process that started us (a notebook's wandb.init),
        # where a study's killed points stayed "in use" for the runs resuming them (pipeline/sweep/command.py)
        env.pop("WANDB_SERVICE", None)
        # a session of its own: a kill of the trainer's process group (a sweep runner's or Slurm's
        # SIGKILL) must not take the logger with it, or the steps it was still writing would be lost
        if fork:
            self.proc: subprocess.Popen | ForkedProcess = ForkedProcess(main, fd, env, close_fds=(self.conn.fileno(),))
        else:
            self.proc = subprocess.Popen([sys.executable, "-c", main, str(fd)],
                                         pass_fds=(fd,), stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        child_sock.close()
        self.taken = False  # a LoggerProcess holds it: closing it is that one's business

    def close(self) -> None:
        """A process no run took: killed and reaped (bounded). Nothing to do once a run took it."""
        if self.taken:
            return
        self.taken = True
        self.conn.close()
        self.proc.kill()
        try:
            self.proc.wait(timeout=KILL_WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            pass


def spawn_run_logger() -> SpawnedLogger:
    """A run's logging process, started ahead: for `open_logger(..., spawned=)` (the command line's edge)."""
    return SpawnedLogger(RUN_LOGGER_MAIN)


class LoggerProcess:
    """The trainer's end of a wandb logging process: messages sent in order, every wait bounded.

    The process is a fresh interpreter (`python -c main FD`), not a multiprocessing child: it imports
    wandb but not torch, nor the trainer's main module, which saves ~2.5 s of start-up per run.
    The two talk over a socket pair with multiprocessing's Connection (pickled messages). The queue
    is bounded by credit: at most `queue_chunks` messages are unacknowledged; the trainer waits for
    an acknowledgement before sending more. When the trainer dies, the socket closes and the logger
    sees end-of-file: it logs what it has and finishes its runs with exit code 1.

    Every wait has a bound (`ack_timeout_s` for a chunk, `finish_timeout_s` for the end); past it
    the logger is killed and an LrscanError says what it did not do. A failure already raised is
    not raised again at the end. RunLogger (one run) and pipeline.pack's PackLogger (a pack's runs)
    are built on it; the class attributes below are how their messages name what the process holds.
    """

    DIED = "the wandb logging process died; the run's history stops at the last chunk it logged"
    HISTORY_STOPS = "the run's history stops at the last chunk it logged"  # after a logger stuck in a chunk
    RUNS = "the run"              # what a logger killed at the end did not finish
    WAITING_FOR = "the run"       # what a slow finish waits for
    MAY_LACK = "the run may lack its last steps or its summary"

    def __init__(self, main: str, first: Any, queue_chunks: int, *, ack_timeout_s: float, finish_timeout_s: float,
                 fork: bool = False, spawned: SpawnedLogger | None = None):
        # spawned: a process started ahead for this run (`SpawnedLogger`), else one starts now
        spawned = spawned if spawned is not None else SpawnedLogger(main, ack_timeout_s, fork=fork)
        spawned.taken = True
        self._conn, self._proc = spawned.conn, spawned.proc
        self._queue_chunks = queue_chunks
        self._ack_timeout_s = ack_timeout_s
        self._finish_timeout_s = finish_timeout_s
        self._in_flight = 0
        self._finished = False
        self._failed = False  # a failure of the logger was raised to the trainer already
        self._start_deadline = time.monotonic() + START_TIMEOUT_SECONDS
        self._pending_start = False  # start(wait=False): the answer to the first message is still to be read
        self._late_failure = ""  # an online wandb.init failed and the rows went to an offline run: still to be said
        self._conn.send(first)

    @property
    def pid(self) -> int:
        return self._proc.pid

    def flush(self) -> None:
        """Wait until the logger has handed every queued row to wandb-core (before a checkpoint:
        a run resumed from it must find its history at least up to the checkpoint's step)."""
        while self._in_flight:
            self._wait_for_ack()

    def _wait_for_start(self, timeout_s: float, timeout_message: str) -> tuple:
        # the answer to the first message: wandb.init has run in the logger process
        deadline = min(time.monotonic() + timeout_s, self._start_deadline)
        while not self._conn.poll(PARENT_POLL_SECONDS):
            if self._proc.poll() is not None:
                raise self._failure("the wandb logging process died during wandb.init (see its output above)")
            if time.monotonic() > deadline:
                self._kill()
                raise self._failure(timeout_message)
        return self._recv()

    def _end(self, last: list[tuple], acknowledged: bool) -> None:
        # send the last messages (`acknowledged`: the logger answers them), wait (bounded) for the process to exit
        if self._finished:
            return
        self._finished = True
        try:
            if self._failed:
                self._reap()
                return
            self._take_pending_start(say_now=False)  # a failed start is said after the exit below
            for item in last:
                self._put(item)
            if acknowledged:
                self.flush()
            code = self._wait_for_exit()
            if code != 0:
                raise self._failure(f"the wandb logging process exited with {_describe_exit(code)}; {self.MAY_LACK}")
            if self._late_failure:
                raise self._failure(self._late_failure)
        finally:
            self._conn.close()

    def _wait_for_exit(self) -> int:
        deadline = time.monotonic() + self._finish_timeout_s
        try:
            return self._proc.wait(timeout=min(FINISH_NOTICE_SECONDS, self._finish_timeout_s))
        except subprocess.TimeoutExpired:
            pass
        remaining_s = deadline - time.monotonic()
        if remaining_s > 0:
            # finishing online uploads what is left: say what we wait for when it takes a while
            print(f"lrscan: waiting for wandb to finish {self.WAITING_FOR} (at most {remaining_s:.0f} s more)",
                  file=sys.stderr, flush=True)
            try:
                return self._proc.wait(timeout=remaining_s)
            except subprocess.TimeoutExpired:
                pass
        self._kill()
        raise self._failure(f"the wandb logging process did not finish {self.RUNS} within "
                            f"{self._finish_timeout_s:.0f} s and was killed; {self.MAY_LACK}")

    def _recv(self) -> tuple:
        try:
            return self._conn.recv()
        except (EOFError, OSError):
            raise self._failure(self._died()) from None

    def _take_pending_start(self, say_now: bool = True) -> None:
        # a start that was not waited for: its answer comes before any acknowledgement
        if self._pending_start:
            self._pending_start = False
            self._take_start()
            if self._late_failure and say_now:
                # not a failure of the logger: the run is finished as usual (its exit code the trainer's), the
                # rows it was handed are kept in its offline run
                late, self._late_failure = self._late_failure, ""
                raise LrscanError(late)

    def _check_pending_start(self) -> None:
        # once per chunk, without waiting: a start that failed is said as soon as its answer is there
        if self._pending_start and self._conn.poll(0):
            self._take_pending_start()

    def _take_start(self) -> Any:
        raise NotImplementedError  # RunLogger's: a pack's logger is always waited for

    def _wait_for_ack(self) -> tuple:
        # one acknowledgement, noticing a dead or stuck logger instead of waiting forever
        self._take_pending_start()
        deadline = time.monotonic() + self._ack_timeout_s
        while not self._conn.poll(min(PARENT_POLL_SECONDS, max(deadline - time.monotonic(), 0.0))):
            if self._proc.poll() is not None:
                raise self._failure(self._died())
            if time.monotonic() >= deadline:
                self._kill()
                raise self._failure(self._stuck_message())
        message = self._recv()
        self._in_flight -= 1
        return message

    def _put(self, item: tuple) -> None:
        if self._failed:
            raise LrscanError(f"the wandb logging process failed earlier (see the error above); nothing more reaches "
                              f"{self.RUNS}")
        self._check_pending_start()
        # bounded: wait for an acknowledgement when too much is in flight
        while self._in_flight >= self._queue_chunks:
            self._wait_for_ack()
        try:
            self._conn.send(item)
        except BlockingIOError:
            self._kill()
            raise self._failure(self._stuck_message()) from None
        except OSError:
            raise self._failure(self._died()) from None
        self._in_flight += 1

    def _died(self) -> str:
        # how it ended, when it has (a killed logger is a zombie until reaped: its status is there at once)
        try:
            code = self._proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            return self.DIED
        return self.DIED.replace("died;", f"died ({_describe_exit(code)});")

    def _stuck_message(self) -> str:
        return (f"the wandb logging process took no steps for {self._ack_timeout_s:.0f} s and was killed; "
                f"{self.HISTORY_STOPS}")

    def _failure(self, message: str) -> LrscanError:
        self._failed = True
        return LrscanError(message)

    def _kill(self) -> None:
        # SIGKILL also ends a stopped process; wandb-core, its child, sees it gone and closes the run file
        self._proc.kill()
        self._reap()

    def _reap(self) -> None:
        try:
            self._proc.wait(timeout=KILL_WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            print(f"lrscan: the wandb logging process (pid {self._proc.pid}) is still there {KILL_WAIT_SECONDS:.0f} s "
                  f"after it was told to exit or killed; leaving it", file=sys.stderr)


def as_if_started(env: Mapping[str, str], argv: list[str]) -> None:
    """In a forked child: what a process started with `env` and `argv` would see (stdin from /dev/null)."""
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.environ.clear()
    os.environ.update(env)
    sys.argv = list(argv)


def end_forked_child(body: Callable[[], None]) -> NoReturn:
    """In a forked child: run `body`, then end the process (never returning into the parent's code) with the exit
    code a Python process would have: 0, a SystemExit's code, 130 after Ctrl-C, 1 (traceback printed) otherwise."""
    code = 1
    try:
        body()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except KeyboardInterrupt:
        code = 130
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


class ForkedProcess:
    """A logger process forked from this one instead of started fresh (`fork=True`): Popen's pid, poll, wait, kill.

    Only for a pack forked from pipeline.pack.launcher's server, where wandb is imported already and no thread runs
    yet: the fork saves the new interpreter and its import of wandb (~0.5 s a pack). The child is what
    `python -c MAIN FD` with `env`, in a session of its own, would be; it keeps none of the trainer's sockets.
    """

    def __init__(self, main: str, fd: int, env: Mapping[str, str], close_fds: tuple[int, ...] = ()):
        self.returncode: int | None = None
        self.pid = os.fork()
        if self.pid == 0:
            def child() -> None:
                os.setsid()
                for other in close_fds:
                    os.close(other)
                as_if_started(env, ["-c", str(fd)])
                exec(compile(main, "<lrscan logger>", "exec"), {"__name__": "__main__"})

            end_forked_child(child)

    def poll(self) -> int | None:
        if self.returncode is None:
            done, status = os.waitpid(self.pid, os.WNOHANG)
            if done:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout)
            time.sleep(0.01)
        return self.returncode

    def kill(self) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


class RunLogger(LoggerProcess):
    """A wandb run in a separate process (see LoggerProcess), fed chunks of per-step values in order."""

    def __init__(self, init: InitArgs, queue_chunks: int = QUEUE_CHUNKS, *, ack_timeout_s: float = ACK_TIMEOUT_SECONDS,
                 finish_timeout_s: float = FINISH_TIMEOUT_SECONDS, spawned: SpawnedLogger | None = None):
        super().__init__(RUN_LOGGER_MAIN, init, queue_chunks, ack_timeout_s=ack_timeout_s,
                         finish_timeout_s=finish_timeout_s, spawned=spawned)
        self._init = init

    def start(self, wait: bool = True) -> RunInfo:
        """Wait until wandb.init has run in the logger process; its run id, dir and (locked) config.

        wait=False (the trainer needs nothing from wandb.init; its InitArgs say `overlapped`): return at
        once what the trainer already knows (its run id and config); the answer is read, and a failure
        raised, at the first wait on the logger (a full queue, a flush, the finish)."""
        if not wait:
            self._pending_start = True
            return RunInfo(run_id=self._init.run_id, config=dict(self._init.config))
        return self._take_start()

    def _take_start(self) -> RunInfo:
        kind, payload = self._wait_for_start(START_TIMEOUT_SECONDS, f"wandb.init did not answer within "
                                             f"{START_TIMEOUT_SECONDS:.0f} s; the wandb logging process was killed")
        if kind == "error":
            try:
                self._proc.wait(timeout=KILL_WAIT_SECONDS)
            except subprocess.TimeoutExpired:
                self._kill()
            raise self._failure(f"wandb.init failed: {payload}")
        if kind == "offline":  # online init failed; the rows go to an offline run, the run fails at its end
            failure, payload = payload
            folder = Path(payload.run_dir).parent
            self._late_failure = (f"wandb.init failed ({failure}); the steps trained so far were logged offline "
                                  f"instead, in {folder}: `wandb sync {folder}` uploads them")
        changed = [k for k, v in self._init.config.items() if _plain(payload.config.get(k, v)) != _plain(v)]
        if self._init.overlapped and changed and not self._late_failure:
            # training began with the trainer's config; a config wandb.init hands out (a sweep's) cannot apply now
            self._late_failure = (f"wandb.init gave the run another config ({', '.join(sorted(changed))} differ) "
                                  f"after it began training with its own; a run whose config comes from W&B waits "
                                  f"for it (the command line does under wandb agent; train(..., "
                                  f"config_from_wandb=True))")
        return payload

    def log_steps(self, steps: np.ndarray, columns: dict[str, np.ndarray],
                  extra: dict[int, dict] | None = None) -> None:
        """Queue one row per step: {key: columns[key][i]} at step steps[i], plus extra[step] where given."""
        self._put(("steps", np.asarray(steps, dtype=np.int64),
                   {k: np.asarray(v, dtype=np.float64) for k, v in columns.items()}, extra or {}))

    def summary(self, values: dict[str, Any]) -> None:
        self._put(("summary", values))

    def finish(self, exit_code: int = 0, preempting: bool = False) -> None:
        """Log everything queued, finish the run, wait (bounded) for the process to exit. Idempotent.
        preempting: mark the run preempting first (`run.mark_preempting()`: a W&B sweep requeues it).

        Raises LrscanError when the run could not be finished, unless that failure was raised already."""
        self._end([("preempting",), ("finish", exit_code)] if preempting else [("finish", exit_code)],
                  acknowledged=False)


def _plain(value: Any) -> Any:
    # a config value as it compares across wandb's round trip (tuples come back as lists)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"code {code}"


def finish_after_error(logger: RunLogger | NoLogger, exit_code: int, error: BaseException,
                       preempting: bool = False) -> None:
    """Finish the run after training failed with `error` (preempting: marked so first, see RunLogger.finish).
    That error stays the one to report: a failure to finish the run is added to it as a note, never raised
    in its place."""
    try:
        logger.finish(exit_code, preempting=preempting)
    except Exception as e:
        error.add_note(f"also, the W&B run could not be finished: {e}")


class NoLogger:
    """wandb_mode=disabled: the same interface, no process and no wandb."""

    def __init__(self, init: InitArgs):
        self._info = RunInfo(run_id=init.run_id, config=dict(init.config))

    def start(self, wait: bool = True) -> RunInfo:
        return self._info

    def log_steps(self, steps, columns, extra=None) -> None:
        pass

    def summary(self, values) -> None:
        pass

    def flush(self) -> None:
        pass

    def finish(self, exit_code: int = 0, preempting: bool = False) -> None:
        pass


def open_logger(init: InitArgs, spawned: SpawnedLogger | None = None) -> RunLogger | NoLogger:
    """The run's logger; `spawned`: its process started ahead (`spawn_run_logger`), closed when W&B is disabled."""
    if init.mode == "disabled":
        if spawned is not None:
            spawned.close()
        return NoLogger(init)
    return RunLogger(init, spawned=spawned)
