"""Fixtures for sandbox tests on the real Docker engine.

- ``sandbox_image``: builds ``microclaw-sandbox-test:latest`` offline with
  ``sandbox-image/build-test-image.sh`` once per session, serialized across pytest-xdist
  workers by a file lock (the script itself is idempotent, so later workers return at once).
- Docker missing: the test FAILS when ``CI`` is set, and is skipped otherwise.
- ``make_sandbox(**config)``: a ``SandboxService`` on a ``DockerBackend`` with a unique
  instance label, a short private run directory and an audit recorder; every container it
  started is removed at teardown, and a session finalizer removes anything labelled with this
  run's instance prefix that a crashed test left behind.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import pytest

from microclaw.sandbox.base import SandboxConfig
from microclaw.sandbox.docker import DockerBackend
from microclaw.sandbox.service import SandboxService

IMAGE = "microclaw-sandbox-test:latest"
REPO = Path(__file__).resolve().parents[3]
BUILD_SCRIPT = REPO / "sandbox-image" / "build-test-image.sh"
DOCKER_URL = "unix:///var/run/docker.sock"
RUN_ID = uuid.uuid4().hex[:8]


def _docker_client_or_skip() -> docker.DockerClient:
    try:
        client = docker.DockerClient(base_url=DOCKER_URL, timeout=20)
        client.ping()
        return client
    except Exception as exc:
        message = f"Docker engine not reachable at {DOCKER_URL}: {exc}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    client = _docker_client_or_skip()
    yield client
    # Safety net for tests that died before their own teardown.
    for container in client.containers.list(all=True, filters={"label": "microclaw.managed=1"}):
        if container.labels.get("microclaw.instance", "").startswith(f"t{RUN_ID}"):
            container.remove(force=True)
    client.close()


@pytest.fixture(scope="session")
def sandbox_image(docker_client: docker.DockerClient) -> str:
    lock_path = Path(tempfile.gettempdir()) / "microclaw-sandbox-test-image.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            done = subprocess.run(
                [str(BUILD_SCRIPT), IMAGE], capture_output=True, text=True, timeout=900, check=False
            )
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    if done.returncode != 0:
        pytest.fail(f"building {IMAGE} failed:\n{done.stdout}\n{done.stderr}")
    return IMAGE


@dataclass
class Sandbox:
    """One service under test plus what it audited."""

    service: SandboxService
    config: SandboxConfig
    root: Path
    events: list[tuple[str, str | None, dict[str, Any]]] = field(default_factory=list)

    def audited(self, kind: str) -> list[dict[str, Any]]:
        return [dict(data, group=group) for k, group, data in list(self.events) if k == kind]

    def container(self, client: docker.DockerClient, group: str):
        return client.containers.get(self.service.backend.container_name(group))


_counter = iter(range(1_000_000))


@pytest.fixture
def make_sandbox(sandbox_image: str, docker_client: docker.DockerClient) -> Iterator[Callable[..., Sandbox]]:
    made: list[Sandbox] = []

    def factory(**overrides: Any) -> Sandbox:
        root = Path(tempfile.mkdtemp(prefix="mc-", dir="/tmp"))  # short: Unix socket paths
        settings: dict[str, Any] = {
            "image": sandbox_image,
            "groups_dir": root / "groups",
            "run_dir": root / "run",
            "instance": f"t{RUN_ID}-{next(_counter)}",
            "memory": "128m",
            "cpus": 1.0,
            "pids_limit": 64,
            "exec_timeout_s": 30,
            "mount_allowlist_path": root / "no-allowlist.json",
            "docker_url": DOCKER_URL,
        }
        settings.update(overrides)
        config = SandboxConfig(**settings)
        lock = threading.Lock()
        sandbox = Sandbox(service=None, config=config, root=root)  # type: ignore[arg-type]

        def audit(kind: str, *, group: str | None, **data: Any) -> None:
            with lock:
                sandbox.events.append((kind, group, data))

        sandbox.service = SandboxService(DockerBackend(config), config, audit)
        made.append(sandbox)
        return sandbox

    yield factory
    for sandbox in made:
        try:
            sandbox.service.cleanup_orphans()
        finally:
            sandbox.service.close()
            shutil.rmtree(sandbox.root, ignore_errors=True)


class Upstream:
    """A fake upstream HTTP(S) server on the host that records what reaches it."""

    def __init__(self, host: str = "127.0.0.1", ssl_context=None) -> None:
        import http.server

        self.requests: list[dict[str, Any]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                outer.requests.append(
                    {"path": self.path, "headers": dict(self.headers.items()), "body": body}
                )
                payload = f"upstream says hi to {self.path}\n".encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_POST = do_TRACE = do_GET

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer((host, 0), Handler)
        if ssl_context is not None:
            self.server.socket = ssl_context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def upstream() -> Iterator[Callable[..., Upstream]]:
    servers: list[Upstream] = []

    def start(host: str = "127.0.0.1", ssl_context=None) -> Upstream:
        servers.append(Upstream(host, ssl_context))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for ``localhost`` and ``127.0.0.1`` (openssl CLI), as (cert, key)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not available")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key
