"""What the command-line programs share: loading settings or exiting with a clear message, the
consoles they print to, and the HTTP client of the running host (it sends the per-install token
and turns every failure into one clear sentence). Entry points: only the CLI modules import this.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, NoReturn

from rich.console import Console
from rich.table import Table

from microclaw.config import Settings, load_settings
from microclaw.errors import ConfigError
from microclaw.private import read_token

if TYPE_CHECKING:  # imported where used: the gateway process never talks to the host (~6 MB)
    import httpx

console = Console(stderr=False)
err = Console(stderr=True)


def print_table(table: Table) -> None:
    """Print ``table`` fitted to the terminal, or, into a pipe or a file, at its full width:
    rich would otherwise cut it to 80 columns there, and ids cut short cannot be copied."""
    if console.is_terminal:
        console.print(table)
        return
    wanted = console.measure(table, options=console.options.update_width(1000)).maximum
    narrow, console.width = console.width, max(console.width, wanted)
    try:
        console.print(table)
    finally:
        console.width = narrow


def load_settings_or_exit() -> Settings:
    """The validated settings; exit 2 with the offending key's message when they are invalid."""
    try:
        return load_settings()
    except ConfigError as exc:
        fail(f"configuration error: {exc}", code=2)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``message`` as an error and exit with ``code``."""
    # soft_wrap: a path or command in the message stays on one line, whole and copyable.
    err.print(f"[bold red]error:[/] {message}", soft_wrap=True)
    sys.exit(code)


class HostError(Exception):
    """The host could not be reached or refused a request; the message says which and why."""


def host_client(settings: Settings, *, timeout: float) -> httpx.Client:
    """An HTTP client of the running host's localhost surface, sending the per-install token
    from ``<data_dir>/http-token`` (absent until the host first started)."""
    token = read_token(settings.http_token_path)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    import httpx

    return httpx.Client(base_url=settings.http.base_url, timeout=timeout, headers=headers)


def host_request(
    client: httpx.Client, settings: Settings, method: str, url: str, **kwargs: Any
) -> tuple[int, Any]:
    """``(status, JSON body)`` of one request to the host; `HostError` with a clear sentence when
    it is not running, does not answer, refuses the token, or answers an error (4xx/5xx)."""
    import httpx

    base = settings.http.base_url
    try:
        response = client.request(method, url, **kwargs)
    except httpx.ConnectError:
        raise HostError(
            f"the host is not running at {base}; start it with `make run` or `honcho start`"
        ) from None
    except httpx.TimeoutException:
        raise HostError(f"the host at {base} did not answer in time") from None
    except httpx.HTTPError as exc:
        raise HostError(f"talking to the host at {base} failed: {type(exc).__name__}: {exc}") from None
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    if response.status_code < 400:
        if body is None:
            raise HostError(f"the host at {base} answered {response.status_code} with a non-JSON body")
        return response.status_code, body
    said = body.get("error") if isinstance(body, dict) else None
    said = str(said) if said else (response.reason_phrase or "no reason given")
    if response.status_code == 401:
        path = settings.http_token_path
        hint = (
            f"no token at {path}: has the host started with this data_dir?"
            if read_token(path) is None
            else f"the token in {path} is not the running host's: is it using this data_dir?"
        )
        raise HostError(f"the host refused this client (401: {said}); {hint}")
    raise HostError(f"the host answered {response.status_code}: {said}")
