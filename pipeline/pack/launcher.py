"""Pack processes forked from one server that has imported the pack's code (torch) once: no ~1 s import per pack.

    launcher = PackLauncher()                             # the server starts here: one import of torch
    pid = launcher.start(spec, log, env)                  # `python -m lrscan.pipeline.pack SPEC > LOG 2>&1`, forked
    code = launcher.wait(pid, timeout_s=3600)             # its exit code (negative: killed by that signal), or None
    launcher.close()

Why by hand: the study's search starts two packs at every rung (the demo: 12), each spending about a second
importing torch before its first step, a third of the search's time on 2 cores. multiprocessing's
`forkserver` does the same but prepares each child by running the parent's main script again as
`__mp_main__` (a script without an `if __name__ == "__main__"` guard would start its study again in
every pack), and hands over no exit code for a child killed by a signal. The server here is a plain
subprocess (`python -c`), single-threaded, which only imports and forks; each child sets its own
environment, sends its output to its log and runs the pack's `main` as the command would. The server and
its children stay in the caller's process group (a kill of the group stops them all); the server blocks
Ctrl-C and SIGTERM (the packs stop themselves, checkpointing) and ends when its stdin closes.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from lrscan.pipeline.errors import LrscanError
from lrscan.pipeline.train.tracking import as_if_started, end_forked_child

SERVER = "from lrscan.pipeline.pack.launcher import serve; serve()"
START_TIMEOUT_S = 120.0  # the server's import of torch, then its answer to one request
POLL_S = 0.05
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


class PackLauncher:
    """The study's side: requests to the fork server, each pack's pid and exit code back; every wait bounded."""

    def __init__(self, environ: Mapping[str, str] | None = None):
        # environ: the server's own (what torch reads as it is imported); each pack gets its own in `start`
        self._proc = subprocess.Popen([sys.executable, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      env=None if environ is None else dict(environ))
        self._buffer = b""
        self._exits: dict[int, int] = {}

    def start(self, spec: Path, log: Path, env: Mapping[str, str]) -> int:
        """Fork `python -m lrscan.pipeline.pack SPEC` with `env`, its output to `log`: the child's pid."""
        request = json.dumps({"spec": str(spec), "log": str(log), "env": dict(env)}) + "\n"
        try:
            self._proc.stdin.write(request.encode())
            self._proc.stdin.flush()
        except OSError:
            raise LrscanError(self._died()) from None
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            answer = self._answer(deadline)
            if answer is None:
                raise LrscanError(f"the pack launcher did not fork a pack within {START_TIMEOUT_S:.0f} s")
            if "started" in answer:
                return int(answer["started"])

    def wait(self, pid: int, timeout_s: float) -> int | None:
        """The pack's exit code (negative: the signal that killed it), or None if it still runs after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while pid not in self._exits:
            if self._answer(deadline) is None:
                return None
        return self._exits.pop(pid)

    def kill(self, pid: int, sig: int = signal.SIGTERM) -> None:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass  # it ended already; its exit code is on its way

    def close(self) -> None:
        """End the server (its stdin closes); bounded."""
        if self._proc.stdin and not self._proc.stdin.closed:
            try:
                self._proc.stdin.close()
            except OSError:
                pass
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()

    def _answer(self, deadline: float) -> dict | None:
        # one answer line from the server ({"started": pid} or {"pid": ..., "exit": ...}), None at the deadline
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self._proc.stdout], [], [], min(left, 1.0))
            if ready:
                chunk = os.read(self._proc.stdout.fileno(), 65536)
                if not chunk:
                    raise LrscanError(self._died())
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        answer = json.loads(line)
        if "exit" in answer:
            self._exits[int(answer["pid"])] = int(answer["exit"])
        return answer

    def _died(self) -> str:
        code = self._proc.poll()
        return f"the pack launcher exited ({code}) with packs still to run" if code is not None else \
            "the pack launcher stopped answering"


def serve() -> None:
    """The server: import what every pack imports, then fork one child per request line; answer on stdout."""
    # the imports each child would otherwise pay: the pack's (torch), and wandb for its logging process, which the
    # child forks from itself (tracking.ForkedProcess); neither starts a thread, so the forks are safe
    import wandb  # noqa: F401

    import lrscan.pipeline.pack.__main__  # noqa: F401
    import lrscan.pipeline.pack.logger  # noqa: F401
    from lrscan.pipeline.train.runwriter import spare_init_work

    spare_init_work(wandb)  # the installed packages listed once here, not once per pack's logger

    # Ctrl-C and SIGTERM stay pending here, never delivered: the packs stop themselves (a fork starts with no signal
    # pending and unblocks them), and the server lives on to report their exit codes
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    out, running, pending, open_input = sys.stdout.buffer, set(), b"", True
    while open_input or running:
        ready = select.select([0], [], [], POLL_S)[0] if open_input else (time.sleep(POLL_S) or [])
        if ready:
            chunk = os.read(0, 65536)
            open_input = bool(chunk)
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                pid = os.fork()
                if pid == 0:
                    _child(json.loads(line))  # never returns
                running.add(pid)
                out.write(json.dumps({"started": pid}).encode() + b"\n")
                out.flush()
        for pid in list(running):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                running.discard(pid)
                out.write(json.dumps({"pid": pid, "exit": os.waitstatus_to_exitcode(status)}).encode() + b"\n")
                out.flush()


def _child(request: dict) -> None:
    # what `python -m lrscan.pipeline.pack SPEC > LOG 2>&1` with ENV would do, in the forked child
    def run() -> None:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # the command's own handling of Ctrl-C and SIGTERM
        as_if_started(request["env"], [sys.executable, "-m", "lrscan.pipeline.pack", request["spec"]])
        fd = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        from lrscan.pipeline.pack.__main__ import main

        main([request["spec"]], fork_logger=True)

    end_forked_child(run)
