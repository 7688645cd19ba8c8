"""A sweep's jobs: one process, a point's or a pack's, with the claims it holds; it dies with its runner.

The runner (runner.py) starts, reaps and stops them; here is what a job is and how its process is
tied to the runner's life and signalled.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime
from typing import Any

from lrscan.pipeline.sweep.claims import Claim


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


@dataclasses.dataclass
class Job:
    claims: dict[int, Claim]   # point index -> the claim held for it: one point, or a pack's members still running
    proc: subprocess.Popen
    log: Any
    started: float             # time.monotonic()
    started_at: float          # time.time()
    last_renew: float
    stop_sent: float | None = None  # monotonic time we sent SIGTERM, if we did
    end_files: dict[int, str] = dataclasses.field(default_factory=dict)  # a pack's: where each member's end is said
    slots: int = 1             # workers' slots it takes (a pack: PACK_SLOTS)


def die_with_parent() -> Any:
    """A preexec_fn that makes the child die with SIGKILL when the runner dies (Linux), else None.

    Without it a SIGKILLed runner leaves its program running; the point's lease then expires, a taker
    resumes the same run, and two processes would write one run.
    """
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def preexec() -> None:
        prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the runner died before prctl took effect
            os._exit(1)

    return preexec


def killpg(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
