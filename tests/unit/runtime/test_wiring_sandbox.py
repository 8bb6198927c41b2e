"""microclaw.runtime.wiring's sandbox builders: config from settings, credentials from the environment,
and the audit adapter (decisions, the group folder, redaction) on a real SQLite file. The
connector builders are in test_wiring.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import Engine

from microclaw.config import load_settings
from microclaw.runtime.wiring import build_sandbox, redactor, sandbox_audit, sandbox_config
from microclaw.sandbox.base import Credentials
from microclaw.store import audit
from microclaw.store.db import read_tx


@pytest.fixture
def egress_settings(isolated_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    extra = tmp_path / "site.toml"
    extra.write_text(
        "[sandbox]\n"
        'backend = "apple"\n'
        'network_allowlists = { alpha = ["api.example.com:443"] }\n'
        'egress_https_hosts = ["api.example.com"]\n'
        "[sandbox.egress_credentials]\n"
        '"api.example.com" = { "Authorization" = "env:MC_TOKEN", "X-Org" = "env:MC_UNSET_ORG" }\n'
    )
    monkeypatch.setenv("MICROCLAW_SETTINGS_FILE", str(extra))
    monkeypatch.delenv("MC_UNSET_ORG", raising=False)
    return load_settings()


def rows(engine: Engine) -> list[dict]:
    with read_tx(engine) as conn:
        return list(reversed(audit.recent(conn, limit=100)))


def test_sandbox_config_reads_credential_values_from_the_environment(egress_settings) -> None:
    config = sandbox_config(egress_settings, {"MC_TOKEN": "Bearer t0ken-value"})
    assert config.egress_credentials == Credentials(
        {"api.example.com": {"Authorization": "Bearer t0ken-value"}}
    )
    assert "t0ken-value" not in repr(config)
    assert dict(config.network_allowlists) == {"alpha": ("api.example.com:443",)}
    assert config.egress_https_hosts == ("api.example.com",)
    assert config.groups_dir == egress_settings.groups_dir
    assert config.global_dir == egress_settings.groups_dir / "global"
    assert config.run_dir == egress_settings.sandbox.run_dir
    assert config.mount_allowlist_path == egress_settings.mount_allowlist_path


def test_build_sandbox_loads_the_configured_backend(egress_settings, engine: Engine) -> None:
    service = build_sandbox(egress_settings, engine, {"MC_TOKEN": "x" * 8})
    try:
        assert service.backend.name == "apple"
        assert service.readiness().startswith("not macOS")  # this suite runs on Linux
    finally:
        service.close()


def test_audit_rows_carry_decision_and_group_and_never_a_secret(engine: Engine) -> None:
    secret = "Bearer t0ken-value"
    record = sandbox_audit(engine, [secret, "abc"])  # too short to redact safely: ignored
    record("egress.allow", group="alpha", host="api.example.com", port=443, injected=["Authorization"])
    record("egress.deny", group="alpha", host="evil.example", port=443, method="CONNECT")
    record("sandbox.mount", group="alpha", allowed=False, reason="blocked pattern .ssh")
    record("sandbox.mount", group="alpha", allowed=True, reason="allowed")
    record("sandbox.exec", group="alpha", tool="exec", argv=f"curl -H '{secret}' x", exit_code=0)
    record("sandbox.exec", group="alpha", tool="exec", argv="ls", error="TransientSandboxError: boom")
    record("sandbox.unavailable", group="alpha", reason="docker engine unreachable")
    record("sandbox.orphan", group=None, container="microclaw-default-alpha")
    got = [(r["kind"], r["decision"], r["detail"]["group"]) for r in rows(engine)]
    assert got == [
        ("egress.allow", "allow", "alpha"),
        ("egress.deny", "deny", "alpha"),
        ("sandbox.mount", "deny", "alpha"),
        ("sandbox.mount", "allow", "alpha"),
        ("sandbox.exec", "allow", "alpha"),
        ("sandbox.exec", "error", "alpha"),
        ("sandbox.unavailable", "error", "alpha"),
        ("sandbox.orphan", None, None),
    ]
    everything = json.dumps(rows(engine))
    assert "t0ken-value" not in everything and "<redacted>" in everything


def test_audit_write_failures_never_reach_the_caller(tmp_path: Path) -> None:
    from microclaw.store.db import create_sqlite_engine

    unmigrated = create_sqlite_engine(tmp_path / "empty.db")  # no audit table
    try:
        sandbox_audit(unmigrated)("sandbox.exec", group="alpha", argv="ls")
    finally:
        unmigrated.dispose()


def test_redactor_walks_nested_values() -> None:
    scrub = redactor(["hunter22"])
    assert scrub({"a": ["x hunter22 y", ("hunter22",)], "n": 3}) == {
        "a": ["x <redacted> y", ["<redacted>"]],
        "n": 3,
    }
    assert redactor([])("hunter22") == "hunter22"
