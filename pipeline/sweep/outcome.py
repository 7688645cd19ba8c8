"""Why points of a sweep did not finish: one line naming them, with the first one's cause from its log."""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Mapping, Sequence
from typing import Any

from lrscan.pipeline.sweep.claims import CRASHED, FAILED, FINISHED, KILLED, ClaimStore
from lrscan.pipeline.sweep.command import run_id_for
from lrscan.pipeline.sweep.manifest import sweep_folder
from lrscan.pipeline.sweep.spec import Sweep

_TERMINAL_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def last_log_line(path: str | os.PathLike, tail_bytes: int = 65536, max_chars: int = 300) -> str:
    """The last non-empty line of a log (colours and \\r progress redraws removed); '' if none."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - tail_bytes))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    for line in reversed(text.splitlines()):  # splitlines also splits at \r: a redrawn line's last state
        line = _TERMINAL_ESCAPES.sub("", line).strip()
        if line:
            return line if len(line) <= max_chars else line[: max_chars - 3] + "..."
    return ""


def _how_it_ended(end: Mapping[str, Any]) -> str:
    rc = end.get("exit_code")
    if isinstance(rc, int) and rc < 0:
        try:
            how = f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            how = f"killed by signal {-rc}"
    elif isinstance(rc, int):
        how = f"exit code {rc}"
    else:
        how = "no exit code"
    return f"{how}, {end['reason']}" if end.get("reason") else how


def unfinished_message(out: str, sweep: Sweep, indices: Sequence[int] | None = None) -> str:
    """One line on the points of a sweep folder that did not finish, with the first one's cause; '' if none.

    The cause is the last non-empty line of that attempt's log (the program's stdout and stderr: a
    traceback ends with its exception), else how it ended (exit code, signal, lost lease).
    """
    folder = sweep_folder(out, sweep)
    store = ClaimStore(folder, lease_seconds=float("inf"))
    try:
        states = store.states(len(sweep.points))
    finally:
        store.close()
    wanted = range(len(sweep.points)) if indices is None else indices
    left = [states[i] for i in wanted if states[i].state != FINISHED]
    if not left:
        return ""
    counts: dict[str, int] = {}
    for st in left:
        counts[st.state] = counts.get(st.state, 0) + 1
    line = (f"{len(left)} of {len(wanted)} points did not finish ("
            + ", ".join(f"{n} {state}" for state, n in counts.items()) + ")")
    first = next((st for st in left if st.state in (FAILED, CRASHED, KILLED)), None)
    if first is not None:
        log = os.path.join(folder, first.claim["log"]) if first.claim.get("log") else ""
        error = last_log_line(log) if log else ""
        line += (f"; point {first.index} ({run_id_for(sweep.key, first.index)}) {first.state} "
                 f"({_how_it_ended(first.end)}, attempt {first.gen + 1})")
        line += f": {error}" if error else ""
        line += f" [log: {log}]" if log else ""
    return line + "; run the same command again to retry them"

