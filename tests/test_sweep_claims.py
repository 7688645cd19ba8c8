"""Claims of sweep points by runners sharing a folder: exclusive, leased, taken over only when needed."""

from __future__ import annotations

import os
import time

from pipeline.sweep_claims import CRASHED, FINISHED, RUNNING, ClaimStore


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
