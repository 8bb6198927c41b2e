"""The sandbox backend interface, its configuration and the data it exchanges.

Owns: ``SandboxConfig`` (the frozen settings slice every sandbox part receives),
``ContainerSpec`` / ``ContainerHandle`` / ``ExecRequest`` / ``ExecResult``, the
``BaseSandboxBackend`` contract, and machinery shared by every backend: container-name
validation, labels, the spec digest that tells a warm container from a stale one.

Does not: talk to any container runtime (siblings ``docker.py`` and ``apple.py`` do), decide
mounts (``mounts.py``) or egress (``egress.py``), or read settings (the entry point builds a
``SandboxConfig`` and passes it in).
"""

from __future__ import annotations

import abc
import hashlib
import json
import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, ClassVar

from microclaw.core.groups import is_valid_group_folder
from microclaw.errors import ConfigError, TransientSandboxError

if TYPE_CHECKING:
    from microclaw.sandbox import executor

logger = logging.getLogger(__name__)

_INSTANCE_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
_PREFIX_RE = re.compile(r"^[a-z][a-z0-9-]{0,19}$")
_MEMORY_RE = re.compile(r"^(\d+)([kmg]?)b?$", re.IGNORECASE)

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


def parse_memory(value: str | int) -> int:
    """``"512m"`` -> bytes. Accepts ints (bytes) and k/m/g suffixes (powers of 1024)."""
    if isinstance(value, int):
        return value
    match = _MEMORY_RE.fullmatch(value.strip())
    if not match:
        raise ConfigError(f"invalid memory size {value!r}", key="sandbox.memory")
    number, unit = int(match.group(1)), match.group(2).lower()
    return number * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit]


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

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True)
class SandboxConfig:
    """Everything the sandbox needs, built once by the entry point from settings.

    ``network_allowlists`` maps a group to its egress destinations (``"host:port"``,
    ``"host"`` = ports 80 and 443, ``"*.example.com:443"``, ``"host:*"``); a group without
    an entry has network mode ``none`` and no relay. ``egress_credentials`` maps an upstream
    host to headers the proxy adds (see ``egress.py``); ``egress_https_hosts`` are hosts the
    proxy reaches over TLS when the container speaks plain HTTP to it.
    """

    image: str = "microclaw-sandbox:latest"
    memory: str = "512m"
    cpus: float = 1.0
    pids_limit: int = 256
    idle_timeout_s: float = 1800.0
    exec_timeout_s: float = 120.0
    max_exec_timeout_s: float = 3600.0
    max_output_bytes: int = 1_000_000
    max_file_bytes: int = 10 * 1024 * 1024
    groups_dir: Path = Path("groups")
    global_dir: Path | None = None  # default: groups_dir / "global"
    run_dir: Path = Path("data/sandbox")  # host-side sockets; keep the path short (< 80 chars)
    mount_allowlist_path: Path | None = DEFAULT_MOUNT_ALLOWLIST_PATH
    network_allowlists: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    egress_credentials: Credentials = field(default_factory=Credentials)
    egress_https_hosts: frozenset[str] = frozenset()
    egress_ca_file: Path | None = None
    egress_connect_timeout_s: float = 10.0
    egress_port: int = 3128
    label_prefix: str = "microclaw"
    instance: str = "default"
    user: str = "1000:1000"
    tmpfs_size: str = "64m"
    docker_url: str = "unix:///var/run/docker.sock"
    exec_transport: str = "auto"  # "auto" (socket when local), "socket", "docker"
    start_timeout_s: float = 30.0
    api_timeout_s: float = 30.0
    apple_cli: str = "container"

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "groups_dir", Path(self.groups_dir))
        set_(self, "run_dir", Path(self.run_dir))
        if self.global_dir is None:
            set_(self, "global_dir", self.groups_dir / "global")
        else:
            set_(self, "global_dir", Path(self.global_dir))
        if not isinstance(self.egress_credentials, Credentials):
            set_(self, "egress_credentials", Credentials(self.egress_credentials))
        set_(
            self,
            "network_allowlists",
            MappingProxyType({g: tuple(v) for g, v in dict(self.network_allowlists).items()}),
        )
        set_(self, "egress_https_hosts", frozenset(h.lower().rstrip(".") for h in self.egress_https_hosts))
        if not _PREFIX_RE.fullmatch(self.label_prefix):
            raise ConfigError(f"invalid label prefix {self.label_prefix!r}", key="sandbox.label_prefix")
        if not _INSTANCE_RE.fullmatch(self.instance):
            raise ConfigError(f"invalid instance name {self.instance!r}", key="sandbox.instance")
        if self.exec_transport not in ("auto", "socket", "docker"):
            raise ConfigError("exec_transport must be auto, socket or docker", key="sandbox.exec_transport")
        for key in ("cpus", "pids_limit", "exec_timeout_s", "max_output_bytes", "max_file_bytes"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"sandbox.{key} must be positive", key=f"sandbox.{key}")
        parse_memory(self.memory)
        if ":" not in self.user or self.user.split(":", 1)[0] in ("0", "root"):
            raise ConfigError("sandbox.user must be a non-root uid:gid", key="sandbox.user")
        if len(str(self.run_dir.expanduser().absolute())) > 80:
            raise ConfigError("sandbox.run_dir is too long for Unix socket paths", key="sandbox.run_dir")

    @property
    def memory_bytes(self) -> int:
        """The memory limit in bytes."""
        return parse_memory(self.memory)

    @property
    def uid_gid(self) -> tuple[int, int]:
        """The numeric container user."""
        uid, gid = self.user.split(":", 1)
        return int(uid), int(gid)


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
