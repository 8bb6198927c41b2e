"""Docker backend: one hardened warm container per group, through the ``docker`` SDK.

Capability card
- Runtime: any Docker Engine API >= 1.41 reachable at ``config.docker_url`` (default the
  local Unix socket). The SDK is only imported when this backend is selected.
- Container: ``<prefix>-<instance>-<group>``, labelled (``<prefix>.managed/instance/group/
  main/spec``), main process = ``executor.py serve`` (bind-mounted read-only from this
  package) under docker-init. The image must provide ``python3`` (>= 3.8, stdlib only).
- Hardening, always: user from config (never root), ``cap_drop=ALL``,
  ``no-new-privileges``, read-only root, tmpfs ``/tmp``, memory (= memory+swap), CPU and
  pids limits, private IPC, network mode ``none``, RLIMIT_FSIZE = ``group_quota`` (no single
  file larger than the group quota); the engine socket can never be mounted.
- Exec transport: ``socket`` (host connects to the executor's Unix socket in a host
  directory mounted at ``/run/microclaw/exec``; ~2 ms overhead; the peer is verified to be a
  process of that container through SO_PEERCRED + /proc/<pid>/cgroup before anything is
  sent; the host-owned directory turns read-only for the container once the socket exists, so
  nothing else is ever written there) or ``docker`` (``docker exec executor.py once``; one
  runc exec, ~60 ms here). ``auto``
  uses the socket for a local engine and falls back to docker exec for a call whose socket
  cannot be used before anything was sent.
- Egress: none unless the spec has an ``egress_dir`` (see ``egress.py``).
- Errors: engine unreachable -> SandboxUnavailable; image missing -> SandboxUnavailable;
  API 5xx, timeouts, vanished containers -> TransientSandboxError; other API errors ->
  PermanentSandboxError. No docker/requests exception leaves this module.

Does not: pull or build images, create networks, decide mounts or egress, audit.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import socket
import struct
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests.exceptions
from docker.types import Mount as DockerMount
from docker.types import Ulimit

from microclaw.errors import PermanentSandboxError, SandboxUnavailable, TransientSandboxError
from microclaw.sandbox import executor
from microclaw.sandbox.base import (
    GROUP_MOUNT,
    BaseSandboxBackend,
    ContainerGone,
    ContainerHandle,
    ContainerSpec,
    ExecRequest,
    ExecResult,
    SandboxConfig,
)

logger = logging.getLogger(__name__)

EXECUTOR_SOURCE = Path(executor.__file__).resolve()
EXECUTOR_TARGET = "/opt/microclaw/executor.py"
EXEC_DIR_TARGET = "/run/microclaw/exec"
EGRESS_DIR_TARGET = "/run/microclaw/egress"
EXEC_SOCKET_NAME = "exec.sock"
EGRESS_SOCKET_NAME = "proxy.sock"
_RESPONSE_GRACE_S = 15.0


class _NotSent(Exception):
    """The exec socket could not be used; nothing reached the container."""


def exec_dir_for(config: SandboxConfig, name: str) -> Path:
    """The host directory holding a container's executor socket (short: socket path limit)."""
    key = hashlib.sha256(name.encode()).hexdigest()[:12]
    return config.run_dir.expanduser().absolute() / "x" / key


