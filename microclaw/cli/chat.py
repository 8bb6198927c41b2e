"""``microclaw``: talk to the assistant through the local channel (``chat``), and import a
NanoClaw v1 install (``import-nanoclaw``).

An entry point: ``chat`` is an HTTP client of the running host's localhost surface (it sends the
per-install token from ``<data_dir>/http-token``; an error answer or a missing host is one clear
line, never a traceback) and imports nothing else of MicroClaw's but the settings; the importer is
loaded only when that command runs.
"""

from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path
from typing import Any

import click
import httpx

from microclaw.cli.common import (
    HostError,
    console,
    err,
    fail,
    host_client,
    host_request,
    load_settings_or_exit,
)
from microclaw.config import Settings
from microclaw.logs import configure_logging


@click.group(help="Talk to your MicroClaw assistant.")
@click.version_option(package_name="microclaw", prog_name="microclaw")
def main() -> None:
    pass


@main.command(help="Chat through the local channel. With -m, send one message and print the reply.")
@click.option("-m", "--message", help="Send this one message, print the reply, exit.")
@click.option("--chat-id", default=None, help="Local chat address (default: the main local chat).")
@click.option("--timeout", default=120.0, show_default=True, help="Seconds to wait for a reply with -m.")
def chat(message: str | None, chat_id: str | None, timeout: float) -> None:
    settings = load_settings_or_exit()
    base = settings.http.base_url
    with host_client(settings, timeout=40.0) as client:
        session = _Session(client, settings, chat_id)
        try:
            after = session.latest_reply_id()
            if message is not None:
                session.send(message)
                replies = session.wait_replies(after, timeout)
                if not replies:
                    fail(
                        f"no reply within {timeout:.0f} s (is a worker running? see `microclaw-host status`)"
                    )
                for reply in replies:
                    console.print(reply["text"])
                return
        except HostError as exc:
            fail(str(exc))
        console.print(f"[dim]Connected to {base}. Type a message; Ctrl-D to quit.[/]")
        while True:
            try:
                line = console.input("[bold cyan]you>[/] ")
            except (EOFError, KeyboardInterrupt):
                console.print()
                return
            if not line.strip():
                continue
            try:
                session.send(line)
                with console.status("thinking…"):
                    replies = session.wait_replies(after, timeout)
            except HostError as exc:
                err.print(f"[bold red]error:[/] {exc}", soft_wrap=True)
                continue
            for reply in replies:
                console.print(f"[bold green]{settings.assistant_name}>[/] {reply['text']}")
                after = max(after, reply["id"])
            if not replies:
                console.print("[yellow](no reply yet; it will show up with your next message)[/]")


class _Session:
    """One conversation's requests to the host; every failure is a `HostError`."""

    def __init__(self, client: httpx.Client, settings: Settings, chat_id: str | None) -> None:
        self.client = client
        self.settings = settings
        self.chat_id = chat_id

    def _replies(self, after: int, wait: float | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"after": after}
        if wait is not None:
            params["wait"] = round(wait, 3)
        if self.chat_id:
            params["chat_id"] = self.chat_id
        _, body = host_request(self.client, self.settings, "GET", "/api/chat/replies", params=params)
        items = body.get("replies") if isinstance(body, dict) else None
        if not isinstance(items, list):
            raise HostError("the host's answer has no list of replies")
        return items

    def latest_reply_id(self) -> int:
        after = 0
        while True:
            items = self._replies(after)
            if not items:
                return after
            after = items[-1]["id"]

    def send(self, text: str) -> None:
        body = {"text": text, "client_id": uuid.uuid4().hex}
        if self.chat_id:
            body["chat_id"] = self.chat_id
        host_request(self.client, self.settings, "POST", "/api/chat", json=body)

    def wait_replies(self, after: int, timeout: float) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            items = self._replies(after, wait=min(25.0, max(0.1, deadline - time.monotonic())))
            if items:
                return items
        return []


@main.command(
    "import-nanoclaw",
    help="Import a NanoClaw v1 store (PATH: its store/messages.db): chats, messages, groups, tasks with "
    "run logs, sessions and cursors. Safe to re-run; prints counts per table.",
)
@click.argument("path", type=click.Path(path_type=Path))
@click.option(
    "--groups-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="NanoClaw's groups/ folder: copy each imported group's files (CLAUDE.md, ...), never overwriting.",
)
@click.option("--dry-run", is_flag=True, help="Show what would be imported; write nothing.")
@click.option("--assistant-name", default=None, help="NanoClaw's ASSISTANT_NAME (default: ours).")
def import_nanoclaw(path: Path, groups_dir: Path | None, dry_run: bool, assistant_name: str | None) -> None:
    from microclaw.importer.nanoclaw import run_command

    settings = load_settings_or_exit()
    configure_logging("ERROR", "text")
    sys.exit(
        run_command(settings, path, groups_dir=groups_dir, dry_run=dry_run, assistant_name=assistant_name)
    )


from microclaw.cli.device import device as _device  # noqa: E402 - the `microclaw device` group

main.add_command(_device)

from microclaw.cli.ota import ota as _ota  # noqa: E402 - the `microclaw ota` group

main.add_command(_ota)

from microclaw.cli.distill import distill as _distill  # noqa: E402 - the `microclaw distill` group

main.add_command(_distill)
