"""Queue and task names shared by publishers and workers (one place, no string drift).

The sandbox's names belong to its wire format (`microclaw.sandbox.client`) and are re-exported
here so routes and the beat schedule see every queue in one table.
"""

from __future__ import annotations

from microclaw.sandbox.client import (
    SANDBOX,
    SANDBOX_ENSURE,
    SANDBOX_EXEC,
    SANDBOX_LIST_FILES,
    SANDBOX_READ_FILE,
    SANDBOX_STOP,
    SANDBOX_STOP_IDLE,
    SANDBOX_WRITE_FILE,
)

ROUTER = "microclaw.router"
OUTBOUND = "microclaw.outbound"
MAINTENANCE = "microclaw.maintenance"
QUEUES = (ROUTER, OUTBOUND, SANDBOX, MAINTENANCE)

KICK = "microclaw.kick"
INGEST = "microclaw.ingest"
DELIVER = "microclaw.deliver"
TICK = "microclaw.tick"
SWEEP = "microclaw.sweep"
CLEANUP = "microclaw.cleanup"
# Best-effort "typing…" indicator while a group's agent runs (tasks/typing.py).
TYPING = "microclaw.typing"

ROUTES = {
    KICK: {"queue": ROUTER},
    INGEST: {"queue": ROUTER},
    DELIVER: {"queue": OUTBOUND},
    TYPING: {"queue": OUTBOUND},
    TICK: {"queue": MAINTENANCE},
    SWEEP: {"queue": MAINTENANCE},
    CLEANUP: {"queue": MAINTENANCE},
    f"{SANDBOX}.*": {"queue": SANDBOX},
}

__all__ = [
    "CLEANUP",
    "DELIVER",
    "INGEST",
    "KICK",
    "MAINTENANCE",
    "OUTBOUND",
    "QUEUES",
    "ROUTER",
    "ROUTES",
    "SANDBOX",
    "SANDBOX_ENSURE",
    "SANDBOX_EXEC",
    "SANDBOX_LIST_FILES",
    "SANDBOX_READ_FILE",
    "SANDBOX_STOP",
    "SANDBOX_STOP_IDLE",
    "SANDBOX_WRITE_FILE",
    "SWEEP",
    "TICK",
    "TYPING",
]
