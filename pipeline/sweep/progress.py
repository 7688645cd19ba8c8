"""A sweep's progress: a bar on a terminal, one line per change elsewhere (CI, nohup, Slurm logs)."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any

from lrscan.pipeline.sweep.claims import CRASHED, FAILED, FINISHED, KILLED, RUNNING, PointState


def show(bar: Any, states: Sequence[PointState]) -> None:
    """The bar (or its line stand-in) after a look at the points: finished ones counted, running and failed said."""
    done = sum(st.state == FINISHED for st in states)
    running = sum(st.state == RUNNING for st in states)
    failed = sum(st.state in (FAILED, CRASHED, KILLED) for st in states)
    if done > bar.n:
        bar.update(done - bar.n)
    bar.set_postfix_str(f"running {running}, failed {failed}", refresh=True)


class LineProgress:
    """The progress bar's stand-in when stderr is a file or a pipe (CI, nohup, Slurm): one line per change."""

    def __init__(self, desc: str, total: int, initial: int):
        self.desc, self.total, self.n, self.start_n = desc, total, initial, initial
        self.t0 = time.monotonic()
        self.last = ""

    def update(self, k: int) -> None:
        self.n += k

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        line = f"{self.n}/{self.total} done, {text}"
        if line == self.last:
            return
        self.last = line
        elapsed = time.monotonic() - self.t0
        done_here = self.n - self.start_n
        eta = f", ETA {elapsed / done_here * (self.total - self.n):.0f} s" if done_here and self.n < self.total else ""
        print(f"{self.desc}: {line} ({elapsed:.0f} s{eta})", file=sys.stderr, flush=True)

    def close(self) -> None:
        pass
