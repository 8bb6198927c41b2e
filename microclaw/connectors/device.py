"""ESP32-S3 terminals, reached through the device gateway (`microclaw.gateway`).

Capability card:
- Addresses: ``dev:<device id>`` (the chat a device gets when it pairs, registered as a group
  that needs no trigger).
- Inbound: none here. The gateway process receives a device's ``message`` frames over mutual
  TLS and feeds them to the same inbound path (`microclaw.pipeline.inbound`); ``message_id``
  is ``dev:<device id>:<device's message id>``. Ack point: the gateway's ``ack`` frame, sent
  after the message is stored.
- Outbound: `send` appends the reply to the device's durable event log
  (``<data_dir>/device-log.db``, `microclaw.gateway.devicelog.DeviceLog`) and returns its seq;
  the gateway streams it to the device, or replays it when the device next says hello. Sends
  are idempotent by key, so a reply is logged once however often delivery is retried; it
  reaches a device that is offline now as soon as it reconnects.
- Limits: 4096 characters per event (a terminal screen; longer replies arrive as several);
  no rate limit (the device acknowledges by its last seen seq).
- Settings: none required. Secrets: none. State: none (the device log is the channel itself,
  shared with the gateway, like the local channel's mailbox).
- Cannot: tell whether a device exists or is revoked (the gateway refuses revoked devices;
  their log simply stops being read), or deliver audio (voice is a later issue).
"""

from __future__ import annotations

import asyncio
import sqlite3
from typing import ClassVar, Self

from microclaw.connectors.base import BaseConnector, ConnectorSettings, Deliver
from microclaw.errors import PermanentConnectorError, TransientConnectorError
from microclaw.gateway.devicelog import DeviceLog


class DeviceConnector(BaseConnector):
    name: ClassVar[str] = "device"
    prefix: ClassVar[str] = "dev"
    max_text_len: ClassVar[int] = 4096
    idempotent_send: ClassVar[bool] = True
    secrets: ClassVar[tuple[str, ...]] = ()
    state_file: ClassVar[str | None] = None

    def __init__(self, log: DeviceLog) -> None:
        self.log = log

    @classmethod
    def from_settings(cls, settings: ConnectorSettings) -> Self:
        return cls(DeviceLog.in_data_dir(settings.data_dir))

    async def listen(self, deliver: Deliver) -> None:
        # Devices talk to the gateway process, which ingests their messages itself.
        await asyncio.Event().wait()

    async def send(self, chat_id: str, text: str, *, idempotency_key: str) -> str:
        if not self.owns(chat_id):
            raise PermanentConnectorError(f"{chat_id!r} is not a {self.name} address", chat_id=chat_id)
        device_id = chat_id.split(":", 1)[1]
        if not device_id:
            raise PermanentConnectorError("empty device id", chat_id=chat_id)
        try:
            seq = await asyncio.to_thread(
                self.log.append, device_id, "message", {"text": text}, idempotency_key=idempotency_key
            )
        except (sqlite3.OperationalError, OSError) as exc:  # locked beyond the busy timeout, disk full
            raise TransientConnectorError(f"device log unavailable: {exc}", chat_id=chat_id) from exc
        return str(seq)

    async def close(self) -> None:
        self.log.close()
