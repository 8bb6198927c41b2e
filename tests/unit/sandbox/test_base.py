"""microclaw.sandbox.base and the backend registry in microclaw.sandbox."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from microclaw.errors import ConfigError
from microclaw.sandbox import BACKENDS, load_backend, resolve_backend_name
from microclaw.sandbox.apple import AppleContainerBackend
from microclaw.sandbox.base import (
    BaseSandboxBackend,
    ContainerSpec,
    Credentials,
    Mount,
    SandboxConfig,
    validate_group_name,
)


def test_defaults() -> None:
    config = SandboxConfig()
    assert config.idle_timeout_s == 1800
    assert config.global_dir == Path("groups") / "global"
    assert config.uid_gid == (1000, 1000)
    assert config.memory_bytes == 512 * 1024**2


def test_credentials_never_show_in_repr() -> None:
    config = SandboxConfig(egress_credentials={"API.example.com.": {"Authorization": "Bearer s3cr3t-value"}})
    for text in (repr(config), str(config), repr(config.egress_credentials), str(config.egress_credentials)):
        assert "s3cr3t-value" not in text
    assert "api.example.com" in repr(config)  # hosts and header names are fine to show
    assert config.egress_credentials["api.example.com"]["Authorization"] == "Bearer s3cr3t-value"
    assert isinstance(config.egress_credentials, Credentials)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"label_prefix": "Bad.Prefix"}, "sandbox.label_prefix"),
        ({"instance": "UPPER"}, "sandbox.instance"),
        ({"exec_transport": "ssh"}, "sandbox.exec_transport"),
        ({"cpus": 0}, "sandbox.cpus"),
        ({"pids_limit": -1}, "sandbox.pids_limit"),
        ({"memory": "lots"}, "sandbox.memory"),
        ({"user": "0:0"}, "sandbox.user"),
        ({"user": "root:root"}, "sandbox.user"),
        ({"user": "1000"}, "sandbox.user"),
        ({"memroy": "1g"}, "sandbox.memroy"),  # a typo is refused, not ignored
        ({"run_dir": Path("/" + "x" * 100)}, "sandbox.run_dir"),
    ],
)
def test_invalid_settings_name_their_key(overrides: dict, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        SandboxConfig(**overrides)
    assert info.value.key == key


@pytest.mark.parametrize("group", ["main", "telegram_dev-team", "A", "a" * 64])
def test_valid_group_names(group: str) -> None:
    assert validate_group_name(group) == group


@pytest.mark.parametrize("group", ["", "global", "Global", "a/b", "..", "-x", "a" * 65, "a b", "x:y"])
def test_invalid_group_names(group: str) -> None:
    with pytest.raises(ValueError):
        validate_group_name(group)


def test_spec_digest_tracks_what_needs_a_new_container() -> None:
    config = SandboxConfig()
    base = ContainerSpec("g", False, (Mount("/h", "/workspace/group", False),))
    assert base.digest(config) == ContainerSpec("g", False, (Mount("/h", "/workspace/group", False),)).digest(
        config
    )
    assert base.digest(config) != ContainerSpec("g", True, base.mounts).digest(config)
    assert base.digest(config) != ContainerSpec("g", False, (Mount("/h", "/workspace/group", True),)).digest(
        config
    )
    assert base.digest(config) != ContainerSpec("g", False, base.mounts, Path("/run/e")).digest(config)
    assert base.digest(config) != base.digest(SandboxConfig(memory="1g"))


class _Recording(BaseSandboxBackend):
    name = "recording"

    def available(self):
        return None

    def ensure(self, spec):
        raise NotImplementedError

    def exec(self, handle, request):
        raise NotImplementedError

    def stop(self, group):
        return False


def test_names_and_labels() -> None:
    backend = _Recording(SandboxConfig(instance="prod", label_prefix="mc"))
    assert backend.container_name("alpha") == "mc-prod-alpha"
    with pytest.raises(ValueError):
        backend.container_name("../etc")
    labels = backend.labels(ContainerSpec("alpha", True))
    assert labels["mc.managed"] == "1"
    assert labels["mc.instance"] == "prod"
    assert labels["mc.group"] == "alpha"
    assert labels["mc.main"] == "1"
    assert len(labels["mc.spec"]) == 16
    assert backend.instance_filter() == {"mc.instance": "prod"}
    assert backend.cleanup_orphans() == []


def test_registry_strings_all_import() -> None:
    for name, target in BACKENDS.items():
        module, _, cls = target.partition(":")
        backend_cls = getattr(importlib.import_module(module), cls)
        assert issubclass(backend_cls, BaseSandboxBackend)
        assert backend_cls.name == name


def test_unknown_backend_lists_known_names() -> None:
    with pytest.raises(ConfigError) as info:
        load_backend("podman", SandboxConfig())
    assert info.value.key == "sandbox.backend"
    for name in ("auto", "docker", "apple"):
        assert name in str(info.value)


def test_auto_picks_apple_only_on_macos() -> None:
    assert resolve_backend_name("auto", "darwin") == "apple"
    assert resolve_backend_name("auto", "linux") == "docker"
    assert resolve_backend_name("docker", "darwin") == "docker"


def test_load_backend_builds_the_class() -> None:
    backend = load_backend("apple", SandboxConfig())
    assert isinstance(backend, AppleContainerBackend)
