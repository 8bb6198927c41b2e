"""The sandbox backend interface, its configuration and the data it exchanges.

Owns: ``SandboxConfig`` (the ``[sandbox]`` settings plus host facts and resolved credentials,
which every sandbox part receives),
``ContainerSpec`` / ``ContainerHandle`` / ``ExecRequest`` / ``ExecResult``, the
``BaseSandboxBackend`` contract, and machinery shared by every backend: container-name
validation, labels, the spec digest that tells a warm container from a stale one.

Does not: talk to any container runtime (siblings ``docker.py`` and ``apple.py`` do), decide
mounts (``mounts.py``) or egress (``egress.py``), or read settings (the entry point builds a
``SandboxConfig`` with ``SandboxConfig.from_settings`` and passes it in).
"""

from __future__ import annotations

import abc
import hashlib
import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Annotated, ClassVar

from pydantic import BeforeValidator, ConfigDict, Field

from microclaw.config import SandboxSettings
from microclaw.core.groups import is_valid_group_folder
from microclaw.errors import TransientSandboxError

if TYPE_CHECKING:
    from microclaw.sandbox import executor

logger = logging.getLogger(__name__)

#: Where the mount allowlist lives unless configured otherwise (outside the project, never mounted).
DEFAULT_MOUNT_ALLOWLIST_PATH = Path("~/.config/microclaw/mount-allowlist.json")

#: In-container paths (the mount layout every backend uses).
WORKSPACE = "/workspace"
GROUP_MOUNT = "/workspace/group"
GLOBAL_MOUNT = "/workspace/global"
EXTRA_MOUNT_ROOT = "/workspace/extra"


class ContainerGone(TransientSandboxError):
    """The group's container is not running and nothing was executed: safe to re-ensure."""


def validate_group_name(group: str) -> str:
    """Return ``group`` when it is a valid group folder name, else raise ValueError.

    The rule is ``microclaw.core.groups.is_valid_group_folder`` (contract 7.1): the name ends
    up in container names, labels and host paths.
    """
    if not is_valid_group_folder(group):
        raise ValueError(f"invalid group name {group!r}")
    return group


class Credentials(Mapping[str, Mapping[str, str]]):
    """Egress credential headers per upstream host; its repr never shows a value."""

    def __init__(self, data: Mapping[str, Mapping[str, str]] | None = None) -> None:
        self._data = {
            host.lower().rstrip("."): MappingProxyType(dict(headers))
            for host, headers in (data or {}).items()
        }

    def __getitem__(self, host: str) -> Mapping[str, str]:
        return self._data[host]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        shown = {host: sorted(headers) for host, headers in self._data.items()}
        return f"Credentials({shown} values=<redacted>)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Credentials) and self._data == other._data

    # Equal by value but mutable-looking: unhashable, as dict is (mypy wants a method here).
    __hash__ = None  # type: ignore[assignment]


def _as_credentials(value: object) -> Credentials:
    if isinstance(value, Credentials):
        return value
    if not isinstance(value, Mapping):
        raise ValueError("expected a table of host -> header -> value")
    return Credentials(value)


class SandboxConfig(SandboxSettings):
    """Everything the sandbox needs: the ``[sandbox]`` settings plus what the host adds.

    Every `SandboxSettings` field is here unchanged, so a new setting reaches the sandbox
    without further edits. Added are the host facts ``groups_dir`` (``global_dir`` is its
    ``global`` folder) and ``mount_allowlist_path`` (None: no extra mounts at all), and
    ``egress_credentials`` holds the resolved header values the proxy injects (a `Credentials`,
    whose repr never shows them) in place of the settings' variable names. The sandbox worker's
    entry point builds it with `from_settings`; tests construct it directly, validated like
    settings (a bad value raises `ConfigError` naming ``sandbox.<field>``).

    ``network_allowlists`` maps a group to its egress destinations (``"host:port"``,
    ``"host"`` = ports 80 and 443, ``"*.example.com:443"``, ``"host:*"``); a group without
    an entry has network mode ``none`` and no relay. ``egress_https_hosts`` are hosts the
    proxy reaches over TLS when the container speaks plain HTTP to it (see ``egress.py``).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    groups_dir: Path = Path("groups")
    mount_allowlist_path: Path | None = DEFAULT_MOUNT_ALLOWLIST_PATH
    egress_credentials: Annotated[Credentials, BeforeValidator(_as_credentials)] = Field(
        default_factory=Credentials
    )

    @classmethod
    def from_settings(
        cls,
        settings: SandboxSettings,
        *,
        groups_dir: Path,
        mount_allowlist_path: Path | None,
        credentials: Mapping[str, Mapping[str, str]],
    ) -> SandboxConfig:
        """``settings`` plus the host facts; ``credentials`` are resolved values (host -> header)."""
        host = {
            "groups_dir": groups_dir,
            "mount_allowlist_path": mount_allowlist_path,
            "egress_credentials": credentials,
        }
        return cls(**{**dict(settings), **host})

    @property
    def global_dir(self) -> Path:
        """The folder shared by every group (read-only but for the main group)."""
        return self.groups_dir / "global"


@dataclass(frozen=True)
class Mount:
    """One bind mount: a host real path at an absolute container path."""

    host_path: str
    container_path: str
    readonly: bool = True


@dataclass(frozen=True)
class ContainerSpec:
    """What a group's container must look like; built by the service, given to ``ensure``.

    ``egress_dir`` is a host directory holding the egress proxy's Unix socket
    (``proxy.sock``); None means no network at all.
    """

    group: str
    is_main: bool = False
    mounts: tuple[Mount, ...] = ()
    egress_dir: Path | None = None

    def digest(self, config: SandboxConfig) -> str:
        """A short hash of everything that needs a new container when it changes."""
        payload = {
            "image": config.image,
            "memory": config.memory_bytes,
            "cpus": config.cpus,
            "pids": config.pids_limit,
            "user": config.user,
            "tmpfs": config.tmpfs_size,
            "main": self.is_main,
            "mounts": [(m.host_path, m.container_path, m.readonly) for m in self.mounts],
            "egress": str(self.egress_dir) if self.egress_dir else None,
            "egress_port": config.egress_port,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ContainerHandle:
    """A running container of one group, as returned by ``ensure``."""

    group: str
    name: str
    id: str
    created: bool  # True when ensure() started it, False when a warm one was reused
    spec_digest: str = ""


@dataclass(frozen=True)
class ExecRequest:
    """One command to run in a group's container."""

    argv: tuple[str, ...]
    stdin: bytes = b""
    env: Mapping[str, str] = field(default_factory=dict)
    workdir: str = GROUP_MOUNT
    timeout_s: float = 120.0
    max_output: int = 1_000_000


