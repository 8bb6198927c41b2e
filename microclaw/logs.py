"""Logging set-up for entry points: structured JSON lines (or plain text) on stderr.

Library modules only do ``logging.getLogger(__name__)``; this is called once per process by an
entry point.
"""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

_FIELDS = "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s"


def configure_logging(level: str = "INFO", fmt: str = "json", *, role: str | None = None) -> None:
    """Send every log record to stderr as JSON (or text) at ``level``; idempotent."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        static = {"role": role} if role else None
        handler.setFormatter(
            JsonFormatter(
                _FIELDS, rename_fields={"levelname": "level", "asctime": "ts"}, static_fields=static
            )
        )
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("httpx", "uvicorn.access", "alembic.runtime.migration"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
