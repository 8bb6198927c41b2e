"""The exception hierarchy of MicroClaw: callers only ask "retry later, or give up?".

    MicroClawError
    ├── ConfigError                      bad or missing setting; names the key (permanent)
    ├── EnvelopeError                    malformed inbound envelope; names the field (permanent)
    ├── StoreError
    │   ├── TransientStoreError          database locked / busy: retry
    │   └── PermanentStoreError          schema or migration failure: stop
    │       └── LeaseLost                our fencing token is no longer current
    ├── ConnectorError
    │   ├── TransientConnectorError      platform down, 429 (``retry_after``): retry later
    │   └── PermanentConnectorError      chat not found, bot blocked: give up, record it
    ├── ProviderError
    │   ├── TransientProviderError       LLM API 429/5xx/timeout: retry with backoff
    │   └── PermanentProviderError       bad key, bad request: give up
    ├── SandboxError
    │   ├── TransientSandboxError        container start raced, exec timed out
    │   └── PermanentSandboxError
    │       └── SandboxUnavailable       no isolation backend: nothing ever runs unisolated
    └── PolicyDenied                     an action the running group may not take (audited)
        └── UnsafePath                   a container-writable path is a link or not a plain file

Facts ride on attributes (``retry_after``, ``chat_id``, ``group``, ``key``, ``field``); no caller
parses ``str(exc)``. Every class carries ``transient`` so generic code can decide without
``isinstance`` ladders.
"""

from __future__ import annotations


class MicroClawError(Exception):
    """Root of every error MicroClaw raises on purpose."""

    transient: bool = False


class ConfigError(MicroClawError):
    """A setting is missing or invalid; ``key`` names it (e.g. ``router.concurrency``)."""

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class EnvelopeError(MicroClawError):
    """An inbound envelope was rejected; ``field`` names the offending field when known."""

    def __init__(self, message: str, *, field: str | None = None, message_id: str | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.message_id = message_id


class StoreError(MicroClawError):
    """A database operation failed."""


class TransientStoreError(StoreError):
    transient = True


class PermanentStoreError(StoreError):
    pass


class LeaseLost(PermanentStoreError):
    """A lease (a group's run, a chat's outbox) was taken over: it expired and another holder
    acquired it. Stop without writing; ``lease`` names it, ``token`` is the stale token."""

    def __init__(self, lease: str, token: int) -> None:
        super().__init__(f"lease {lease!r} lost (token {token} is stale)")
        self.lease = lease
        self.token = token


class ConnectorError(MicroClawError):
    """A chat platform call failed."""

    def __init__(self, message: str, *, chat_id: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.chat_id = chat_id
        self.retry_after = retry_after


class TransientConnectorError(ConnectorError):
    transient = True


class PermanentConnectorError(ConnectorError):
    pass


class ProviderError(MicroClawError):
    """An LLM provider call failed."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TransientProviderError(ProviderError):
    transient = True


class PermanentProviderError(ProviderError):
    pass


class SandboxError(MicroClawError):
    """A sandboxed tool call failed."""

    def __init__(self, message: str, *, group: str | None = None) -> None:
        super().__init__(message)
        self.group = group


class TransientSandboxError(SandboxError):
    transient = True


class PermanentSandboxError(SandboxError):
    pass


class SandboxUnavailable(PermanentSandboxError):
    """The configured isolation backend cannot run containers; ``reason`` says why."""

    def __init__(self, reason: str, *, group: str | None = None) -> None:
        super().__init__(f"sandbox unavailable: {reason}", group=group)
        self.reason = reason


class PolicyDenied(MicroClawError):
    """The running group is not allowed to perform ``action``; audited, changes nothing."""

    def __init__(self, action: str, reason: str, *, group: str | None = None) -> None:
        super().__init__(f"{action} denied: {reason}")
        self.action = action
        self.reason = reason
        self.group = group


class UnsafePath(PolicyDenied):
    """Host code refused a path under a container-writable directory (a group folder): a
    component is a symbolic link, or not the directory or regular file expected. Nothing was
    read or written through it. ``path`` is relative to its root, ``problem`` says what it is
    (``is a symbolic link``); callers set ``group`` when they know it."""

    def __init__(self, path: str, problem: str, *, group: str | None = None) -> None:
        super().__init__("host file access", f"{path} {problem}", group=group)
        self.path = path
        self.problem = problem
