"""microclaw.sandbox.egress: allowlist parsing and policy lookups (pure)."""

from __future__ import annotations

import pytest

from microclaw.errors import ConfigError
from microclaw.sandbox.egress import (
    Destination,
    EgressPolicy,
    is_public_address,
    normalize_host,
    parse_destinations,
)


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("api.example.com:443", (Destination("api.example.com", 443),)),
        ("API.Example.com.:8080", (Destination("api.example.com", 8080),)),
        ("pypi.org", (Destination("pypi.org", 80), Destination("pypi.org", 443))),
        ("*.github.com:443", (Destination("*.github.com", 443),)),
        ("127.0.0.1:*", (Destination("127.0.0.1", None),)),
        ("[::1]:8080", (Destination("::1", 8080),)),
    ],
)
def test_parse_destinations(entry: str, expected: tuple[Destination, ...]) -> None:
    assert parse_destinations([entry]) == expected


@pytest.mark.parametrize(
    "entry", ["", "a:b", "host:0", "host:70000", "user@host:80", "a/b:80", "ev*il.com:80"]
)
def test_bad_entries_raise_config_error(entry: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_destinations([entry])
    assert info.value.key == "sandbox.network_allowlists"


def test_policy_is_deny_by_default_and_per_group() -> None:
    policy = EgressPolicy({"alpha": ("api.example.com:443", "*.pypi.org:443", "localhost:*")})
    assert policy.allows("alpha", "api.example.com", 443)
    assert policy.allows("alpha", "API.EXAMPLE.COM.", 443)
    assert not policy.allows("alpha", "api.example.com", 80)
    assert not policy.allows("alpha", "evil-api.example.com", 443)
    assert policy.allows("alpha", "files.pypi.org", 443)
    assert not policy.allows("alpha", "pypi.org", 443)  # a wildcard does not cover the apex
    assert not policy.allows("alpha", "pypi.org.evil.com", 443)
    assert policy.allows("alpha", "localhost", 5)
    assert not policy.allows("beta", "api.example.com", 443)
    assert policy.has_egress("alpha")
    assert not policy.has_egress("beta")


def test_credentials_and_tls_upgrade_lookups() -> None:
    policy = EgressPolicy(
        {"alpha": ("api.example.com:443",)},
        credentials={"api.example.com": {"X-Api-Key": "k"}},
        https_hosts={"API.example.com"},
    )
    assert policy.headers_for("api.example.com.") == {"X-Api-Key": "k"}
    assert policy.headers_for("other.com") == {}
    assert policy.upgrade_to_tls("api.example.com")
    assert not policy.upgrade_to_tls("other.com")


def test_normalize_host() -> None:
    assert normalize_host(" Example.COM. ") == "example.com"
    assert normalize_host("[::1]") == "::1"


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.215.14", True),
        ("2606:4700::1111", True),
        ("127.0.0.1", False),
        ("10.0.0.1", False),
        ("172.17.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("0.0.0.0", False),
        ("224.0.0.251", False),
        ("::1", False),
        ("::", False),
        ("fe80::1%eth0", False),
        ("fd00::1", False),
        ("::ffff:127.0.0.1", False),
        ("not-an-ip", False),
    ],
)
def test_is_public_address(address: str, public: bool) -> None:
    assert is_public_address(address) is public


def test_only_an_exact_literal_entry_allows_a_private_address() -> None:
    policy = EgressPolicy({"alpha": ("127.0.0.1:8080", "10.0.0.5:*", "*.0.0.1:*", "localhost:*")})
    assert policy.allows_private_literal("alpha", "127.0.0.1", 8080)
    assert not policy.allows_private_literal("alpha", "127.0.0.1", 8081)
    assert policy.allows_private_literal("alpha", "10.0.0.5", 1)
    assert not policy.allows_private_literal("alpha", "127.0.0.2", 1)  # the wildcard does not count
    assert not policy.allows_private_literal("alpha", "localhost", 1)  # a name never does
    assert not policy.allows_private_literal("beta", "127.0.0.1", 8080)
