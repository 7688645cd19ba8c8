"""Who runs which point: claims with leases in a (possibly shared, NFS) sweep folder.

Hand-written because no well-kept library does NFS-safe leases on plain files (filelock's
SoftFileLock has no lease/takeover, and flock/fcntl locks are unreliable on NFS). The design uses
only two operations that are atomic on NFS: `link()` of a fresh private file onto a new name, and
`rename()`.

Per point and attempt ("generation" g = 0, 1, 2, ...), `claims/` holds

    <index:05d>.g<g:03d>.claim   created exclusively by the worker that runs attempt g;
                                 its mtime is the lease heartbeat (touched every lease/4)
    <index:05d>.g<g:03d>.end     created exclusively when attempt g ended: JSON with its state
    <index:05d>.g<g:03d>.proc    written by the owner once its program started: the program's process

- Claiming attempt g means creating its `.claim`; only one `link()` onto that name succeeds, so two
  workers can never both own attempt g.
- A point's current attempt is its highest g. If that attempt has no `.end` and its claim's mtime is
  older than the lease, its worker is gone: a taker first writes the `.end` (state `crashed`) and then
  claims g+1. Ends are exclusive too, so a worker that was only slow and comes back finds its end
  taken: it has lost the point and must stop its process.
- Lease ages are measured on the file server's clock (the mtime of a file we just touched), never by
  comparing our clock with another machine's.
- A claim names its owner process: host, boot id, PID namespace, pid and the process' start time.
  A runner on that same host, boot and namespace can prove the owner dead (its pid is free, a
  zombie, or a newer process) and, when the owner's program is gone too, take the point over at
  once instead of waiting out the lease. Elsewhere, or without that proof, the lease decides.

Nothing here knows what the programs are, nor wandb; `pipeline.sweep` drives it.
"""

from __future__ import annotations

import functools
import json
import os
import re
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

CLAIMS_DIR = "claims"
_NAME = re.compile(r"^(\d+)\.g(\d+)\.(claim|end)$")

# attempt end states (W&B RunState names); a point whose attempt ended otherwise may be tried again
FINISHED = "finished"
FAILED = "failed"        # the program exited non-zero
CRASHED = "crashed"      # the program died by a signal nobody sent, or its worker vanished (lease expired)
KILLED = "killed"        # stopped on purpose: Ctrl-C / SIGTERM to the runner, or the lease was lost
RUNNING = "running"      # not an end state: a live claim
PENDING = "pending"      # never claimed


@dataclass
class PointState:
    """What the claims folder says about one point right now."""

    index: int
    gen: int = -1                     # highest attempt claimed, -1 if never
    state: str = PENDING              # PENDING, RUNNING, or the end state of attempt `gen`
    claim: dict[str, Any] = field(default_factory=dict)
    end: dict[str, Any] = field(default_factory=dict)
    lease_age_seconds: float = 0.0    # of the live claim, on the file server's clock
    expired: bool = False             # RUNNING but nobody renewed the lease in time
    owner_dead: bool = False          # RUNNING, and its owner provably died on this host
    program_alive: bool = False       # ... but the program it started still runs here


@dataclass
class Claim:
    """A claim this process holds."""

    index: int
    gen: int
    path: str


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


@functools.cache
def _boot_id() -> str:
    return _read("/proc/sys/kernel/random/boot_id")  # Linux: new at every boot


@functools.cache
def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")  # pids mean the same process only within one namespace
    except OSError:
        return ""


def process_start_ticks(pid: int) -> int | None:
    """When process `pid` started (clock ticks since boot, Linux), or None if no live process has it."""
    stat = _read(f"/proc/{pid}/stat")
    if not stat:
        return None
    fields = stat.rsplit(")", 1)[-1].split()  # after `pid (comm)`: state is field 3, starttime field 22
    if fields[0] in ("Z", "X"):  # a zombie has exited: it only waits for its parent to read its status
        return None
    return int(fields[19])


def process_record(pid: int) -> dict[str, Any]:
    """What identifies process `pid` of this host for as long as it lives (start time: pids are reused)."""
    return {"host": socket.gethostname(), "boot_id": _boot_id(),
            "pid_ns": _pid_namespace(), "pid": pid, "start_ticks": process_start_ticks(pid)}


def here(record: Mapping[str, Any]) -> bool:
    """Did `record` come from this host, this boot and this PID namespace (so its pid means a pid here)?"""
    return bool(record.get("boot_id")) and record.get("host") == socket.gethostname() and \
        record.get("boot_id") == _boot_id() and record.get("pid_ns") == _pid_namespace()


def gone(record: Mapping[str, Any]) -> bool:
    """Provably no longer running: recorded here, and its pid is free, a zombie, or a process started since."""
    if not here(record) or not isinstance(record.get("pid"), int):
        return False
    ticks = process_start_ticks(record["pid"])
    return ticks is None or (record.get("start_ticks") is not None and ticks != record["start_ticks"])


