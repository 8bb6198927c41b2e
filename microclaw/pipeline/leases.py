"""Database leases with fencing tokens: at most one holder per named resource.

A lease row (``group:<jid>`` for a group's runs, ``outbox:<jid>`` for a chat's deliveries) has
a holder, a token that grows by one on every acquisition, and an expiry. Whoever holds the
current token may write on behalf of the resource; every such write first calls `fence()` in
the same ``BEGIN IMMEDIATE`` transaction, which both proves the token is still current and
extends the expiry. A holder that stalls past its expiry and is replaced finds its token stale
and raises `LeaseLost` before writing anything.

Holders are process incarnations, ``role@host:pid#incarnation`` (`process_holder`); the
incarnation is the process's start time since boot (Linux ``/proc``), so a reused pid is told
apart. A lease whose holder is provably gone (`holder_gone`: same host and the pid is dead, a
zombie or another incarnation) is free at once, whatever its expiry says: `acquire` takes it
over (a new token, so a holder wrongly judged gone is fenced out) and `is_live` calls it dead,
so the sweeper re-kicks its group without waiting out the TTL. Holders on other hosts, and
names without an incarnation, are only ever judged by the expiry.

All functions take an open write transaction; none commits. `LeaseKeeper` is the one piece that
opens its own: the thread that renews a lease while its holder works outside any transaction.
No policy lives here.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from sqlalchemy import Connection, Engine, text

from microclaw.errors import LeaseLost
from microclaw.store.db import now_ms as _now_ms
from microclaw.store.db import write_tx

logger = logging.getLogger(__name__)

# Prebuilt statements: this module runs several times per message, and building SQLAlchemy
# Core expressions per call cost ~4x more than executing these.
_CREATE = text(
    "INSERT INTO leases (name, token, expires_at_ms) VALUES (:name, 0, 0) ON CONFLICT (name) DO NOTHING"
)
_ACQUIRE = text(
    "UPDATE leases SET holder = :holder, token = token + 1, expires_at_ms = :expires, acquired_at_ms = :now"
    " WHERE name = :name AND (holder IS NULL OR expires_at_ms <= :now) RETURNING token"
)
_FENCE = text(
    "UPDATE leases SET expires_at_ms = :expires WHERE name = :name AND token = :token AND holder IS NOT NULL"
)
_RELEASE = text("UPDATE leases SET holder = NULL, expires_at_ms = 0 WHERE name = :name AND token = :token")
_LIVE = text("SELECT holder FROM leases WHERE name = :name AND holder IS NOT NULL AND expires_at_ms > :now")
_CURRENT = text("SELECT holder, token FROM leases WHERE name = :name AND holder IS NOT NULL")
_TAKE_OVER = text(
    "UPDATE leases SET holder = :holder, token = token + 1, expires_at_ms = :expires, acquired_at_ms = :now"
    " WHERE name = :name AND token = :token AND holder = :gone RETURNING token"
)
_RECLAIM = text(
    "UPDATE leases SET holder = NULL, token = token + 1, expires_at_ms = 0"
    " WHERE name = :name AND token = :token AND holder = :gone"
)
_HELD = text(
    "SELECT name, holder, token, expires_at_ms FROM leases"
    " WHERE holder IS NOT NULL AND expires_at_ms > :now ORDER BY name"
)


def group_lease(chat_jid: str) -> str:
    return f"group:{chat_jid}"


def outbox_lease(chat_jid: str) -> str:
    return f"outbox:{chat_jid}"


# --- holder identity ----------------------------------------------------------------------


def _proc_start(pid: int) -> str | None:
    """The start time (clock ticks since boot) of a running process, or None when there is no
    such process, it is a zombie, or ``/proc`` cannot tell."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    if len(fields) < 20 or fields[0] in {"Z", "X", "x"}:
        return None
    return fields[19]


@cache
def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip().replace("-", "")[:8]
    except OSError:
        return ""


_RANDOM_INCARNATION = uuid.uuid4().hex[:12]


