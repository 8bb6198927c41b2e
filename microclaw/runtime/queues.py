"""Queue and task names shared by publishers and workers (one place, no string drift)."""

from __future__ import annotations

ROUTER = "microclaw.router"
OUTBOUND = "microclaw.outbound"
SANDBOX = "microclaw.sandbox"
MAINTENANCE = "microclaw.maintenance"
QUEUES = (ROUTER, OUTBOUND, SANDBOX, MAINTENANCE)

KICK = "microclaw.kick"
INGEST = "microclaw.ingest"
DELIVER = "microclaw.deliver"
TICK = "microclaw.tick"
SWEEP = "microclaw.sweep"
CLEANUP = "microclaw.cleanup"
# Agent tools in per-group containers (tasks/sandbox.py); callers use microclaw.sandbox.client.
SANDBOX_EXEC = "microclaw.sandbox.exec"
SANDBOX_READ_FILE = "microclaw.sandbox.read_file"
SANDBOX_WRITE_FILE = "microclaw.sandbox.write_file"
SANDBOX_LIST_FILES = "microclaw.sandbox.list_files"
SANDBOX_ENSURE = "microclaw.sandbox.ensure"
SANDBOX_STOP = "microclaw.sandbox.stop"
SANDBOX_STOP_IDLE = "microclaw.sandbox.stop_idle"
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
    "microclaw.sandbox.*": {"queue": SANDBOX},
}