class ClaimStore:
    """The claims of one sweep folder."""

    def __init__(self, folder: str, lease_seconds: float) -> None:
        self.folder = folder
        self.dir = os.path.join(folder, CLAIMS_DIR)
        self.lease_seconds = float(lease_seconds)
        self._clock_path = os.path.join(self.dir, f".clock.{socket.gethostname()}.{os.getpid()}")
        self._end_cache: dict[str, dict[str, Any]] = {}
        self._owner = process_record(os.getpid())
        os.makedirs(self.dir, exist_ok=True)

    # -- files ---------------------------------------------------------------------------------

    def _path(self, index: int, gen: int, kind: str) -> str:
        return os.path.join(self.dir, f"{index:05d}.g{gen:03d}.{kind}")

    def _create_exclusive(self, path: str, payload: Mapping[str, Any]) -> bool:
        """Create `path` with `payload` as JSON unless it exists; NFS-safe (private file + link)."""
        tmp = os.path.join(self.dir, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
        with open(tmp, "w") as f:
            json.dump(dict(payload), f)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        except OSError:
            # NFS may report an error for a link that did happen (a retransmitted request);
            # the link count of our private file tells the truth
            return os.stat(tmp).st_nlink == 2
        finally:
            os.unlink(tmp)

    def fs_now(self) -> float:
        """The file server's current time: touch a private file and read its mtime."""
        with open(self._clock_path, "a"):
            pass
        os.utime(self._clock_path, None)
        return os.stat(self._clock_path).st_mtime

    def close(self) -> None:
        try:
            os.unlink(self._clock_path)
        except FileNotFoundError:
            pass

    # -- reading -------------------------------------------------------------------------------

    def _read_json(self, path: str) -> dict[str, Any]:
        try:
            with open(path) as f:
                return json.load(f)
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def states(self, n_points: int) -> list[PointState]:
        """The state of every point, from one listing of the claims folder."""
        claims: dict[int, int] = {}
        ends: dict[tuple[int, int], str] = {}
        for name in os.listdir(self.dir):
            m = _NAME.match(name)
            if not m:
                continue
            index, gen, kind = int(m.group(1)), int(m.group(2)), m.group(3)
            if kind == "claim":
                claims[index] = max(gen, claims.get(index, -1))
            else:
                ends[(index, gen)] = name
        now = self.fs_now()
        out = []
        for index in range(n_points):
            st = PointState(index)
            gen = claims.get(index, -1)
            if gen >= 0:
                st.gen = gen
                claim_path = self._path(index, gen, "claim")
                st.claim = self._read_json(claim_path)
                end_name = ends.get((index, gen))
                if end_name is not None:
                    if end_name not in self._end_cache:  # ends never change: read each once
                        self._end_cache[end_name] = self._read_json(os.path.join(self.dir, end_name))
                    st.end = self._end_cache[end_name]
                    st.state = st.end.get("state", CRASHED)
                else:
                    st.state = RUNNING
                    try:
                        st.lease_age_seconds = max(0.0, now - os.stat(claim_path).st_mtime)
                    except FileNotFoundError:
                        st.lease_age_seconds = 0.0
                    st.expired = st.lease_age_seconds > self.lease_seconds
                    if gone(st.claim.get("owner") or {}):
                        program = self._read_json(self._path(index, gen, "proc"))
                        st.program_alive = bool(program) and not gone(program)
                        st.owner_dead = not st.program_alive
            out.append(st)
        return out

    def attempts(self, index: int) -> list[dict[str, Any]]:
        """Every attempt of one point: its claim merged with its end, oldest first."""
        rows = []
        gen = 0
        while os.path.exists(self._path(index, gen, "claim")):
            row = self._read_json(self._path(index, gen, "claim"))
            program = self._read_json(self._path(index, gen, "proc"))
            if program:
                row["program"] = program
            row.update(self._read_json(self._path(index, gen, "end")))
            rows.append(row)
            gen += 1
        return rows

    # -- writing -------------------------------------------------------------------------------

    def claim(self, index: int, gen: int, info: Mapping[str, Any]) -> Claim | None:
        """Claim attempt `gen` of a point; None if someone else got there first."""
        path = self._path(index, gen, "claim")
        worker = f"{self._owner['host']}:{self._owner['pid']}"
        payload = {"index": index, "gen": gen, "worker": worker, "owner": self._owner, **info}
        return Claim(index, gen, path) if self._create_exclusive(path, payload) else None

    def note_program(self, claim: Claim, pid: int) -> None:
        """Record the process the owner started for its claim, so a taker can tell when it is gone."""
        path = self._path(claim.index, claim.gen, "proc")
        tmp = os.path.join(self.dir, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
        with open(tmp, "w") as f:
            json.dump(process_record(pid), f)
        os.replace(tmp, path)

    def end(self, index: int, gen: int, record: Mapping[str, Any]) -> bool:
        """Record how attempt `gen` ended; False if an end was already there (a taker wrote it)."""
        return self._create_exclusive(self._path(index, gen, "end"), record)

    def take_over(self, st: PointState, info: Mapping[str, Any]) -> Claim | None:
        """Claim the next attempt of a point whose worker vanished (lease expired) or provably died here.

        None when the point turned out not to need it: its worker came back and recorded how it
        ended (finished, say) between our look at the claim and our end record.
        """
        if st.owner_dead:
            reason = f"its worker {st.claim.get('worker')} died (seen dead on this host)"
        else:
            reason = f"lease expired after {st.lease_age_seconds:.0f} s"
        record = {"state": CRASHED, "reason": reason, "ended_by": worker_id()}
        if not self.end(st.index, st.gen, record):
            ended = self._read_json(self._path(st.index, st.gen, "end"))
            if ended.get("state") != CRASHED:
                return None  # the owner's own end record won the race: nothing to take over
        return self.claim(st.index, st.gen + 1, info)

    def renew(self, claim: Claim) -> bool:
        """Refresh the lease; False if the claim is lost (expired, ended or superseded by a taker)."""
        if os.path.exists(self._path(claim.index, claim.gen, "end")) or \
                os.path.exists(self._path(claim.index, claim.gen + 1, "claim")):
            return False
        now = self.fs_now()
        try:
            age = now - os.stat(claim.path).st_mtime
        except FileNotFoundError:
            return False
        if age > self.lease_seconds:
            # too late: a taker may already be acting on the expiry; give the point up
            return False
        os.utime(claim.path, None)
        return True
