"""What the command-line programs share: loading settings or exiting with a clear message, and
the consoles they print to. Entry points: only the CLI modules import this.
"""

from __future__ import annotations

import sys
from typing import NoReturn

from rich.console import Console

from microclaw.config import Settings, load_settings
from microclaw.errors import ConfigError

console = Console(stderr=False)
err = Console(stderr=True)


def load_settings_or_exit() -> Settings:
    """The validated settings; exit 2 with the offending key's message when they are invalid."""
    try:
        return load_settings()
    except ConfigError as exc:
        fail(f"configuration error: {exc}", code=2)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``message`` as an error and exit with ``code``."""
    err.print(f"[bold red]error:[/] {message}")
    sys.exit(code)
