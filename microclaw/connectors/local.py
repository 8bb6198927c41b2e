"""The local chat channel: talk to the assistant from this machine, no platform account needed.

Capability card:
- Addresses: ``local:<name>`` (``local:main`` is the default main group, registered at first boot).
- Inbound: the host's localhost HTTP surface calls `submit()` (``POST /api/chat``), which builds
  an envelope and returns once it is durable. ``message_id`` is ``local:<chat>:<client id>``; a
  client that retries with the same id is deduplicated.
- Ack point: the HTTP response to ``POST /api/chat`` is sent after the message is stored.
- Outbound: replies go to a SQLite mailbox (``<data_dir>/local-chat.db``) that ``microclaw chat``
  reads through ``GET /api/chat/replies``; sends are idempotent by key.
- Limits: 64 KiB per message (the envelope limit); no rate limit.
- Settings: none required (``chat_id``, default ``local:main``, is the chat a message without
  one goes to). Secrets: none.
- State: none. The mailbox is the channel itself (what a platform's servers are to the other
  connectors: it holds the replies users read), not cursor state, so it is a `Mailbox`, not a
  ``state_file``; the reader keeps its own position (the last reply id it saw).
- Cannot: reach anyone beyond this machine, or take a message while the host is down (the HTTP
  surface is the host's; ``submit`` refuses until ``listen`` runs).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import ClassVar, Self

from microclaw.connectors.base import BaseConnector, ConnectorSettings, Deliver
from microclaw.connectors.mailbox import Mailbox, MailboxItem
from microclaw.envelope import Envelope, make_envelope
from microclaw.errors import EnvelopeError, PermanentConnectorError, TransientConnectorError


class LocalConnector(BaseConnector):
    name: ClassVar[str] = "local"
    prefix: ClassVar[str] = "local"
    max_text_len: ClassVar[int] = 65536
    idempotent_send: ClassVar[bool] = True
    secrets: ClassVar[tuple[str, ...]] = ()
    state_file: ClassVar[str | None] = None

    def __init__(self, mailbox: Mailbox, *, chat_id: str = "local:main", max_text_bytes: int = 65536) -> None:
        self.mailbox = mailbox
        self.main_chat_id = chat_id
        self.max_text_bytes = max_text_bytes
        self._deliver: Deliver | None = None
        self._ready = asyncio.Event()

    @classmethod
    def from_settings(cls, settings: ConnectorSettings) -> Self:
        opts = settings.options
        return cls(
            Mailbox(settings.data_dir / "local-chat.db"),
            chat_id=str(opts.get("chat_id") or "local:main"),
            max_text_bytes=settings.max_text_bytes,
        )

    async def listen(self, deliver: Deliver) -> None:
        self._deliver = deliver
        self._ready.set()
        try:
            await asyncio.Event().wait()
        finally:
            self._deliver = None
            self._ready.clear()

    def build_envelope(
        self,
        text: str,
        *,
        chat_id: str | None = None,
        sender: str = "local-user",
        sender_name: str = "You",
        client_id: str | None = None,
    ) -> Envelope:
        """Validate a local message into an envelope (raises `EnvelopeError` on bad input).

        ``chat_id`` must be a local address: the local channel speaks for the machine's owner,
        so a message stored under another platform's chat would bypass that chat's sender
        allowlist.
        """
        chat = chat_id or self.main_chat_id
        if not self.owns(chat):
            raise EnvelopeError(
                f"chat_id must be a local chat (local:<name>), not {chat[:64]!r}",
                field="chat_id",
            )
        msg_id = client_id or uuid.uuid4().hex
        return make_envelope(
            source=self.name,
            message_id=f"{chat}:{msg_id}",
            chat_id=chat,
            text=text,
            sender=sender,
            sender_name=sender_name,
            is_from_me=True,
            max_text_bytes=self.max_text_bytes,
            chat_name="Local chat",
        )

    async def submit(self, envelope: Envelope) -> None:
        """Hand a local message to the host; returns once it is durable."""
        if self._deliver is None:
            raise TransientConnectorError("the local channel is not listening yet", chat_id=envelope.chat_id)
        await self._deliver(envelope)

    async def send(self, chat_id: str, text: str, *, idempotency_key: str) -> str:
        if not self.owns(chat_id):
            raise PermanentConnectorError(f"{chat_id!r} is not a {self.name} address", chat_id=chat_id)
        row_id = await asyncio.to_thread(self.mailbox.put, chat_id, text, idempotency_key)
        return str(row_id)

    def replies(self, after_id: int, *, chat_id: str | None = None, limit: int = 100) -> list[MailboxItem]:
        return self.mailbox.after(after_id, chat_id=chat_id, limit=limit)
