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

What a sibling declares as data on its class, and where the base uses it:

- ``secrets``: the environment variables holding its credentials. The entry point reads exactly
  these into `ConnectorSettings.secrets`; looking up any other name there raises
  `UndeclaredSecret`, so a connector cannot quietly depend on a variable nobody reads.
- ``state_file``: the name of its own state file under the data dir (cursors, per-chat facts),
  opened by `BaseConnector.open_state`; None when it keeps no state.

Optional hooks (`send_typing`, `close`) have safe defaults here; callers call them directly.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

from microclaw.connectors.state import ConnectorState
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


class UndeclaredSecret(LookupError):
    """A connector looked up a secret its class does not list in ``secrets``.

    A bug in that connector, not a configuration problem: it is deliberately not a
    `ConfigError`, so the boot reports the connector as failed (with a traceback) instead of
    skipping it as "not configured".
    """

    def __init__(self, name: str, declared: tuple[str, ...]) -> None:
        super().__init__(
            f"secret {name!r} is not declared by this connector (declared: {', '.join(declared) or 'none'});"
            " add it to the connector class's `secrets`"
        )
        self.name = name
        self.declared = declared


class Secrets(Mapping[str, str]):
    """The values of the secrets one connector declared, as the entry point read them.

    A declared secret that is unset or empty is absent (``get`` gives the default); looking up a
    name that was not declared raises `UndeclaredSecret`, through ``[]``, ``get`` and ``in``
    alike. Values never appear in ``repr``.
    """

    __slots__ = ("_values", "declared")

    def __init__(self, declared: Iterable[str] = (), values: Mapping[str, str] | None = None) -> None:
        self.declared = tuple(declared)
        self._values = {k: v for k, v in (values or {}).items() if v}
        for name in self._values:
            if name not in self.declared:
                raise UndeclaredSecret(name, self.declared)

    @classmethod
    def from_environ(cls, declared: Iterable[str], environ: Mapping[str, str]) -> Secrets:
        """The ``declared`` variables that are set in ``environ`` (read by an entry point only)."""
        names = tuple(declared)
        return cls(names, {k: environ[k] for k in names if environ.get(k)})

    def __getitem__(self, name: str) -> str:
        if name not in self.declared:
            raise UndeclaredSecret(name, self.declared)
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Secrets(declared={self.declared!r}, set={tuple(self._values)!r})"


@dataclass(frozen=True)
class ConnectorSettings:
    """One connector's slice of the configuration, plus the few global facts connectors need."""

    name: str
    options: Mapping[str, Any]
    data_dir: Path
    assistant_name: str
    max_text_bytes: int = 65536
    #: The connector's declared secrets, read from the environment by the entry point.
    secrets: Secrets = field(default_factory=Secrets, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.secrets, Secrets):
            raise TypeError(
                "ConnectorSettings.secrets must be a Secrets built from the connector's declared"
                f" `secrets`, not {type(self.secrets).__name__}"
            )


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
    #: Environment variables holding this connector's secrets; the only names `from_settings`
    #: may look up in ``settings.secrets``. No default: every sibling declares it in its own
    #: class body, ``()`` when it needs none (the contract test checks).
    secrets: ClassVar[tuple[str, ...]]
    #: File name of this connector's own state under the data dir (see `open_state`); None when
    #: it keeps none.
    state_file: ClassVar[str | None] = None

    @classmethod
    @abc.abstractmethod
    def from_settings(cls, settings: ConnectorSettings) -> Self:
        """Build from this connector's settings; `ConfigError` naming the missing credential."""

    @classmethod
    def open_state(cls, settings: ConnectorSettings, *, path: Path | None = None) -> ConnectorState:
        """Open this connector's state file, ``<data_dir>/<state_file>`` (``path`` where a setting
        moved it), creating it on first use. Called from `from_settings`; the file is shared by
        the host and the outbound worker, and a write is durable when it returns.

        `TypeError` when the class declares no ``state_file``.
        """
        if cls.state_file is None:
            raise TypeError(f"{cls.__name__} declares no state_file")
        return ConnectorState(path or settings.data_dir / cls.state_file)

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

    async def send_typing(self, chat_id: str) -> bool:
        """Show a "typing…" indicator in ``chat_id`` while an agent works on a reply. Optional.

        Called by the ``microclaw.typing`` task on the outbound worker (``listen`` may never have
        run there), best effort: the caller logs a `ConnectorError` and drops it, and never
        retries. Returns True when the platform was asked to show the indicator, False when it
        has none (this default, which does nothing). Raises like `send`.
        """
        return False

    async def check(self) -> str | None:
        """Prove the credentials work with one cheap API call (``microclaw-host doctor``). Optional.

        Called from the doctor command only, never while the host runs, and must work if
        ``listen`` never ran. Returns what was proven (e.g. "bot @name"), or None when the
        platform offers no cheap check (this default, which calls nothing). Raises like `send`
        (`PermanentConnectorError` for refused credentials).
        """
        return None

    async def close(self) -> None:
        """Release network resources and open files. Optional."""
        return None