def proxy_env(port: int) -> dict[str, str]:
    """Proxy variables pointing every common client at the in-container relay."""
    url = f"http://127.0.0.1:{port}"
    env = {key: url for key in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")}
    env["NO_PROXY"] = env["no_proxy"] = "localhost,127.0.0.1"
    return env


def executor_command(spec: ContainerSpec, config: SandboxConfig) -> list[str]:
    """The container's main process: the executor, plus the egress relay when allowed."""
    cmd = ["python3", "-I", "-S", EXECUTOR_TARGET, "serve", f"{EXEC_DIR_TARGET}/{EXEC_SOCKET_NAME}"]
    if spec.egress_dir is not None:
        cmd += [f"127.0.0.1:{config.egress_port}", f"{EGRESS_DIR_TARGET}/{EGRESS_SOCKET_NAME}"]
    return cmd


def create_kwargs(
    config: SandboxConfig, spec: ContainerSpec, name: str, labels: dict[str, str], exec_dir: Path
) -> dict[str, Any]:
    """Keyword arguments for ``containers.run``: every hardening flag lives here (pure)."""
    mounts = [
        DockerMount(target=m.container_path, source=m.host_path, type="bind", read_only=m.readonly)
        for m in spec.mounts
    ]
    mounts.append(
        DockerMount(target=EXECUTOR_TARGET, source=str(EXECUTOR_SOURCE), type="bind", read_only=True)
    )
    mounts.append(DockerMount(target=EXEC_DIR_TARGET, source=str(exec_dir), type="bind", read_only=False))
    env = {"HOME": "/tmp", "TMPDIR": "/tmp", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}
    if spec.egress_dir is not None:
        mounts.append(
            DockerMount(target=EGRESS_DIR_TARGET, source=str(spec.egress_dir), type="bind", read_only=True)
        )
        env.update(proxy_env(config.egress_port))
    memory = config.memory_bytes
    return {
        "image": config.image,
        "command": executor_command(spec, config),
        "name": name,
        "labels": labels,
        "detach": True,
        "user": config.user,
        "working_dir": GROUP_MOUNT,
        "hostname": "sandbox",
        "environment": env,
        "mounts": mounts,
        "network_mode": "none",
        "read_only": True,
        "tmpfs": {"/tmp": f"rw,nosuid,nodev,size={config.tmpfs_size},mode=1777"},
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
        "privileged": False,
        "ipc_mode": "private",
        "init": True,
        "mem_limit": memory,
        "memswap_limit": memory,
        "nano_cpus": int(config.cpus * 1e9),
        "pids_limit": config.pids_limit,
        # No process writes a single file larger than the group quota, anywhere (the group
        # folder is a bind mount: Docker has no size limit for it without XFS project quotas).
        "ulimits": [Ulimit(name="fsize", soft=config.group_quota_bytes, hard=config.group_quota_bytes)],
    }


def engine_socket_path(docker_url: str) -> str | None:
    """The engine's Unix socket path for a ``unix://`` URL, else None."""
    if docker_url.startswith("unix://"):
        return docker_url[len("unix://") :] or None
    return None


@contextlib.contextmanager
def _translated(url: str, group: str | None) -> Iterator[None]:
    """Turn docker/requests exceptions into ours, at this edge only."""
    try:
        yield
    except docker.errors.ImageNotFound as exc:
        raise SandboxUnavailable(f"image not found: {exc.explanation or exc}", group=group) from exc
    except docker.errors.NotFound as exc:
        raise TransientSandboxError(f"container vanished: {exc.explanation or exc}", group=group) from exc
    except docker.errors.APIError as exc:
        if exc.is_server_error():
            raise TransientSandboxError(
                f"docker engine error: {exc.explanation or exc}", group=group
            ) from exc
        raise PermanentSandboxError(f"docker refused: {exc.explanation or exc}", group=group) from exc
    except requests.exceptions.ConnectionError as exc:
        raise SandboxUnavailable(f"docker engine unreachable at {url}", group=group) from exc
    except requests.exceptions.Timeout as exc:
        raise TransientSandboxError(f"docker engine timed out at {url}", group=group) from exc
    except docker.errors.DockerException as exc:
        raise SandboxUnavailable(f"docker engine unusable at {url}: {exc}", group=group) from exc


def _remove_private_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.chmod(path, 0o700)  # locked read-only by _lock_exec_dir; we own it
    shutil.rmtree(path, ignore_errors=True)


def _prepare_private_dir(path: Path, uid: int) -> None:
    """A fresh directory the container user can write (until `_lock_exec_dir`), owned by us.

    It stays owned by the host user, never by the container's, so that after the executor
    has created its socket the container can no longer write there (no disk quota exists for
    a bind mount). Other host users cannot reach it through the 0700 run_dir.
    """
    _remove_private_dir(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent.parent, 0o700)  # run_dir: the host-side guard
    path.mkdir(mode=0o700)
    if os.geteuid() != uid:
        os.chmod(path, 0o777)


def _lock_exec_dir(path: Path, uid: int) -> None:
    """Once the executor's socket exists: read-only for the container (it is not the owner).

    When the host user *is* the container's uid this cannot be enforced (the container could
    chmod it back); run the sandbox as another uid (docs/security.md, "The sandbox").
    """
    if os.geteuid() == uid:
        logger.warning("sandbox user has the host's uid %d: its exec folder cannot be locked", uid)
        return
    os.chmod(path, 0o555)


class DockerBackend(BaseSandboxBackend):
    """See the module docstring."""

    name = "docker"

    def __init__(self, config: SandboxConfig, *, client: docker.DockerClient | None = None) -> None:
        super().__init__(config)
        self._client = client
        local = engine_socket_path(config.docker_url) is not None and sys.platform.startswith("linux")
        if config.exec_transport == "socket" and not local:
            logger.warning("exec_transport=socket needs a local engine on Linux; using docker exec")
        self._local = local
        self._use_socket = local and config.exec_transport in ("auto", "socket")

    # -- client ---------------------------------------------------------------------------

    def client(self) -> docker.DockerClient:
        """The SDK client, created on first use (raises SandboxUnavailable when unreachable)."""
        if self._client is None:
            try:
                # Asks the engine for its API version: the first contact, so the usual failure.
                self._client = docker.DockerClient(
                    base_url=self.config.docker_url, timeout=int(self.config.api_timeout_s)
                )
            except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
                cause = exc.__cause__ or exc.__context__ or exc
                raise SandboxUnavailable(
                    f"docker engine unreachable at {self.config.docker_url} ({type(cause).__name__})"
                ) from exc
        return self._client

    def close(self) -> None:
        """Close the SDK client's connection pool."""
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None

    # -- contract -------------------------------------------------------------------------

    def available(self) -> str | None:
        """None when the engine answers and the image exists, else why not."""
        try:
            client = self.client()
            with _translated(self.config.docker_url, None):
                client.ping()
                client.images.get(self.config.image)
        except SandboxUnavailable as exc:
            return exc.reason
        except Exception as exc:  # available() never raises, by contract
            return f"docker engine check failed: {exc}"
        return None

    def ensure(self, spec: ContainerSpec) -> ContainerHandle:
        """See ``BaseSandboxBackend.ensure``."""
        name = self.container_name(spec.group)
        labels = self.labels(spec)
        digest = labels[f"{self.config.label_prefix}.spec"]
        self._refuse_engine_socket(spec)
        exec_dir = exec_dir_for(self.config, name)
        client = self.client()
        with _translated(self.config.docker_url, spec.group):
            for attempt in range(2):
                existing = self._get(client, name)
                if existing is not None:
                    if (
                        existing.status == "running"
                        and existing.labels.get(f"{self.config.label_prefix}.spec") == digest
                        and (not self._use_socket or (exec_dir / EXEC_SOCKET_NAME).exists())
                    ):
                        return ContainerHandle(spec.group, name, existing.id, False, digest)
                    logger.info(
                        "replacing container %s (%s)", name, existing.status, extra={"group": spec.group}
                    )
                    with contextlib.suppress(docker.errors.NotFound):
                        existing.remove(force=True)
                _prepare_private_dir(exec_dir, self.config.uid_gid[0])
                try:
                    container = client.containers.run(
                        **create_kwargs(self.config, spec, name, labels, exec_dir)
                    )
                except docker.errors.APIError as exc:
                    if exc.status_code == 409 and attempt == 0:  # another process raced us
                        continue
                    raise
                self._wait_ready(container, exec_dir, spec.group)
                logger.info("started container %s", name, extra={"group": spec.group})
                return ContainerHandle(spec.group, name, container.id, True, digest)
        raise TransientSandboxError(f"could not start container {name}", group=spec.group)

    def exec(self, handle: ContainerHandle, request: ExecRequest) -> ExecResult:
        """See ``BaseSandboxBackend.exec``."""
        frame = executor.encode_request(
            executor.Request(
                argv=list(request.argv),
                env=dict(request.env),
                cwd=request.workdir,
                timeout_ms=int(request.timeout_s * 1000),
                max_output=request.max_output,
                stdin=request.stdin,
            )
        )
        deadline = time.monotonic() + request.timeout_s + _RESPONSE_GRACE_S
        response = None
        if self._use_socket:
            try:
                response = self._exec_socket(handle, frame, deadline, request.max_output)
            except _NotSent as exc:
                logger.warning("exec socket of %s unusable (%s); using docker exec", handle.name, exc)
        if response is None:
            response = self._exec_docker(handle, frame, deadline, request.max_output)
        return ExecResult.from_response(response)

    def stop(self, group: str) -> bool:
        """See ``BaseSandboxBackend.stop``."""
        name = self.container_name(group)
        client = self.client()
        with _translated(self.config.docker_url, group):
            existing = self._get(client, name)
            if existing is not None:
                with contextlib.suppress(docker.errors.NotFound):
                    existing.remove(force=True)
        _remove_private_dir(exec_dir_for(self.config, name))
        return existing is not None

    def cleanup_orphans(self) -> list[str]:
        """Remove every container labelled with this instance (any state); their names."""
        client = self.client()
        removed: list[str] = []
        with _translated(self.config.docker_url, None):
            filters = {"label": [f"{k}={v}" for k, v in self.instance_filter().items()]}
            for container in client.containers.list(all=True, filters=filters):
                with contextlib.suppress(docker.errors.NotFound):
                    container.remove(force=True)
                removed.append(container.name)
                _remove_private_dir(exec_dir_for(self.config, container.name))
        return removed

    # -- helpers --------------------------------------------------------------------------

    @staticmethod
    def _get(client: docker.DockerClient, name: str):
        try:
            return client.containers.get(name)
        except docker.errors.NotFound:
            return None

    def _refuse_engine_socket(self, spec: ContainerSpec) -> None:
        candidates = {"/var/run/docker.sock", "/run/docker.sock"}
        engine = engine_socket_path(self.config.docker_url)
        if engine:
            candidates.add(engine)
        reals = {os.path.realpath(c) for c in candidates} | candidates
        for mount in spec.mounts:
            host = os.path.realpath(mount.host_path)
            for sock in reals:
                if sock == host or sock.startswith(host.rstrip("/") + "/"):
                    raise PermanentSandboxError(
                        f"refusing to mount {mount.host_path}: it exposes the container engine socket",
                        group=spec.group,
                    )

    def _wait_ready(self, container, exec_dir: Path, group: str) -> None:
        sock_path = exec_dir / EXEC_SOCKET_NAME
        deadline = time.monotonic() + self.config.start_timeout_s
        next_check = 0.0
        while True:
            now = time.monotonic()
            if self._local and sock_path.exists():
                # The socket is there: nothing else may ever be written to this host folder.
                _lock_exec_dir(exec_dir, self.config.uid_gid[0])
                return
            if now >= next_check:
                container.reload()
                if container.status not in ("created", "running"):
                    logs = container.logs(tail=20).decode("utf-8", "replace").strip()
                    with contextlib.suppress(Exception):
                        container.remove(force=True)
                    raise PermanentSandboxError(
                        f"container exited while starting (does the image have python3?): {logs}", group=group
                    )
                if not self._local and container.status == "running":
                    return  # a remote engine: the socket folder is not on this machine
                next_check = now + 0.1
            if now >= deadline:
                with contextlib.suppress(Exception):
                    container.remove(force=True)
                raise TransientSandboxError("container did not become ready in time", group=group)
            time.sleep(0.003)

    def _exec_socket(self, handle: ContainerHandle, frame: bytes, deadline: float, cap: int):
        path = exec_dir_for(self.config, handle.name) / EXEC_SOCKET_NAME
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(5)
            try:
                sock.connect(str(path))
                pid, _uid, _gid = struct.unpack(
                    "3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
                )
                cgroup = Path(f"/proc/{pid}/cgroup").read_text()
            except OSError as exc:
                raise _NotSent(str(exc)) from exc
            if handle.id not in cgroup:
                # Something inside the container swapped the socket for a link to a host socket.
                raise _NotSent("peer is not a process of this container")
            try:
                sock.sendall(frame)
                sock.settimeout(max(0.1, deadline - time.monotonic()))
                return executor.read_response(executor.socket_reader(sock), cap)
            except TimeoutError as exc:
                raise TransientSandboxError("exec did not answer in time", group=handle.group) from exc
            except (OSError, executor.ProtocolError, struct.error) as exc:
                raise TransientSandboxError(f"exec connection failed: {exc}", group=handle.group) from exc
        finally:
            sock.close()

    def _exec_create(self, api, handle: ContainerHandle) -> str:
        try:
            return api.exec_create(
                handle.id,
                ["python3", "-I", "-S", EXECUTOR_TARGET, "once"],
                stdin=True,
                stdout=True,
                stderr=True,
                user=self.config.user,
                workdir="/",
            )["Id"]
        except docker.errors.NotFound as exc:
            raise ContainerGone(f"container {handle.name} is gone", group=handle.group) from exc
        except docker.errors.APIError as exc:
            if exc.status_code == 409:  # "container ... is not running"
                raise ContainerGone(f"container {handle.name} is not running", group=handle.group) from exc
            raise

    def _exec_docker(self, handle: ContainerHandle, frame: bytes, deadline: float, cap: int):
        api = self.client().api
        with _translated(self.config.docker_url, handle.group):
            exec_id = self._exec_create(api, handle)
            raw_sock = api.exec_start(exec_id, socket=True)
        sock = getattr(raw_sock, "_sock", raw_sock)
        limit = 2 * cap + (1 << 20)
        out = bytearray()
        err = bytearray()
        try:
            sock.sendall(frame)
            sock.shutdown(socket.SHUT_WR)
            buf = bytearray()
            while True:
                sock.settimeout(max(0.1, deadline - time.monotonic()))
                chunk = sock.recv(65536)
                if not chunk:
                    break
                buf += chunk
                while len(buf) >= 8:  # docker's multiplexed stream: 8-byte frame headers
                    kind, size = buf[0], struct.unpack(">I", bytes(buf[4:8]))[0]
                    if len(buf) < 8 + size:
                        break
                    (out if kind == 1 else err).extend(buf[8 : 8 + size])
                    del buf[: 8 + size]
                if len(out) > limit:
                    raise TransientSandboxError("executor answered more than the cap", group=handle.group)
        except TimeoutError as exc:
            raise TransientSandboxError("exec did not answer in time", group=handle.group) from exc
        except OSError as exc:
            raise TransientSandboxError(f"exec stream failed: {exc}", group=handle.group) from exc
        finally:
            sock.close()
        view = memoryview(bytes(out))
        pos = 0

        def read_exact(n: int) -> bytes:
            nonlocal pos
            if pos + n > len(view):
                raise executor.ProtocolError("short response")
            pos += n
            return bytes(view[pos - n : pos])

        try:
            return executor.read_response(read_exact, cap)
        except (executor.ProtocolError, struct.error) as exc:
            detail = err.decode("utf-8", "replace").strip()[:500]
            raise PermanentSandboxError(f"executor failed: {detail or exc}", group=handle.group) from exc
