"""``microclaw``: talk to the assistant through the local channel (``chat``), and import a
NanoClaw v1 install (``import-nanoclaw``).

An entry point: ``chat`` is an HTTP client of the running host's localhost surface and imports
nothing else of MicroClaw's; the importer is loaded only when that command runs.
"""

from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path
from typing import Any

import click
import httpx

from microclaw.cli.common import console, fail, load_settings_or_exit
from microclaw.logs import configure_logging


@click.group(help="Talk to your MicroClaw assistant.")
def main() -> None:
    pass


@main.command(help="Chat through the local channel. With -m, send one message and print the reply.")
@click.option("-m", "--message", help="Send this one message, print the reply, exit.")
@click.option("--chat-id", default=None, help="Local chat address (default: the main local chat).")
@click.option("--timeout", default=120.0, show_default=True, help="Seconds to wait for a reply with -m.")
def chat(message: str | None, chat_id: str | None, timeout: float) -> None:
    settings = load_settings_or_exit()
    base = settings.http.base_url
    with httpx.Client(base_url=base, timeout=40.0) as client:
        try:
            after = _latest_reply_id(client, chat_id)
        except httpx.ConnectError:
            fail(f"the host is not running at {base}; start it with `make run` or `honcho start`")
        if message is not None:
            _send(client, message, chat_id)
            replies = _wait_replies(client, chat_id, after, timeout)
            if not replies:
                fail(f"no reply within {timeout:.0f} s (is a worker running? see `microclaw-host status`)")
            for reply in replies:
                console.print(reply["text"])
            return
        console.print(f"[dim]Connected to {base}. Type a message; Ctrl-D to quit.[/]")
        while True:
            try:
                line = console.input("[bold cyan]you>[/] ")
            except (EOFError, KeyboardInterrupt):
                console.print()
                return
            if not line.strip():
                continue
            _send(client, line, chat_id)
            with console.status("thinking…"):
                replies = _wait_replies(client, chat_id, after, timeout)
            for reply in replies:
                console.print(f"[bold green]{settings.assistant_name}>[/] {reply['text']}")
                after = max(after, reply["id"])
            if not replies:
                console.print("[yellow](no reply yet; it will show up with your next message)[/]")


def _latest_reply_id(client: httpx.Client, chat_id: str | None) -> int:
    after = 0
    while True:
        params: dict[str, Any] = {"after": after}
        if chat_id:
            params["chat_id"] = chat_id
        items = client.get("/api/chat/replies", params=params).json()["replies"]
        if not items:
            return after
        after = items[-1]["id"]


def _send(client: httpx.Client, text: str, chat_id: str | None) -> None:
    body = {"text": text, "client_id": uuid.uuid4().hex}
    if chat_id:
        body["chat_id"] = chat_id
    response = client.post("/api/chat", json=body)
    if response.status_code != 202:
        fail(response.json().get("error", response.text))


def _wait_replies(
    client: httpx.Client, chat_id: str | None, after: int, timeout: float
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        params: dict[str, Any] = {"after": after, "wait": min(25.0, max(0.1, deadline - time.monotonic()))}
        if chat_id:
            params["chat_id"] = chat_id
        items = client.get("/api/chat/replies", params=params).json()["replies"]
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