@dataclass(frozen=True)
class ExecResult:
    """The outcome of one exec. ``stdout``/``stderr`` are capped; ``truncated`` says so."""

    exit_code: int
    stdout: bytes
    stderr: bytes
    truncated: bool
    duration_ms: int
    timed_out: bool
    stdout_bytes: int = 0  # total produced, before the cap
    stderr_bytes: int = 0

    @classmethod
    def from_response(cls, response: executor.Response) -> ExecResult:
        """The executor's answer (both backends run the same in-container executor)."""
        return cls(
            exit_code=response.exit_code,
            stdout=response.stdout,
            stderr=response.stderr,
            truncated=response.stdout_truncated or response.stderr_truncated,
            duration_ms=response.duration_ms,
            timed_out=response.timed_out,
            stdout_bytes=response.stdout_total,
            stderr_bytes=response.stderr_total,
        )

    @property
    def ok(self) -> bool:
        """True when the command exited 0 and did not time out."""
        return self.exit_code == 0 and not self.timed_out

    @property
    def stdout_text(self) -> str:
        """stdout decoded as UTF-8 (invalid bytes replaced)."""
        return self.stdout.decode("utf-8", "replace")

    @property
    def stderr_text(self) -> str:
        """stderr decoded as UTF-8 (invalid bytes replaced)."""
        return self.stderr.decode("utf-8", "replace")


class BaseSandboxBackend(abc.ABC):
    """One container runtime. Only the sandbox worker process ever holds one.

    Never touches the store, the queue or settings; never runs anything on the host. Every
    method raises only ``microclaw.errors`` types: ``SandboxUnavailable`` when the runtime
    cannot be used at all, ``TransientSandboxError`` for a retryable fault,
    ``PermanentSandboxError`` otherwise. Runtime exceptions never leak past a sibling.
    """

    name: ClassVar[str]

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config

    # -- required -------------------------------------------------------------------------

    @abc.abstractmethod
    def available(self) -> str | None:
        """Return None when containers can run now, else a human-readable reason.

        Called by the service before starting a container and by ``status``; cheap (one
        round trip) and never raises.
        """

    @abc.abstractmethod
    def ensure(self, spec: ContainerSpec) -> ContainerHandle:
        """Return the group's running container, starting or replacing it when needed.

        Called by the service before exec. A running container whose spec digest matches is
        reused (``created=False``); a stopped or mismatched one is removed and recreated.
        Guarantees on return: hardened (non-root, no capabilities, no-new-privileges,
        read-only root with tmpfs /tmp, memory/CPU/pids limits), only ``spec.mounts`` bind
        mounted, no network unless ``spec.egress_dir`` is set, ready for ``exec``.
        """

    @abc.abstractmethod
    def exec(self, handle: ContainerHandle, request: ExecRequest) -> ExecResult:
        """Run ``request.argv`` in the container and return its capped output.

        The timeout is enforced (the command's process group is killed and ``timed_out``
        is set); the command's own failures are an ``ExecResult``, not an exception.
        Raises ContainerGone when the container is not running and nothing ran (the caller
        may ensure again and retry), TransientSandboxError when it did not answer.
        """

    @abc.abstractmethod
    def stop(self, group: str) -> bool:
        """Stop and remove the group's container; True when one existed. Idempotent."""

    # -- optional hooks -------------------------------------------------------------------

    def cleanup_orphans(self) -> list[str]:
        """Remove every container of this instance (called once at worker boot); names."""
        return []

    def close(self) -> None:
        """Release client resources; containers keep running."""
        return None

    # -- shared machinery -----------------------------------------------------------------

    def container_name(self, group: str) -> str:
        """``<prefix>-<instance>-<group>``, after validating the group name."""
        validate_group_name(group)
        return f"{self.config.label_prefix}-{self.config.instance}-{group}"

    def labels(self, spec: ContainerSpec) -> dict[str, str]:
        """Labels put on every container so orphans can be found and matched."""
        p = self.config.label_prefix
        return {
            f"{p}.managed": "1",
            f"{p}.instance": self.config.instance,
            f"{p}.group": spec.group,
            f"{p}.main": "1" if spec.is_main else "0",
            f"{p}.spec": spec.digest(self.config),
        }

    def instance_filter(self) -> dict[str, str]:
        """The label selector matching exactly this instance's containers."""
        return {f"{self.config.label_prefix}.instance": self.config.instance}
