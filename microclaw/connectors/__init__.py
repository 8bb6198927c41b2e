"""Chat connectors: one module per platform, all shaped like `base.BaseConnector`.

The registry maps a connector name to ``"module:Class"``; modules are imported only when the
connector is enabled, so an unused platform SDK is never loaded. An unknown name fails at boot
and lists the known ones.
"""

from __future__ import annotations

CONNECTORS: dict[str, str] = {
    "local": "microclaw.connectors.local:LocalConnector",
    "fake": "microclaw.connectors.fake:FakeConnector",
    "email": "microclaw.connectors.email:EmailConnector",
    "imessage": "microclaw.connectors.imessage:IMessageConnector",
    "telegram": "microclaw.connectors.telegram:TelegramConnector",
    "discord": "microclaw.connectors.discord:DiscordConnector",
    "device": "microclaw.connectors.device:DeviceConnector",
}
