"""Worker and beat liveness: one daemon thread per process upserts a heartbeat row every few seconds.

The row is named after the process as its lease holders are (``worker@host:pid``; the holder
adds the incarnation, see `microclaw.pipeline.leases`), and its role lists what the process
serves: the queues it consumes and ``beat`` when beat runs in it (as a thread of the default
worker, or as its own process). `microclaw-host status` and `health` read these rows (a row
older than three intervals means the process is gone): one database read, with no broadcast
round trip to wait for, and beat, which answers no remote control, is covered too. ``celery
inspect`` works as well (see `microclaw.broker`).
"""

from __future__ import annotations

import logging
import os
import socket
import threading

from microclaw.config import Settings
from microclaw.store import status
from microclaw.store.db import create_sqlite_engine, now_ms, write_tx

logger = logging.getLogger(__name__)
INTERVAL_S = 5.0


def heartbeat_name(process: str) -> str:
    """This process's heartbeat row name: ``process@host:pid``."""
    return f"{process}@{socket.gethostname()}:{os.getpid()}"


class Heartbeat:
    """This process's heartbeat: the roles it reports and the thread that writes them."""

    def __init__(self, settings: Settings, process: str) -> None:
        # Unpooled: nothing to share with a forked child (a prefork pool, if one is asked for).
        self.engine = create_sqlite_engine(
            settings.store.db_path, busy_timeout_s=settings.store.busy_timeout_s, pooled=False
        )
        self.name = heartbeat_name(process)
        self.pid = os.getpid()
        self.started = now_ms()
        self.roles: list[str] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="heartbeat", daemon=True)

    def add(self, roles: list[str]) -> None:
        """Report ``roles`` too, from the next write on (which is made at once)."""
        with self._lock:
            self.roles = sorted({*self.roles, *roles})
        self._wake.set()

    def beat_once(self) -> None:
        with self._lock:
            role = ",".join(self.roles)
        with write_tx(self.engine) as conn:
            status.record_heartbeat(conn, self.name, role=role, pid=self.pid, started_at_ms=self.started)

    def _loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                self.beat_once()
            except Exception:
                logger.warning("heartbeat write failed", exc_info=True)
            self._wake.wait(INTERVAL_S)


_lock = threading.Lock()
_current: Heartbeat | None = None


def start_heartbeat(settings: Settings, *, process: str, roles: list[str]) -> Heartbeat:
    """Add ``roles`` to what this process reports, starting its heartbeat thread on the first
    call (a worker with beat in it calls this twice: for its queues, then for beat)."""
    global _current
    with _lock:
        if _current is None or _current.pid != os.getpid():
            _current = Heartbeat(settings, process)
            _current.add(roles)
            _current.thread.start()
            return _current
        beat = _current
    beat.add(roles)
    return beat
