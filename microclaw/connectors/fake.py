"""A fake chat platform for tests and benchmarks: a real sibling, never enabled in production.

Capability card:
- Addresses: ``fake:<anything>``. Inbound: none (tests publish envelopes directly).
- Outbound: replies are recorded in a SQLite mailbox (``options.mailbox`` or
  ``<data_dir>/fake-outbox.db``); sends are idempotent by key.
- Failure injection from settings: ``permanent_chats`` (a list: sends there raise
  `PermanentConnectorError`), ``transient_failures`` (each chat's first N sends raise
  `TransientConnectorError`, counted in the mailbox file so it holds across processes).
- Ack point: none (nothing inbound). Limits: 4096 characters per send, no rate limit.
- Settings: none required. Secrets: none. State: none (the mailbox is the fake platform, as
  for the local channel).
- Cannot: receive anything; it exists to be sent to.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import ClassVar, Self

from microclaw.connectors.base import BaseConnector, ConnectorSettings, Deliver
from microclaw.connectors.mailbox import Mailbox
from microclaw.errors import PermanentConnectorError, TransientConnectorError


class FakeConnector(BaseConnector):
    name: ClassVar[str] = "fake"
    prefix: ClassVar[str] = "fake"
    max_text_len: ClassVar[int] = 4096
    idempotent_send: ClassVar[bool] = True
    secrets: ClassVar[tuple[str, ...]] = ()
    state_file: ClassVar[str | None] = None

    def __init__(
        self, mailbox: Mailbox, *, permanent_chats: tuple[str, ...] = (), transient_failures: int = 0
    ) -> None:
        self.mailbox = mailbox
        self.permanent_chats = permanent_chats
        self.transient_failures = transient_failures

    @classmethod
    def from_settings(cls, settings: ConnectorSettings) -> Self:
        opts = settings.options
        path = Path(str(opts["mailbox"])) if opts.get("mailbox") else settings.data_dir / "fake-outbox.db"
        return cls(
            Mailbox(path),
            permanent_chats=tuple(str(c) for c in opts.get("permanent_chats") or ()),
            transient_failures=int(opts.get("transient_failures") or 0),
        )

    async def listen(self, deliver: Deliver) -> None:
        await asyncio.Event().wait()

    async def send(self, chat_id: str, text: str, *, idempotency_key: str) -> str:
        if not self.owns(chat_id):
            raise PermanentConnectorError(f"{chat_id!r} is not a {self.name} address", chat_id=chat_id)
        if chat_id in self.permanent_chats:
            raise PermanentConnectorError(f"chat {chat_id} not found", chat_id=chat_id)
        if self.transient_failures:
            attempt = await asyncio.to_thread(self.mailbox.bump, f"attempts:{chat_id}")
            if attempt <= self.transient_failures:
                raise TransientConnectorError("fake platform busy", chat_id=chat_id, retry_after=0.05)
        return str(await asyncio.to_thread(self.mailbox.put, chat_id, text, idempotency_key))
