"""Apple Container backend: one VM-isolated container per group, through Apple's ``container`` CLI.

Capability card
- Runtime: macOS 26+ on Apple silicon with ``container system start`` done; the CLI path is
  ``config.apple_cli``. ``available()`` says ``not macOS`` anywhere else, so on Linux this
  backend can never run anything (and nothing falls back to the host).
- Container: same name and labels as the Docker backend; each container is its own
  lightweight VM (Virtualization.framework). Flags: ``--network none``, ``--cap-drop ALL``,
  non-root ``--user``, ``--cpus``, ``--memory``, ``--init``, ``--tmpfs /tmp``, bind mounts via
  ``--mount type=bind,...[,readonly]``. The CLI reference consulted documents no read-only
  root or no-new-privileges flag; the VM boundary stands in for them.
- Exec: ``container exec -i NAME python3 -I -S /opt/microclaw/executor.py once`` with the
  executor's request frame on stdin (the executor directory of this package is mounted
  read-only), so timeouts, the kill of a timed-out command's whole process tree and output
  caps are enforced inside the container exactly as with Docker. The image must provide
  ``python3``. ``group_quota`` is enforced by ``write_file`` only: no RLIMIT_FSIZE flag is
  documented for this CLI.
- Egress: not supported. A group with an egress allowlist is refused with
  PermanentSandboxError (fail closed); everything else runs with ``--network none``.
- JSON from ``container list --format json`` is parsed defensively (``configuration.id``,
  ``configuration.labels``, ``status``); this module is verified here only through its
  command lines, because Apple Container cannot run on Linux.

Every command line is built by a pure function (``run_argv``, ``exec_argv``, ...), unit-tested
without macOS; the ``runner`` that executes them is injected.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

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

EXECUTOR_DIR_SOURCE = Path(executor.__file__).resolve().parent
EXECUTOR_DIR_TARGET = "/opt/microclaw"
EXECUTOR_PATH = f"{EXECUTOR_DIR_TARGET}/{Path(executor.__file__).name}"
_GRACE_S = 15.0

Runner = Callable[[list[str], bytes | None, float], subprocess.CompletedProcess]


def _run_subprocess(argv: list[str], stdin: bytes | None, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(argv, input=stdin, capture_output=True, timeout=timeout, check=False)


def _mount_arg(source: str, target: str, readonly: bool) -> str:
    for value in (source, target):
        if "," in value or "=" in value:
            raise PermanentSandboxError(f"path {value!r} cannot be expressed as a --mount option")
    return f"type=bind,source={source},target={target}" + (",readonly" if readonly else "")


def run_argv(config: SandboxConfig, spec: ContainerSpec, name: str, labels: dict[str, str]) -> list[str]:
    """``container run`` for a group's warm container (pure)."""
    if spec.egress_dir is not None:
        raise PermanentSandboxError("the apple backend cannot enforce an egress allowlist", group=spec.group)
    argv = [config.apple_cli, "run", "--detach", "--name", name]
    for key, value in sorted(labels.items()):
        argv += ["--label", f"{key}={value}"]
    argv += [
        "--user",
        config.user,
        "--cpus",
        str(max(1, round(config.cpus))),
        "--memory",
        f"{max(1, config.memory_bytes // (1024 * 1024))}M",
        "--cap-drop",
        "ALL",
        "--init",
        "--network",
        "none",
        "--tmpfs",
        "/tmp",
        "--workdir",
        GROUP_MOUNT,
        "--env",
        "HOME=/tmp",
        "--env",
        "TMPDIR=/tmp",
        "--mount",
        _mount_arg(str(EXECUTOR_DIR_SOURCE), EXECUTOR_DIR_TARGET, True),
    ]
    for mount in spec.mounts:
        argv += ["--mount", _mount_arg(mount.host_path, mount.container_path, mount.readonly)]
    argv += [config.image, "python3", "-I", "-S", EXECUTOR_PATH, "serve", "/tmp/.microclaw-exec.sock"]
    return argv


def exec_argv(config: SandboxConfig, name: str) -> list[str]:
    """``container exec`` running the executor once; the request frame goes on stdin (pure)."""
    return [
        config.apple_cli,
        "exec",
        "--interactive",
        "--user",
        config.user,
        "--workdir",
        "/",
        name,
        "python3",
        "-I",
        "-S",
        EXECUTOR_PATH,
        "once",
    ]


def delete_argv(config: SandboxConfig, name: str) -> list[str]:
    """``container delete --force NAME`` (pure)."""
    return [config.apple_cli, "delete", "--force", name]


def list_argv(config: SandboxConfig) -> list[str]:
    """``container list --all --format json`` (pure)."""
    return [config.apple_cli, "list", "--all", "--format", "json"]


def status_argv(config: SandboxConfig) -> list[str]:
    """``container system status`` (pure)."""
    return [config.apple_cli, "system", "status"]


