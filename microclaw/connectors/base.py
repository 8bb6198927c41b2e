"""The connector interface: one chat platform, listening in the host and sending from the
outbound worker.

A connector never touches the store or the queue. Inbound events go to the ``deliver``
callback it is given; when ``deliver`` returns the message is durable, and only then may the
connector acknowledge the platform (advance an offset, set a flag, move a cursor). ``send``
must work in a process where ``listen`` never ran. Platform exceptions become
`TransientConnectorError` (retry later; ``retry_after`` when the platform says) or
`PermanentConnectorError` (chat gone, bot blocked) at the connector's own edge.

Addresses are ``<name>:<platform chat id>`` (``tg:-100123``, ``local:main``); `owns` decides by
that prefix, so no code outside a connector inspects address formats.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

from microclaw.envelope import Envelope
from microclaw.errors import ConfigError

Deliver = Callable[[Envelope], Awaitable[None]]


def number_option(
    options: Mapping[str, Any],
    connector: str,
    key: str,
    default: float,
    *,
    minimum: float = 0.0,
    blank_is_default: bool = False,
) -> float:
    """The number at ``connectors.<connector>.<key>`` (``default`` when absent, and when empty
    with ``blank_is_default``); `ConfigError` naming the key when it is not a number or is
    below ``minimum``."""
    name = f"connectors.{connector}.{key}"
    value = options.get(key, default)
    if blank_is_default and value in ("", None):
        value = default
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: expected a number, got {value!r}", key=name) from None
    if number < minimum:
        raise ConfigError(f"{name}: must be >= {minimum}, got {number!r}", key=name)
    return number


@dataclass(frozen=True)
class ConnectorSettings:
    """One connector's slice of the configuration, plus the few global facts connectors need."""

    name: str
    options: Mapping[str, Any]
    data_dir: Path
    assistant_name: str
    max_text_bytes: int = 65536
    # Secrets the entry point read from the environment for this connector (never logged).
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)


class BaseConnector(abc.ABC):
    """One chat platform. See the module docstring for the caller contract."""

    name: ClassVar[str]
    #: Address prefix of the chats this connector owns (``tg`` for ``tg:<chat>``).
    prefix: ClassVar[str]
    #: send() is never handed a longer chunk (characters).
    max_text_len: ClassVar[int] = 4096
    #: True when send() deduplicates by idempotency key, so a send interrupted by a crash can
    #: safely be repeated. Otherwise such a reply is marked uncertain and never re-sent.
    idempotent_send: ClassVar[bool] = False

    @classmethod
    @abc.abstractmethod
    def from_settings(cls, settings: ConnectorSettings) -> Self:
        """Build from this connector's settings; `ConfigError` naming the missing credential."""

    def owns(self, chat_id: str) -> bool:
        """Whether ``chat_id`` is an address of this connector."""
        return chat_id.startswith(f"{self.prefix}:")

    @abc.abstractmethod
    async def listen(self, deliver: Deliver) -> None:
        """Run until cancelled, handing each inbound message to ``deliver``.

        Acknowledge upstream only after ``deliver`` returned. Raise on a lost connection; the
        host restarts ``listen`` with backoff.
        """

    @abc.abstractmethod
    async def send(self, chat_id: str, text: str, *, idempotency_key: str) -> str:
        """Send one chunk (at most ``max_text_len`` characters); return the platform message id.

        Raises `TransientConnectorError` or `PermanentConnectorError`.
        """

    async def close(self) -> None:
        """Release network resources. Optional."""
        return None
