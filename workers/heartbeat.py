"""Worker and beat liveness: a daemon thread upserts a heartbeat row every few seconds.

`microclaw-host status` and `health` read these rows (a row older than three intervals means
the process is gone): one database read, with no broadcast round trip to wait for, and beat,
which answers no remote control, is covered too. ``celery inspect`` works as well (see
`microclaw.broker`).
"""

from __future__ import annotations

import logging
import os
import socket
import threading

from sqlalchemy import Engine

from microclaw.config import Settings
from microclaw.store import status
from microclaw.store.db import create_sqlite_engine, now_ms, write_tx

logger = logging.getLogger(__name__)
INTERVAL_S = 5.0


def beat_once(engine: Engine, name: str, role: str, started: int) -> None:
    with write_tx(engine) as conn:
        status.record_heartbeat(conn, name, role=role, pid=os.getpid(), started_at_ms=started)


def start_heartbeat(settings: Settings, *, role: str) -> threading.Thread:
    """Start the heartbeat thread for this process."""
    # Unpooled: this runs in the Celery parent, whose pool children must not inherit connections.
    engine = create_sqlite_engine(
        settings.store.db_path, busy_timeout_s=settings.store.busy_timeout_s, pooled=False
    )
    name = f"{role}@{socket.gethostname()}:{os.getpid()}"
    started = now_ms()

    def loop() -> None:
        while True:
            try:
                beat_once(engine, name, role, started)
            except Exception:
                logger.warning("heartbeat write failed", exc_info=True)
            threading.Event().wait(INTERVAL_S)

    thread = threading.Thread(target=loop, name="heartbeat", daemon=True)
    thread.start()
    return thread