def parse_containers(raw: bytes) -> list[dict[str, Any]]:
    """``[{"name", "status", "labels"}]`` from ``container list --format json`` output."""
    try:
        items = json.loads(raw.decode("utf-8") or "[]")
    except (UnicodeDecodeError, ValueError) as exc:
        raise TransientSandboxError(f"unreadable container list: {exc}") from exc
    out = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        raw_conf = item.get("configuration")
        conf = raw_conf if isinstance(raw_conf, dict) else {}
        name = conf.get("id") or item.get("id") or item.get("name")
        labels = conf.get("labels") or item.get("labels") or {}
        if isinstance(name, str):
            out.append({"name": name, "status": str(item.get("status", "")), "labels": dict(labels)})
    return out


class AppleContainerBackend(BaseSandboxBackend):
    """See the module docstring."""

    name = "apple"

    def __init__(
        self, config: SandboxConfig, *, runner: Runner | None = None, platform: str | None = None
    ) -> None:
        super().__init__(config)
        self._runner = runner or _run_subprocess
        self._platform = platform or sys.platform

    def _cli(self, argv: list[str], stdin: bytes | None = None, timeout: float = 60.0):
        try:
            return self._runner(argv, stdin, timeout)
        except FileNotFoundError as exc:
            raise SandboxUnavailable(f"{self.config.apple_cli} CLI not found") from exc
        except subprocess.TimeoutExpired as exc:
            raise TransientSandboxError(f"{argv[1]} timed out") from exc
        except OSError as exc:
            raise SandboxUnavailable(f"cannot run {self.config.apple_cli}: {exc}") from exc

    def available(self) -> str | None:
        """``not macOS`` off macOS; otherwise the CLI must exist and its system be running."""
        if self._platform != "darwin":
            return "not macOS: Apple Container runs only on macOS"
        if self._runner is _run_subprocess and shutil.which(self.config.apple_cli) is None:
            return f"{self.config.apple_cli} CLI not found"
        try:
            done = self._cli(status_argv(self.config), timeout=10)
        except (SandboxUnavailable, TransientSandboxError) as exc:
            return str(exc)
        if done.returncode != 0:
            return "container system is not running (run: container system start)"
        return None

    def _find(self, name: str) -> dict[str, Any] | None:
        done = self._cli(list_argv(self.config))
        if done.returncode != 0:
            detail = done.stderr.decode("utf-8", "replace")[:300]
            raise TransientSandboxError(f"container list failed: {detail}")
        for item in parse_containers(done.stdout):
            if item["name"] == name:
                return item
        return None

    def ensure(self, spec: ContainerSpec) -> ContainerHandle:
        """See ``BaseSandboxBackend.ensure``."""
        reason = self.available()
        if reason is not None:
            raise SandboxUnavailable(reason, group=spec.group)
        name = self.container_name(spec.group)
        labels = self.labels(spec)
        digest = labels[f"{self.config.label_prefix}.spec"]
        argv = run_argv(self.config, spec, name, labels)  # refuses egress before touching anything
        existing = self._find(name)
        if existing is not None:
            current = existing["labels"].get(f"{self.config.label_prefix}.spec")
            if existing["status"] == "running" and current == digest:
                return ContainerHandle(spec.group, name, name, False, digest)
            self._cli(delete_argv(self.config, name))
        done = self._cli(argv, timeout=self.config.start_timeout_s + 60)
        if done.returncode != 0:
            detail = done.stderr.decode("utf-8", "replace").strip()[:500]
            raise PermanentSandboxError(f"container run failed: {detail}", group=spec.group)
        return ContainerHandle(spec.group, name, name, True, digest)

    def exec(self, handle: ContainerHandle, request: ExecRequest) -> ExecResult:
        """See ``BaseSandboxBackend.exec``."""
        frame = executor.encode_request(
            executor.Request(
                list(request.argv),
                dict(request.env),
                request.workdir,
                int(request.timeout_s * 1000),
                request.max_output,
                request.stdin,
            )
        )
        done = self._cli(exec_argv(self.config, handle.name), frame, request.timeout_s + _GRACE_S)
        pos = 0

        def read_exact(n: int) -> bytes:
            nonlocal pos
            if pos + n > len(done.stdout):
                raise executor.ProtocolError("short response")
            pos += n
            return done.stdout[pos - n : pos]

        try:
            res = executor.read_response(read_exact, request.max_output)
        except (executor.ProtocolError, ValueError) as exc:
            detail = done.stderr.decode("utf-8", "replace").strip()[:500]
            if "not running" in detail or "not found" in detail:
                raise ContainerGone(f"container {handle.name} is not running", group=handle.group) from exc
            raise PermanentSandboxError(f"executor failed: {detail or exc}", group=handle.group) from exc
        return ExecResult.from_response(res)

    def stop(self, group: str) -> bool:
        """See ``BaseSandboxBackend.stop``."""
        if self._platform != "darwin":
            return False
        return self._cli(delete_argv(self.config, self.container_name(group))).returncode == 0

    def cleanup_orphans(self) -> list[str]:
        """Delete every container labelled with this instance."""
        if self._platform != "darwin":
            return []
        done = self._cli(list_argv(self.config))
        if done.returncode != 0:
            return []
        key, value = next(iter(self.instance_filter().items()))
        removed = []
        for item in parse_containers(done.stdout):
            if item["labels"].get(key) == value:
                self._cli(delete_argv(self.config, item["name"]))
                removed.append(item["name"])
        return removed
