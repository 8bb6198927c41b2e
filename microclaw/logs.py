"""Logging set-up for entry points: a readable line on a terminal, JSON lines otherwise.

Library modules only do ``logging.getLogger(__name__)``; this is called once per process by an
entry point. ``logging.format`` picks the format: ``auto`` (the default) is text when stderr is
a terminal and JSON when it is not (a pipe, honcho, systemd's journal, a file), ``json`` or
``text`` force one. A text line is ``HH:MM:SS.mmm role LEVEL message  key=value ...`` where the
keys are the ids that join it to the audit table (`JOIN_KEYS`); JSON carries every ``extra``.
The level is ``logging.levels[role]`` when set, else ``logging.level``. Celery's per-tick INFO
chatter (beat's "Sending due task ...") is kept below INFO unless the level is DEBUG.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import Any, TextIO

from pythonjsonlogger.json import JsonFormatter

_FIELDS = "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s"
# The ids a line is joined on (audit_log.chat_jid, .message_id, runs.id, group folders, ...).
JOIN_KEYS = ("chat_jid", "message_id", "run_id", "group", "outbox_id", "task_id", "connector")
# Not MICROCLAW_*: that prefix is reserved for settings (an unknown one is refused).
TTY_HINT = "MC_CONSOLE_TTY"
# Loggers whose INFO lines are per-request or per-tick chatter.
_CHATTY = (
    "httpx",
    "uvicorn.access",
    "alembic",
    "celery.beat",  # "Sending due task ..." every tick
    "celery.worker.strategy",  # "Task ... received" for every task
    "celery.app.trace",  # "Task ... succeeded" (failures are ERROR and still show)
)


class ConsoleFormatter(logging.Formatter):
    """``08:15:02.123 worker  INFO    message  chat_jid=tg:1 run_id=7``, coloured on a terminal."""

    _COLOURS = {"DEBUG": "\033[2m", "WARNING": "\033[33m", "ERROR": "\033[31m", "CRITICAL": "\033[1;31m"}

    def __init__(self, role: str | None, *, colour: bool) -> None:
        super().__init__()
        self.role = role or "-"
        self.colour = colour

    def format(self, record: logging.LogRecord) -> str:
        clock = self.formatTime(record, "%H:%M:%S") + f".{int(record.msecs):03d}"
        ids = " ".join(
            f"{key}={getattr(record, key)}" for key in JOIN_KEYS if getattr(record, key, None) is not None
        )
        level = f"{record.levelname:<7}"
        if self.colour and record.levelname in self._COLOURS:
            level = f"{self._COLOURS[record.levelname]}{level}\033[0m"
        line = f"{clock} {self.role:<8} {level} {record.getMessage()}"
        if ids:
            line += f"  {ids}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def resolve_format(fmt: str, stream: TextIO) -> str:
    """``auto`` -> ``text`` on a terminal, ``json`` otherwise; other values pass through.

    `TTY_HINT` set to 1 counts as a terminal: ``make run`` sets it when its own stderr is one,
    because honcho hands every process a pipe and prefixes their lines on the user's terminal.
    """
    if fmt != "auto":
        return fmt
    if os.environ.get(TTY_HINT) == "1":
        return "text"
    try:
        return "text" if stream.isatty() else "json"
    except (AttributeError, ValueError):
        return "json"


def configure_logging(
    level: str = "INFO",
    fmt: str = "auto",
    *,
    role: str | None = None,
    levels: Mapping[Any, str] | None = None,
    stream: TextIO | None = None,
) -> None:
    """Send every log record to stderr at the role's level, in the chosen format; idempotent."""
    out = stream if stream is not None else sys.stderr
    if role is not None and levels and role in levels:
        level = levels[role]
    handler = logging.StreamHandler(out)
    if resolve_format(fmt, out) == "json":
        static = {"role": role} if role else None
        handler.setFormatter(
            JsonFormatter(
                _FIELDS, rename_fields={"levelname": "level", "asctime": "ts"}, static_fields=static
            )
        )
    else:
        handler.setFormatter(ConsoleFormatter(role, colour=_isatty(out)))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in _CHATTY:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def process_name(argv: list[str]) -> str:
    """The name a Celery process goes by in heartbeats and lease holders: ``beat``, or its
    worker's ``-n`` name before the ``@`` (``worker``, ``sandbox``; ``router`` in the scale-out
    Procfile), ``worker`` when it has none."""
    if "beat" in argv[1:]:
        return "beat"
    for i, arg in enumerate(argv):
        name = argv[i + 1] if arg in ("-n", "--hostname") and i + 1 < len(argv) else None
        if arg.startswith("--hostname="):
            name = arg.split("=", 1)[1]
        if name:
            return name.split("@", 1)[0] or "worker"
    return "worker"


def process_role(argv: list[str]) -> str:
    """The Procfile role of this Celery process: ``beat``, or the worker's ``-n`` name before
    the ``@`` (``router`` is the Procfile's ``worker``), for `logging.levels` and log lines."""
    name = process_name(argv)
    return "worker" if name == "router" else name
