from __future__ import annotations

import os
from pathlib import Path

import pytest

from microclaw.config import load_settings
from microclaw.errors import ConfigError


def test_defaults_resolve_paths_under_data_dir(settings, tmp_path: Path) -> None:
    assert settings.data_dir == (tmp_path / "data").resolve()
    assert settings.store.db_path == settings.data_dir / "microclaw.db"
    assert settings.broker.url == f"sqla+sqlite:///{settings.data_dir / 'broker.db'}"
    assert settings.broker.is_sqlite
    assert settings.trigger == "@Andy"
    assert settings.router.concurrency == 5
    assert settings.router.retry_delays_s == (5, 10, 20, 40, 80)
    assert settings.connectors["local"]["enabled"] is True


def test_nested_environment_overrides(isolated_env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MICROCLAW_ROUTER__CONCURRENCY", "3")
    monkeypatch.setenv("MICROCLAW_CONNECTORS__LOCAL__ENABLED", "false")
    monkeypatch.setenv("MICROCLAW_ASSISTANT_NAME", "Claw")
    monkeypatch.setenv("MICROCLAW_BROKER__URL", "redis://127.0.0.1:6390/0")
    s = load_settings()
    assert s.router.concurrency == 3
    assert s.connectors["local"]["enabled"] is False
    assert s.trigger == "@Claw"
    assert s.broker.url == "redis://127.0.0.1:6390/0" and not s.broker.is_sqlite


def test_dotenv_is_read(isolated_env, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("MICROCLAW_ASSISTANT_NAME=Dotty\n")
    assert load_settings().assistant_name == "Dotty"


@pytest.mark.parametrize(
    ("key", "value", "named"),
    [
        ("MICROCLAW_TIMEZONE", "Mars/Olympus", "timezone"),
        ("MICROCLAW_ROUTER__CONCURRENCY", "0", "router.concurrency"),
        ("MICROCLAW_ROUTER__CONCURRENCY", "two", "router.concurrency"),
        ("MICROCLAW_ROUTER__MAX_MESSAGES_PER_PROMPT", "-1", "router.max_messages_per_prompt"),
        ("MICROCLAW_ROUTER__RETRY_DELAYS_S", "[5, -1]", "router.retry_delays_s"),
        ("MICROCLAW_HTTP__HOST", "0.0.0.0", "http.host"),
        ("MICROCLAW_LOGGING__LEVEL", "LOUD", "logging.level"),
        ("MICROCLAW_SANDBOX__BACKEND", "chroot", "sandbox.backend"),
        ("MICROCLAW_BROKER__URL", "nonsense", "broker.url"),
    ],
)
def test_bad_values_fail_fast_naming_the_key(
    isolated_env, monkeypatch, key: str, value: str, named: str
) -> None:
    monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.key == named
    assert named in str(info.value)


def test_timezone_from_tz_environment(isolated_env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MICROCLAW_TIMEZONE")
    monkeypatch.setenv("TZ", "Europe/Berlin")
    assert load_settings().timezone == "Europe/Berlin"


def test_extra_settings_file_layers_on_top(isolated_env, tmp_path: Path, monkeypatch) -> None:
    extra = tmp_path / "site.toml"
    extra.write_text("[router]\nmax_messages_per_prompt = 25\n")
    monkeypatch.setenv("MICROCLAW_SETTINGS_FILE", str(extra))
    s = load_settings()
    assert s.router.max_messages_per_prompt == 25
    assert s.router.concurrency == 5  # other keys of the table keep their defaults
    monkeypatch.setenv("MICROCLAW_SETTINGS_FILE", str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match="no such file"):
        load_settings()


# --- [sandbox] -------------------------------------------------------------------------------


def test_sandbox_defaults(settings, tmp_path: Path) -> None:
    sb = settings.sandbox
    assert sb.backend == "auto" and sb.image == "microclaw-sandbox:latest"
    assert sb.idle_timeout_s == 1800 and sb.exec_timeout_s == 120 and sb.max_output_bytes == 1_000_000
    assert (sb.memory, sb.cpus, sb.pids_limit, sb.user) == ("512m", 1.0, 256, "1000:1000")
    if len(str(settings.data_dir / "sandbox")) <= 80:  # else the short fallback, tested below
        assert sb.run_dir == settings.data_dir / "sandbox"
    assert sb.result_url == f"db+sqlite:///{settings.data_dir / 'sandbox-results.db'}"
    assert dict(sb.network_allowlists) == {} and dict(sb.egress_credentials) == {}
    assert sb.instance == "default" and sb.label_prefix == "microclaw"


def test_sandbox_docker_url_defaults_to_docker_host(isolated_env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    assert load_settings().sandbox.docker_url == "unix:///var/run/docker.sock"
    monkeypatch.setenv("DOCKER_HOST", "unix:///elsewhere/docker.sock")
    assert load_settings().sandbox.docker_url == "unix:///elsewhere/docker.sock"
    monkeypatch.setenv("MICROCLAW_SANDBOX__DOCKER_URL", "tcp://127.0.0.1:2375")
    assert load_settings().sandbox.docker_url == "tcp://127.0.0.1:2375"


def test_sandbox_egress_settings_from_a_settings_file(isolated_env, tmp_path: Path, monkeypatch) -> None:
    extra = tmp_path / "site.toml"
    extra.write_text(
        "[sandbox]\n"
        'network_allowlists = { local_main = ["api.example.com", "*.pypi.org:443"] }\n'
        'egress_https_hosts = ["API.example.com."]\n'
        "[sandbox.egress_credentials]\n"
        '"api.example.com" = { "Authorization" = "env:EXAMPLE_TOKEN", "X-Team" = "env:EXAMPLE_TEAM" }\n'
    )
    monkeypatch.setenv("MICROCLAW_SETTINGS_FILE", str(extra))
    monkeypatch.setenv("EXAMPLE_TOKEN", "Bearer very-secret-value")
    s = load_settings()
    assert dict(s.sandbox.network_allowlists) == {"local_main": ("api.example.com", "*.pypi.org:443")}
    assert s.sandbox.egress_https_hosts == ("api.example.com",)
    # Settings keep variable names only: the value is read by the sandbox worker's entry point.
    assert {h: dict(v) for h, v in s.sandbox.egress_credentials.items()} == {
        "api.example.com": {"Authorization": "EXAMPLE_TOKEN", "X-Team": "EXAMPLE_TEAM"}
    }
    assert "very-secret-value" not in repr(s)


@pytest.mark.parametrize(
    ("key", "value", "named"),
    [
        ("MICROCLAW_SANDBOX__MEMORY", "lots", "sandbox.memory"),
        ("MICROCLAW_SANDBOX__TMPFS_SIZE", "12q", "sandbox.tmpfs_size"),
        ("MICROCLAW_SANDBOX__CPUS", "0", "sandbox.cpus"),
        ("MICROCLAW_SANDBOX__PIDS_LIMIT", "many", "sandbox.pids_limit"),
        ("MICROCLAW_SANDBOX__USER", "0:0", "sandbox.user"),
        ("MICROCLAW_SANDBOX__USER", "root", "sandbox.user"),
        ("MICROCLAW_SANDBOX__IDLE_TIMEOUT_S", "0", "sandbox.idle_timeout_s"),
        ("MICROCLAW_SANDBOX__EXEC_TIMEOUT_S", "-1", "sandbox.exec_timeout_s"),
        ("MICROCLAW_SANDBOX__MAX_EXEC_TIMEOUT_S", "10", "sandbox.max_exec_timeout_s"),
        ("MICROCLAW_SANDBOX__MAX_OUTPUT_BYTES", "12", "sandbox.max_output_bytes"),
        ("MICROCLAW_SANDBOX__EGRESS_PORT", "70000", "sandbox.egress_port"),
        ("MICROCLAW_SANDBOX__INSTANCE", "Not_Valid", "sandbox.instance"),
        ("MICROCLAW_SANDBOX__LABEL_PREFIX", "9lives", "sandbox.label_prefix"),
        ("MICROCLAW_SANDBOX__EXEC_TRANSPORT", "carrier-pigeon", "sandbox.exec_transport"),
        ("MICROCLAW_SANDBOX__DOCKER_URL", "var/run/docker.sock", "sandbox.docker_url"),
        ("MICROCLAW_SANDBOX__RESULT_URL", "results.db", "sandbox.result_url"),
        ("MICROCLAW_SANDBOX__RUN_DIR", "/tmp/" + "x" * 90, "sandbox.run_dir"),
        (
            "MICROCLAW_SANDBOX__NETWORK_ALLOWLISTS",
            '{ "../etc" = ["a.com"] }',
            "sandbox.network_allowlists.../etc",
        ),
        (
            "MICROCLAW_SANDBOX__NETWORK_ALLOWLISTS",
            '{ alpha = ["a.com:99999"] }',
            "sandbox.network_allowlists.alpha",
        ),
        ("MICROCLAW_SANDBOX__NETWORK_ALLOWLISTS", '{ alpha = "a.com" }', "sandbox.network_allowlists.alpha"),
        ("MICROCLAW_SANDBOX__EGRESS_HTTPS_HOSTS", '["https://a.com/"]', "sandbox.egress_https_hosts"),
        (
            "MICROCLAW_SANDBOX__EGRESS_CREDENTIALS",
            '{ "a.com" = { "Bad Header" = "env:X" } }',
            "sandbox.egress_credentials.a.com.Bad Header",
        ),
        (
            "MICROCLAW_SANDBOX__EGRESS_CREDENTIALS",
            '{ "a.com" = "env:X" }',
            "sandbox.egress_credentials.a.com",
        ),
    ],
)
def test_bad_sandbox_values_fail_fast_naming_the_key(
    isolated_env, monkeypatch, key: str, value: str, named: str
) -> None:
    monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.key == named
    assert named in str(info.value)


@pytest.mark.parametrize("literal", ["sk-live-abcdef123456", "Bearer env:TOKEN", "env:lower-case-dash"])
def test_a_literal_credential_in_settings_is_refused_without_echoing_it(
    isolated_env, monkeypatch, literal: str
) -> None:
    monkeypatch.setenv(
        "MICROCLAW_SANDBOX__EGRESS_CREDENTIALS",
        f'{{ "api.example.com" = {{ "Authorization" = "{literal}" }} }}',
    )
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.key == "sandbox.egress_credentials.api.example.com.Authorization"
    assert "env:VARIABLE_NAME" in str(info.value)
    assert literal not in str(info.value)


def test_a_deep_data_dir_gets_a_short_run_dir(isolated_env, tmp_path: Path, monkeypatch) -> None:
    deep = tmp_path / ("d" * 60) / "data"
    monkeypatch.setenv("MICROCLAW_DATA_DIR", str(deep))
    run_dir = load_settings().sandbox.run_dir
    assert len(str(run_dir)) <= 80 and not str(run_dir).startswith(str(tmp_path))
    assert run_dir.parent.name == f"microclaw-{os.getuid()}"
    assert load_settings().sandbox.run_dir == run_dir  # stable for one data directory