def incarnation(pid: int | None = None) -> str | None:
    """This process's (or ``pid``'s) incarnation id: boot id + start time where ``/proc``
    exists; elsewhere a random id for this process (others: None, unknowable)."""
    pid = os.getpid() if pid is None else pid
    start = _proc_start(pid)
    if start is not None and _boot_id():
        return f"{_boot_id()}.{start}"
    if pid == os.getpid() and not Path("/proc/self/stat").exists():
        return f"r{_RANDOM_INCARNATION}"
    return None


def process_holder(role: str) -> str:
    """The holder name of this process for ``role``: ``role@host:pid#incarnation``."""
    pid = os.getpid()
    return f"{role}@{socket.gethostname()}:{pid}#{incarnation(pid)}"


def holder_gone(holder: str) -> bool:
    """Whether ``holder`` (a `process_holder` name) is provably gone: on this host, with its
    pid dead, a zombie, or now another incarnation. False whenever that cannot be proven."""
    role_host, sep, inc = holder.rpartition("#")
    if not sep or not inc:
        return False
    _, at, host_pid = role_host.rpartition("@")
    host, colon, raw_pid = host_pid.rpartition(":")
    if not at or not colon or not raw_pid.isdigit() or host != socket.gethostname():
        return False
    pid = int(raw_pid)
    if pid == os.getpid():
        return inc != incarnation(pid)
    if inc.startswith("r"):  # no /proc here: only a dead pid is proof
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except OSError:
            return False
        return False
    if not inc.startswith(_boot_id() + ".") or not _boot_id():
        return bool(_boot_id())  # another boot of this host: every process of it is gone
    return incarnation(pid) != inc


# --- the lease operations -----------------------------------------------------------------


def acquire(
    conn: Connection,
    name: str,
    holder: str,
    *,
    ttl_ms: int,
    now_ms: int,
    gone: Callable[[str], bool] = holder_gone,
) -> int | None:
    """Take the lease if it is free, expired, or held by a holder that is `gone`; returns the
    new token, or None when held."""
    conn.execute(_CREATE, {"name": name})
    params = {"name": name, "holder": holder, "expires": now_ms + ttl_ms, "now": now_ms}
    row = conn.execute(_ACQUIRE, params).first()
    if row:
        return int(row[0])
    current = conn.execute(_CURRENT, {"name": name}).first()
    if current is None or current.holder == holder or not gone(current.holder):
        return None
    row = conn.execute(_TAKE_OVER, {**params, "token": current.token, "gone": current.holder}).first()
    if row is None:
        return None
    logger.warning(
        "lease taken over from a gone holder",
        extra={"lease": name, "gone_holder": current.holder, "token": int(row[0])},
    )
    return int(row[0])


def fence(conn: Connection, name: str, token: int, *, ttl_ms: int, now_ms: int) -> None:
    """Prove ``token`` is current and extend the lease; raises `LeaseLost` otherwise.

    Call it first in every write transaction made on the lease's behalf.
    """
    if conn.execute(_FENCE, {"name": name, "token": token, "expires": now_ms + ttl_ms}).rowcount != 1:
        raise LeaseLost(name, token)


def release(conn: Connection, name: str, token: int) -> bool:
    """Give the lease up if ``token`` is still current; returns whether it was."""
    return bool(conn.execute(_RELEASE, {"name": name, "token": token}).rowcount == 1)


def reclaim(conn: Connection, name: str, *, gone: Callable[[str], bool] = holder_gone) -> bool:
    """Free the lease if its holder is provably `gone` (bumping the token, which fences the
    holder out should it still write); returns whether it did."""
    current = conn.execute(_CURRENT, {"name": name}).first()
    if current is None or not gone(current.holder):
        return False
    freed = conn.execute(_RECLAIM, {"name": name, "token": current.token, "gone": current.holder})
    if freed.rowcount != 1:
        return False
    logger.warning("lease of a gone holder reclaimed", extra={"lease": name, "gone_holder": current.holder})
    return True


