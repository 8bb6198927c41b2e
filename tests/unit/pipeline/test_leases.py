from __future__ import annotations

import pytest

from microclaw.errors import LeaseLost
from microclaw.pipeline import leases
from microclaw.store.db import write_tx


def test_one_holder_at_a_time_and_tokens_grow(engine) -> None:
    with write_tx(engine) as conn:
        t1 = leases.acquire(conn, "group:a", "w1", ttl_ms=1000, now_ms=10_000)
        assert t1 == 1
        assert leases.acquire(conn, "group:a", "w2", ttl_ms=1000, now_ms=10_500) is None
        assert leases.is_live(conn, "group:a", now_ms=10_500)
        assert leases.release(conn, "group:a", t1)
        t2 = leases.acquire(conn, "group:a", "w2", ttl_ms=1000, now_ms=10_600)
        assert t2 == 2


def test_expired_lease_is_taken_over_and_stale_holder_is_fenced(engine) -> None:
    with write_tx(engine) as conn:
        old = leases.acquire(conn, "group:a", "w1", ttl_ms=1000, now_ms=0)
        new = leases.acquire(conn, "group:a", "w2", ttl_ms=1000, now_ms=1_001)
        assert new == old + 1
        with pytest.raises(LeaseLost):
            leases.fence(conn, "group:a", old, ttl_ms=1000, now_ms=1_002)
        assert not leases.release(conn, "group:a", old)  # a stale release changes nothing
        assert leases.is_live(conn, "group:a", now_ms=1_500)
        leases.fence(conn, "group:a", new, ttl_ms=1000, now_ms=1_900)  # renews
        assert leases.is_live(conn, "group:a", now_ms=2_800)


def test_fence_fails_after_release(engine) -> None:
    with write_tx(engine) as conn:
        token = leases.acquire(conn, "outbox:x", "w", ttl_ms=1000, now_ms=0)
        leases.release(conn, "outbox:x", token)
        with pytest.raises(LeaseLost):
            leases.fence(conn, "outbox:x", token, ttl_ms=1000, now_ms=1)
