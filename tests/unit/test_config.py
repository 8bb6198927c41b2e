from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest
from pydantic import ValidationError

from microclaw.config import (
    DEFAULT_SETTINGS_FILE,
    AgentSettings,
    BeatSettings,
    BrokerSettings,
    GatewaySettings,
    HttpSettings,
    LoggingSettings,
    OtaSettings,
    OutboundSettings,
    RouterSettings,
    SandboxSettings,
    SchedulerSettings,
    Settings,
    StoreSettings,
    VoiceSettings,
    load_settings,
    parse_size,
)
from microclaw.errors import ConfigError
from microclaw.runtime.wiring import sandbox_config


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


def test_a_list_from_a_file_or_the_environment_replaces_the_default(
    isolated_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Dynaconf's own merging appended lists: [1, 2] became (5, 10, 20, 40, 80, 1, 2).
    extra = tmp_path / "site.toml"
    extra.write_text("[router]\nretry_delays_s = [3, 4]\n")
    monkeypatch.setenv("MICROCLAW_SETTINGS_FILE", str(extra))
    assert load_settings().router.retry_delays_s == (3, 4)
    monkeypatch.setenv("MICROCLAW_ROUTER__RETRY_DELAYS_S", "[1, 2]")
    s = load_settings()
    assert s.router.retry_delays_s == (1, 2)
    assert s.router.concurrency == 5  # the rest of the table keeps its defaults


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


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ('{ "api.example.com" = "sk-live-abcdef123456" }', "sandbox.egress_credentials.api.example.com"),
        ('{ "api.example.com" = ["sk-live-abcdef123456"] }', "sandbox.egress_credentials.api.example.com"),
        ("sk-live-abcdef123456", "sandbox.egress_credentials"),
    ],
)
def test_a_misplaced_credential_is_never_echoed(isolated_env, monkeypatch, value: str, named: str) -> None:
    monkeypatch.setenv("MICROCLAW_SANDBOX__EGRESS_CREDENTIALS", value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.key == named
    assert "sk-live-abcdef123456" not in str(info.value)


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


# --- declared once: the models are the settings --------------------------------------------

TABLES = {
    "store": StoreSettings,
    "broker": BrokerSettings,
    "router": RouterSettings,
    "outbound": OutboundSettings,
    "beat": BeatSettings,
    "scheduler": SchedulerSettings,
    "agent": AgentSettings,
    "http": HttpSettings,
    "logging": LoggingSettings,
    "sandbox": SandboxSettings,
    "gateway": GatewaySettings,
    "ota": OtaSettings,
    "voice": VoiceSettings,
}
ENV_ONLY = {"agent": {"api_key"}, "voice": {"api_key"}}


def _toml() -> dict:
    return tomllib.loads(DEFAULT_SETTINGS_FILE.read_text())


def test_every_declared_setting_has_its_line_in_settings_toml_and_back() -> None:
    toml = _toml()
    top_level = {k for k, v in toml.items() if not isinstance(v, dict)}
    assert top_level == set(Settings.model_fields) - set(TABLES) - {"connectors"}
    assert set(toml) - top_level == {*TABLES, "connectors"}
    for name, model in TABLES.items():
        assert set(toml[name]) == set(model.model_fields) - ENV_ONLY.get(name, set()), name


def test_model_defaults_match_settings_toml() -> None:
    # Empty values in settings.toml are derived at load time; every other default is written
    # twice (model and file) and must agree.
    for name, model in TABLES.items():
        default = model()
        for key, value in _toml()[name].items():
            if value not in ("", None):
                assert getattr(model(**{key: value}), key) == getattr(default, key), f"{name}.{key}"


def test_every_sandbox_setting_reaches_the_sandbox_config(isolated_env, tmp_path: Path, monkeypatch) -> None:
    """No copying in between: each field, loaded from the environment, arrives in SandboxConfig."""
    samples: dict[str, object] = {
        "backend": "docker",
        "image": "example/sandbox:2",
        "memory": "1g",
        "tmpfs_size": "128m",
        "user": "1001:1002",
        "network_allowlists": {"alpha": ("pypi.org:443",)},
        "egress_https_hosts": ("api.example.com",),
        "egress_ca_file": tmp_path / "ca.pem",
        "docker_url": "tcp://127.0.0.1:2375",
        "exec_transport": "docker",
        "run_dir": tmp_path / "run",
        "instance": "second",
        "label_prefix": "mc",
        "apple_cli": "/opt/container",
        "result_url": "redis://127.0.0.1:6379/1",
    }
    for name, field in SandboxSettings.model_fields.items():
        if type(field.default) in (int, float):  # any number setting, including ones added later
            samples[name] = field.default + 1
    for name, value in samples.items():
        if isinstance(value, dict):
            text = "{ " + ", ".join(f"{k} = {list(v)!r}" for k, v in value.items()) + " }"
        elif isinstance(value, tuple):
            text = repr(list(value))
        else:
            text = str(value)
        monkeypatch.setenv(f"MICROCLAW_SANDBOX__{name.upper()}", text)
    settings = load_settings()
    config = sandbox_config(settings, {})
    for name, value in samples.items():
        got = getattr(config, name)
        assert (dict(got) if name == "network_allowlists" else got) == value, name
        assert got != getattr(SandboxSettings(), name), name
    assert isinstance(config, SandboxSettings)


@pytest.mark.parametrize(
    ("source", "named"),
    [
        ("MICROCLAW_SANDBOX__MEMROY=1g", "sandbox.memroy"),
        ("MICROCLAW_ASISTANT_NAME=Claw", "asistant_name"),
        ("MICROCLAW_ROUTER__CONCURENCY=3", "router.concurency"),
        ("[agent]\nprovder = 'openai'\n", "agent.provder"),
        ("[outbound]\nmax_attempts = 3\nsecret_token = 'sk-do-not-echo'\n", "outbound.secret_token"),
    ],
)
def test_unknown_settings_are_refused_naming_the_key(
    isolated_env, tmp_path: Path, monkeypatch, source: str, named: str
) -> None:
    if source.startswith("MICROCLAW_"):
        key, _, value = source.partition("=")
        monkeypatch.setenv(key, value)
    else:
        extra = tmp_path / "site.toml"
        extra.write_text(source)
        monkeypatch.setenv("MICROCLAW_SETTINGS_FILE", str(extra))
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.key == named
    assert named in str(info.value) and "unknown setting" in str(info.value)
    assert "sk-do-not-echo" not in str(info.value)


def test_connector_tables_stay_free_form(isolated_env, monkeypatch) -> None:
    monkeypatch.setenv("MICROCLAW_CONNECTORS__LOCAL__SOMETHING_NEW", "7")
    monkeypatch.setenv("MICROCLAW_CONNECTORS__MATRIX__ENABLED", "false")
    s = load_settings()
    assert s.connectors["local"]["something_new"] == 7
    assert s.connectors["matrix"] == {"enabled": False}


def test_an_api_key_in_settings_is_refused_without_echoing_it(isolated_env, monkeypatch) -> None:
    monkeypatch.setenv("MICROCLAW_AGENT__API_KEY", "sk-live-abcdef123456")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.key == "agent.api_key"
    assert "environment" in str(info.value) and "sk-live-abcdef123456" not in str(info.value)


@pytest.mark.parametrize(
    ("key", "value", "named", "expected"),
    [
        ("MICROCLAW_OUTBOUND__MAX_ATTEMPTS", "0", "outbound.max_attempts", ">= 1"),
        ("MICROCLAW_ROUTER__CONCURRENCY", "2.5", "router.concurrency", "integer"),
        ("MICROCLAW_BEAT__TICK_INTERVAL_S", "fast", "beat.tick_interval_s", "number"),
        ("MICROCLAW_STORE__BUSY_TIMEOUT_S", "0", "store.busy_timeout_s", ">= 0.1"),
        ("MICROCLAW_AGENT__SCRIPTED_MODE", "loud", "agent.scripted_mode", "'echo', 'seen' or 'fail'"),
        ("MICROCLAW_HTTP__PORT", "70000", "http.port", "<= 65535"),
        ("MICROCLAW_LOGGING__FORMAT", "xml", "logging.format", "'auto', 'json' or 'text'"),
        ("MICROCLAW_ROUTER", "5", "router", "table"),
        ("MICROCLAW_SANDBOX__IMAGE", '""', "sandbox.image", "empty"),
        ("MICROCLAW_SANDBOX__TMPFS_SIZE", "512k", "sandbox.tmpfs_size", "at least 1m"),
    ],
)
def test_errors_name_the_key_and_say_what_was_expected(
    isolated_env, monkeypatch, key: str, value: str, named: str, expected: str
) -> None:
    monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.key == named
    assert str(info.value).startswith(f"{named}: ") and expected in str(info.value)


def test_values_are_normalized(isolated_env, monkeypatch) -> None:
    monkeypatch.setenv("MICROCLAW_LOGGING__LEVEL", "debug")
    monkeypatch.setenv("MICROCLAW_SANDBOX__BACKEND", " Docker ")
    monkeypatch.setenv("MICROCLAW_ASSISTANT_NAME", "  Claw ")
    monkeypatch.setenv("MICROCLAW_SANDBOX__EGRESS_CA_FILE", "~/ca.pem")
    s = load_settings()
    assert (s.logging.level, s.sandbox.backend, s.assistant_name, s.trigger) == (
        "DEBUG",
        "docker",
        "Claw",
        "@Claw",
    )
    assert s.sandbox.egress_ca_file == Path("~/ca.pem").expanduser().resolve()
    assert s.sandbox.egress_https_hosts == () and s.sandbox.egress_ca_file.is_absolute()


def test_settings_are_frozen(settings) -> None:
    with pytest.raises(ValidationError):
        settings.router.concurrency = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        settings.sandbox.network_allowlists["x"] = ("a.com",)  # type: ignore[index]


def test_a_table_built_directly_is_validated_the_same_way() -> None:
    with pytest.raises(ConfigError) as info:
        RouterSettings(concurrency=0)
    assert info.value.key == "router.concurrency"
    with pytest.raises(ConfigError) as info:
        SandboxSettings(queue_timeout=5)
    assert info.value.key == "sandbox.queue_timeout"


@pytest.mark.parametrize(
    ("text", "expected"), [("64m", 64 * 1024**2), ("1g", 1024**3), ("512k", 512 * 1024), (42, 42)]
)
def test_parse_size(text, expected) -> None:
    assert parse_size(text) == expected


def test_memory_bytes() -> None:
    assert SandboxSettings(memory="2g").memory_bytes == 2 * 1024**3
    assert SandboxSettings().uid_gid == (1000, 1000)


def test_the_http_base_url_brackets_ipv6_loopback_and_the_token_lives_in_the_data_dir(
    isolated_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MICROCLAW_HTTP__HOST", "::1")
    monkeypatch.setenv("MICROCLAW_HTTP__PORT", "8765")
    s = load_settings()
    assert s.http.base_url == "http://[::1]:8765"
    assert s.http_token_path == s.data_dir / "http-token"


def test_voice_api_key_comes_only_from_the_environment(isolated_env, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-voice")
    settings = load_settings()
    assert settings.voice.api_key == "sk-voice" and "sk-voice" not in repr(settings.voice)
    bad = tmp_path / "settings.toml"
    bad.write_text('[voice]\napi_key = "sk-pasted"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(settings_file=bad)
    assert "sk-pasted" not in str(caught.value) and "voice.api_key" in str(caught.value)