def release_later(
    engine: Engine,
    name: str,
    token: int,
    *,
    give_up_after_s: float,
    wait: Callable[[float], object] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> threading.Thread:
    """Keep trying to `release` in a daemon thread (backoff 0.5 s to 5 s) after a release
    failed (the disk was full, the database busy): the group is free again as soon as the
    store is, not only when the lease expires. Stops at success, once the token is no longer
    current, or after ``give_up_after_s`` (the expiry frees it by then)."""

    def run() -> None:
        deadline, delay = clock() + give_up_after_s, 0.5
        while clock() < deadline:
            wait(delay)
            try:
                with write_tx(engine) as conn:
                    released = release(conn, name, token)
                logger.info("deferred lease release done", extra={"lease": name, "released": released})
                return
            except Exception:
                logger.debug("deferred lease release failed", extra={"lease": name}, exc_info=True)
            delay = min(delay * 2, 5.0)

    thread = threading.Thread(target=run, name=f"release-{name}", daemon=True)
    thread.start()
    return thread


def is_live(conn: Connection, name: str, *, now_ms: int, gone: Callable[[str], bool] = holder_gone) -> bool:
    """Whether someone not provably `gone` holds an unexpired lease on ``name``."""
    row = conn.execute(_LIVE, {"name": name, "now": now_ms}).first()
    return row is not None and not gone(row.holder)


@dataclass(frozen=True)
class HeldLease:
    name: str
    holder: str
    token: int
    expires_at_ms: int


def held(conn: Connection, *, now_ms: int) -> list[HeldLease]:
    """Every unexpired lease with a holder, by name (for status reports)."""
    return [HeldLease(*r) for r in conn.execute(_HELD, {"now": now_ms})]


# Seconds between pulses (typing-indicator refreshes) while a message run works.
PULSE_S = 4.0


class LeaseKeeper:
    """Keeps a lease alive while its holder works outside any transaction (an agent run).

    Used as a context manager around the work: a daemon thread fences (renews) the lease every
    ``ttl/3``. When the token has been superseded it sets `lost` and stops; the holder checks
    `lost` between steps and must write nothing more. A renewal that fails for another reason
    (say, a busy database) is logged and retried at the next wake-up. ``pulse``, if given, is
    called every ``pulse_every_s`` (default `PULSE_S`) as well: the typing indicator, which
    platforms drop after ~5 s; its failures are ignored.

    ``clock`` (monotonic seconds), ``now_ms`` (wall-clock milliseconds, for the expiry) and
    ``wait`` (block up to the given seconds; True once the keeper should stop) default to the
    real ones, the default ``wait`` being the stop event that leaving the ``with`` block sets.
    Tests pass their own to drive the thread without sleeping; a ``wait`` of their own decides
    alone when the thread ends.
    """

    def __init__(
        self,
        engine: Engine,
        name: str,
        token: int,
        ttl_ms: int,
        pulse: Callable[[], object] | None = None,
        *,
        pulse_every_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        now_ms: Callable[[], int] = _now_ms,
        wait: Callable[[float], bool] | None = None,
    ) -> None:
        self._engine, self._name, self._token, self._ttl = engine, name, token, ttl_ms
        self._pulse = pulse
        self._pulse_every = PULSE_S if pulse_every_s is None else pulse_every_s
        self._clock, self._now_ms = clock, now_ms
        self._stop = threading.Event()
        self._wait = wait if wait is not None else self._stop.wait
        self.lost = False
        self._thread = threading.Thread(target=self._run, name=f"lease-{name}", daemon=True)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        renew_every = self._ttl / 3000
        wake_every = min(renew_every, self._pulse_every) if self._pulse is not None else renew_every
        last_renewal = self._clock()
        while not self._wait(wake_every):
            if self._pulse is not None:
                try:
                    self._pulse()
                except Exception:
                    logger.debug("pulse failed", extra={"lease": self._name}, exc_info=True)
            if self._clock() - last_renewal < renew_every:
                continue
            try:
                with write_tx(self._engine) as conn:
                    fence(conn, self._name, self._token, ttl_ms=self._ttl, now_ms=self._now_ms())
                last_renewal = self._clock()
            except LeaseLost:
                self.lost = True
                return
            except Exception:
                logger.warning("lease renewal failed; will retry", extra={"lease": self._name}, exc_info=True)
