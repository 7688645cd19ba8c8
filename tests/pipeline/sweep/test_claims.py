"""Claims of sweep points by runners sharing a folder: exclusive, leased, taken over only when needed
(at once when the owner is provably dead on this host)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

from lrscan.pipeline.sweep import claims as sweep_claims
from lrscan.pipeline.sweep.claims import CRASHED, FINISHED, RUNNING, ClaimStore
from tests.conftest import REPO


def _expire(store: ClaimStore, claim) -> None:
    # age the lease without waiting: push the claim file's mtime into the past
    old = time.time() - 10 * store.lease_seconds
    os.utime(claim.path, (old, old))


def test_one_claim_per_attempt(tmp_path):
    a, b = ClaimStore(str(tmp_path), 5.0), ClaimStore(str(tmp_path), 5.0)
    assert a.claim(0, 0, {"who": "a"}) is not None
    assert b.claim(0, 0, {"who": "b"}) is None
    [st] = b.states(1)
    assert st.state == RUNNING and st.gen == 0 and not st.expired


def test_an_expired_claim_is_taken_over_as_the_next_attempt(tmp_path):
    a, b = ClaimStore(str(tmp_path), 5.0), ClaimStore(str(tmp_path), 5.0)
    claim = a.claim(0, 0, {})
    _expire(a, claim)
    [st] = b.states(1)
    assert st.expired
    taken = b.take_over(st, {})
    assert taken is not None and taken.gen == 1
    assert a.renew(claim) is False  # the old owner learns it lost the point
    assert b.attempts(0)[0]["state"] == CRASHED


def test_a_late_finish_wins_over_a_take_over(tmp_path):
    a, b = ClaimStore(str(tmp_path), 5.0), ClaimStore(str(tmp_path), 5.0)
    claim = a.claim(0, 0, {})
    _expire(a, claim)
    [st] = b.states(1)  # B sees the lease expired ...
    assert a.end(0, 0, {"state": FINISHED})  # ... but the owner finishes before B acts
    assert b.take_over(st, {}) is None  # so nothing runs again
    [st] = b.states(1)
    assert st.state == FINISHED and st.gen == 0


def test_two_takers_race_one_wins(tmp_path):
    a, b, c = (ClaimStore(str(tmp_path), 5.0) for _ in range(3))
    claim = a.claim(0, 0, {})
    _expire(a, claim)
    [st_b], [st_c] = b.states(1), c.states(1)
    won = [x for x in (b.take_over(st_b, {}), c.take_over(st_c, {})) if x is not None]
    assert len(won) == 1 and won[0].gen == 1


# A runner in miniature: claims point 0 of FOLDER, records its program (a child that runs until it is
# killed, in a session of its own so that it outlives the runner) or none, says so on stdout and waits
# to be killed.
OWNER = textwrap.dedent('''
    import subprocess, sys
    from lrscan.pipeline.sweep.claims import ClaimStore
    store = ClaimStore(sys.argv[1], 3600.0)
    claim = store.claim(0, 0, {})
    if sys.argv[2] == "program":
        child = subprocess.Popen([sys.executable, "-c", "import signal; signal.pause()"], stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, start_new_session=True)
        store.note_program(claim, child.pid)
        print(child.pid, flush=True)
    else:
        print(0, flush=True)
    sys.stdin.read()
''')


def _killed_owner(folder, program: bool) -> tuple[int, int]:
    """Run OWNER, SIGKILL it once its claim is in place; (its pid, its program's pid or 0)."""
    proc = subprocess.Popen([sys.executable, "-c", OWNER, str(folder), "program" if program else "none"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO)
    program_pid = int(proc.stdout.readline())  # the claim (and program record) exist once it says so
    proc.kill()
    proc.communicate(timeout=30)
    return proc.pid, program_pid


def test_a_dead_owner_on_this_host_is_taken_over_without_waiting_for_the_lease(tmp_path):
    pid, _ = _killed_owner(tmp_path, program=False)
    store = ClaimStore(str(tmp_path), 3600.0)
    [st] = store.states(1)
    assert st.state == RUNNING and not st.expired and st.owner_dead and not st.program_alive
    taken = store.take_over(st, {})
    assert taken is not None and taken.gen == 1
    assert store.attempts(0)[0]["state"] == CRASHED
    assert store.attempts(0)[0]["reason"] == f"its worker {socket.gethostname()}:{pid} died (seen dead on this host)"


def test_a_dead_owners_program_still_running_keeps_the_claim_until_it_exits(tmp_path):
    _, program_pid = _killed_owner(tmp_path, program=True)
    store = ClaimStore(str(tmp_path), 3600.0)
    try:
        [st] = store.states(1)
        assert st.state == RUNNING and st.program_alive and not st.owner_dead
    finally:
        os.kill(program_pid, signal.SIGKILL)
    deadline = time.monotonic() + 30  # it is not our child: wait until the kernel says it is gone
    while sweep_claims.process_start_ticks(program_pid) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    [st] = store.states(1)
    assert st.owner_dead and not st.program_alive


def test_a_live_owner_a_reused_pid_and_other_hosts(tmp_path):
    here = sweep_claims.process_record(os.getpid())
    assert here["start_ticks"] is not None and not sweep_claims.gone(here)             # alive: this process
    assert sweep_claims.gone({**here, "start_ticks": here["start_ticks"] - 1})         # its pid, another process
    assert not sweep_claims.gone({**here, "host": "node-elsewhere"})                   # can't be checked from here
    assert not sweep_claims.gone({**here, "boot_id": "0" * 32, "start_ticks": 1})      # another boot (or machine)
    assert not sweep_claims.gone({**here, "pid_ns": "pid:[1]", "start_ticks": 1})      # another PID namespace
    assert not sweep_claims.gone({})                                                   # a claim without a record
    store = ClaimStore(str(tmp_path), 3600.0)
    store.claim(0, 0, {})
    [st] = store.states(1)
    assert st.state == RUNNING and not st.owner_dead and st.claim["owner"]["pid"] == os.getpid()
