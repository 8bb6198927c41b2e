"""The sandbox: container backends, mount policy and egress control for agent tools.

Layout: ``base`` (interface, config, data), ``docker`` / ``apple`` (backends), ``mounts``
(mount allowlist policy), ``egress`` (deny-by-default proxy), ``executor`` (runs inside the
container), ``service`` (what the ``microclaw.sandbox`` Celery tasks call).

``BACKENDS`` maps a setting value to ``"module:Class"``; a backend's module (and its SDK) is
imported only when that backend is loaded.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from microclaw.registry import load_class

if TYPE_CHECKING:
    from microclaw.sandbox.base import BaseSandboxBackend, SandboxConfig

BACKENDS: dict[str, str] = {
    "docker": "microclaw.sandbox.docker:DockerBackend",
    "apple": "microclaw.sandbox.apple:AppleContainerBackend",
}


def resolve_backend_name(name: str, platform: str | None = None) -> str:
    """``auto`` -> ``apple`` on macOS, ``docker`` elsewhere; other names pass through."""
    if name == "auto":
        return "apple" if (platform or sys.platform) == "darwin" else "docker"
    return name


def load_backend(name: str, config: SandboxConfig) -> BaseSandboxBackend:
    """Instantiate the backend registered as ``name`` (or ``auto``) with ``config``.

    Raises ConfigError listing the known names when ``name`` is unknown.
    """
    cls = load_class(BACKENDS, resolve_backend_name(name), "sandbox.backend", aliases=("auto",))
    return cls(config)
