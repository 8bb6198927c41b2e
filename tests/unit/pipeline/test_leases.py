from __future__ import annotations

import os
import socket
import subprocess
import sys

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


# --- LeaseKeeper: driven by a fake clock and wait, never by real time -------------------------


class FakeTime:
    """A monotonic clock that moves only when the keeper waits; stops it after ``wakes`` wake-ups."""

    def __init__(self, wakes: int) -> None:
        self.now, self.wakes, self.waited = 0.0, wakes, []

    def clock(self) -> float:
        return self.now

    def wait(self, seconds: float) -> bool:
        if len(self.waited) >= self.wakes:
            return True
        self.waited.append(seconds)
        self.now += seconds
        return False


def keeper_on(engine, fake: FakeTime, *, ttl_ms: int = 3000, pulse=None, pulse_every_s=None, now_ms=None):
    with write_tx(engine) as conn:
        token = leases.acquire(conn, "group:a", "w", ttl_ms=ttl_ms, now_ms=0)
    stamps = iter(range(10_000, 10_000_000, 1000))
    return leases.LeaseKeeper(
        engine,
        "group:a",
        token,
        ttl_ms,
        pulse,
        pulse_every_s=pulse_every_s,
        clock=fake.clock,
        wait=fake.wait,
        now_ms=now_ms or (lambda: next(stamps)),
    )


def expiry(engine) -> int:
    with write_tx(engine) as conn:
        (held,) = leases.held(conn, now_ms=0)
    return held.expires_at_ms


def test_keeper_renews_every_third_of_the_ttl(engine) -> None:
    fake = FakeTime(wakes=3)
    with keeper_on(engine, fake) as keeper:
        pass
    assert fake.waited == [1.0, 1.0, 1.0]
    assert not keeper.lost
    assert expiry(engine) == 12_000 + 3000  # the third renewal's clock + ttl


def test_keeper_pulses_more_often_than_it_renews(engine) -> None:
    fake, pulses, renewals = FakeTime(wakes=6), [], []

    def now_ms() -> int:
        renewals.append(fake.now)
        return 50_000

    with keeper_on(engine, fake, pulse=lambda: pulses.append(fake.now), pulse_every_s=0.5, now_ms=now_ms):
        pass
    assert pulses == [0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
    assert renewals == [1.0, 2.0, 3.0]
    assert expiry(engine) == 53_000


def test_a_superseded_token_marks_the_keeper_lost_and_stops_it(engine) -> None:
    fake = FakeTime(wakes=5)
    keeper = keeper_on(engine, fake)
    with write_tx(engine) as conn:  # the lease expired and another worker took it
        leases.acquire(conn, "group:a", "usurper", ttl_ms=3000, now_ms=3_001)
    with keeper:
        pass
    assert keeper.lost
    assert len(fake.waited) == 1  # it stopped at the first failed renewal


def test_failed_pulses_are_ignored_and_failed_renewals_retried(engine) -> None:
    fake = FakeTime(wakes=3)
    attempts = []

    def now_ms() -> int:
        attempts.append(fake.now)
        if len(attempts) == 1:
            raise RuntimeError("database busy")
        return 70_000

    def pulse() -> None:
        raise OSError("broker down")

    with keeper_on(engine, fake, pulse=pulse, now_ms=now_ms) as keeper:
        pass
    assert attempts == [1.0, 2.0, 3.0]  # the failed renewal is tried again at the next wake-up
    assert not keeper.lost and expiry(engine) == 73_000


def test_keeper_with_real_waiting_stops_when_the_work_ends(engine) -> None:
    with write_tx(engine) as conn:
        token = leases.acquire(conn, "group:a", "w", ttl_ms=60_000, now_ms=0)
    with leases.LeaseKeeper(engine, "group:a", token, 60_000) as keeper:
        pass  # __exit__ wakes the thread at once: nothing waits out the 20 s renewal interval
    assert not keeper.lost


# --- holders that are provably gone --------------------------------------------------------


def _child() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def _holder_of(proc: subprocess.Popen[bytes], role: str = "router") -> str:
    return f"{role}@{socket.gethostname()}:{proc.pid}#{leases.incarnation(proc.pid)}"


def test_this_process_has_a_stable_holder_name_with_an_incarnation() -> None:
    name = leases.process_holder("router")
    assert name == leases.process_holder("router")
    assert name.startswith(f"router@{socket.gethostname()}:{os.getpid()}#")
    assert not leases.holder_gone(name)


def test_a_live_holder_is_not_gone_and_a_dead_or_reused_pid_is() -> None:
    proc = _child()
    try:
        holder = _holder_of(proc)
        assert not leases.holder_gone(holder)
        # Same pid, another incarnation (what a reused pid looks like): gone.
        host_pid = holder.rpartition("#")[0]
        assert leases.holder_gone(f"{host_pid}#{leases.incarnation()}")
    finally:
        proc.kill()
        proc.wait()
    assert leases.holder_gone(holder)


def test_holders_that_cannot_be_judged_are_never_gone() -> None:
    assert not leases.holder_gone("w1")  # no incarnation (old-style names, tests)
    assert not leases.holder_gone("router@some-other-host:1#abc.123")  # another host
    assert not leases.holder_gone(f"router@{socket.gethostname()}:notapid#x")


def test_a_lease_of_a_killed_holder_is_taken_over_at_once_and_the_holder_is_fenced(engine) -> None:
    proc = _child()
    holder = _holder_of(proc)
    with write_tx(engine) as conn:
        old = leases.acquire(conn, "group:a", holder, ttl_ms=120_000, now_ms=0)
        assert leases.acquire(conn, "group:a", "me", ttl_ms=120_000, now_ms=1) is None  # alive: held
        assert leases.is_live(conn, "group:a", now_ms=1)
    proc.kill()
    proc.wait()
    with write_tx(engine) as conn:
        assert not leases.is_live(conn, "group:a", now_ms=2)  # the sweeper's view: free
        new = leases.acquire(conn, "group:a", "me", ttl_ms=120_000, now_ms=2)
        assert new == old + 1  # long before the 120 s expiry
        with pytest.raises(LeaseLost):
            leases.fence(conn, "group:a", old, ttl_ms=1000, now_ms=3)
        assert leases.is_live(conn, "group:a", now_ms=3)


def test_a_release_that_failed_is_retried_until_the_store_takes_it(tmp_path) -> None:
    from microclaw.store.db import create_sqlite_engine, migrate
    from tests.unit.store.test_db_faults import HOLD_FLOCK, holder, stop

    migrate(tmp_path / "app.db")
    engine = create_sqlite_engine(tmp_path / "app.db", busy_timeout_s=0.3)
    with write_tx(engine) as conn:
        token = leases.acquire(conn, "group:a", "me", ttl_ms=600_000, now_ms=0)
    stuck = holder(HOLD_FLOCK, tmp_path / "app.db-writelock")  # every write fails: "database busy"
    waits: list[float] = []

    def wait(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 3:
            stop(stuck)  # the fault clears

    try:
        leases.release_later(engine, "group:a", token, give_up_after_s=600, wait=wait).join(timeout=30)
    finally:
        stop(stuck)
    assert waits == [0.5, 1.0, 2.0]  # two failed tries with backoff, then it went through
    with write_tx(engine) as conn:
        assert not leases.is_live(conn, "group:a", now_ms=1)
    engine.dispose()
