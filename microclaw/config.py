"""Configuration: the only module that reads dynaconf, the environment and `.env`.

`load_settings()` layers `settings.toml` (the documented defaults), an optional file named by
``MICROCLAW_SETTINGS_FILE``, `.env` and ``MICROCLAW_*`` environment variables (``__`` nests),
validates everything at once and returns frozen, typed objects. Only entry points (the host,
the Celery app factory, the CLI) call it; library code receives the slice it needs through its
constructor. Every validation failure is a `ConfigError` whose ``key`` names the setting.

This module does not open databases or sockets, and it never logs secrets.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from dynaconf import Dynaconf

from microclaw.core.timezones import is_valid_timezone
from microclaw.errors import ConfigError

DEFAULT_SETTINGS_FILE = Path(__file__).resolve().parent.parent / "settings.toml"
ENV_PREFIX = "MICROCLAW"


@dataclass(frozen=True)
class StoreSettings:
    db_path: Path
    busy_timeout_s: float = 30.0

    @property
    def url(self) -> str:
        return f"sqlite:///{self.db_path}"


@dataclass(frozen=True)
class BrokerSettings:
    url: str
    polling_interval: float = 0.02
    cleanup_interval_s: float = 300.0

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqla+sqlite")


@dataclass(frozen=True)
class RouterSettings:
    concurrency: int = 5
    max_messages_per_prompt: int = 10
    max_text_bytes: int = 65536
    lease_ttl_s: float = 60.0
    retry_delays_s: tuple[float, ...] = (5, 10, 20, 40, 80)


@dataclass(frozen=True)
class OutboundSettings:
    max_attempts: int = 8
    retry_base_s: float = 2.0
    max_retry_delay_s: float = 300.0


@dataclass(frozen=True)
class BeatSettings:
    tick_interval_s: float = 1.0
    sweep_interval_s: float = 5.0
    stale_after_s: float = 10.0


@dataclass(frozen=True)
class AgentSettings:
    """The ``[agent]`` table plus the provider's credentials from the environment.

    ``api_key`` comes from ``ANTHROPIC_API_KEY`` / ``OPENAI_API_KEY`` (never from settings.toml)
    and is left out of ``repr`` so it never reaches a log line.
    """

    provider: str = ""
    model: str = ""
    scripted_mode: str = "echo"
    scripted_delay_s: float = 0.0
    base_url: str = ""
    api_key: str = field(default="", repr=False)
    max_tokens: int = 4096
    max_steps: int = 20
    run_timeout_s: float = 600.0
    request_timeout_s: float = 120.0
    max_retries: int = 4
    max_tool_output_chars: int = 20_000
    history_token_budget: int = 60_000
    keep_recent_turns: int = 8
    daily_token_budget: int = 0
    input_cost_per_mtok: float = 0.0
    output_cost_per_mtok: float = 0.0


@dataclass(frozen=True)
class HttpSettings:
    host: str = "127.0.0.1"
    port: int = 8765

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"


@dataclass(frozen=True)
class LoggingSettings:
    level: str = "INFO"
    format: str = "json"


@dataclass(frozen=True)
class SandboxSettings:
    """The ``[sandbox]`` table. ``egress_credentials`` holds environment variable *names*
    (host -> header -> variable); the values are read by the sandbox worker's entry point
    (`microclaw.wiring.sandbox_config`), so no secret ever sits in this object."""

    backend: str = "auto"
    image: str = "microclaw-sandbox:latest"
    memory: str = "512m"
    cpus: float = 1.0
    pids_limit: int = 256
    tmpfs_size: str = "64m"
    user: str = "1000:1000"
    idle_timeout_s: float = 1800.0
    idle_check_interval_s: float = 60.0
    exec_timeout_s: float = 120.0
    max_exec_timeout_s: float = 3600.0
    max_output_bytes: int = 1_000_000
    max_file_bytes: int = 10 * 1024 * 1024
    network_allowlists: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))
    egress_https_hosts: tuple[str, ...] = ()
    egress_credentials: Mapping[str, Mapping[str, str]] = field(default_factory=lambda: MappingProxyType({}))
    egress_ca_file: Path | None = None
    egress_connect_timeout_s: float = 10.0
    egress_port: int = 3128
    docker_url: str = "unix:///var/run/docker.sock"
    exec_transport: str = "auto"
    run_dir: Path = Path("data/sandbox")
    instance: str = "default"
    label_prefix: str = "microclaw"
    start_timeout_s: float = 30.0
    api_timeout_s: float = 30.0
    apple_cli: str = "container"
    readiness_interval_s: float = 15.0
    queue_timeout_s: float = 60.0
    result_url: str = ""
    result_expires_s: float = 3600.0


@dataclass(frozen=True)
class Settings:
    """Everything MicroClaw reads from configuration, validated and frozen."""

    assistant_name: str
    trigger: str
    timezone: str
    data_dir: Path
    groups_dir: Path
    store: StoreSettings
    broker: BrokerSettings
    router: RouterSettings
    outbound: OutboundSettings
    beat: BeatSettings
    agent: AgentSettings
    http: HttpSettings
    logging: LoggingSettings
    sandbox: SandboxSettings
    # Policy files live outside the project and are never mounted into containers.
    sender_allowlist_path: Path = field(
        default_factory=lambda: Path("~/.config/microclaw/sender-allowlist.json")
    )
    mount_allowlist_path: Path = field(
        default_factory=lambda: Path("~/.config/microclaw/mount-allowlist.json")
    )
    # Raw per-connector slices (``{"local": {...}, "telegram": {...}}``); each connector's
    # ``from_settings`` turns its own slice into typed values and may read its secret env vars.
    connectors: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @property
    def pidfile(self) -> Path:
        return self.data_dir / "microclaw-host.pid"


def _system_timezone() -> str | None:
    """The host's IANA zone name from /etc/timezone or the /etc/localtime link, if any."""
    try:
        name = Path("/etc/timezone").read_text().strip()
        if name:
            return name
    except OSError:
        pass
    try:
        target = os.readlink("/etc/localtime")
    except OSError:
        return None
    marker = "zoneinfo/"
    return target.split(marker, 1)[1] if marker in target else None


def _pick_timezone(configured: str) -> str:
    if configured:
        if not is_valid_timezone(configured):
            raise ConfigError(
                f"timezone: {configured!r} is not a valid IANA timezone (e.g. 'Europe/Berlin', 'UTC')",
                key="timezone",
            )
        return configured
    for candidate in (os.environ.get("TZ"), _system_timezone()):
        if candidate and is_valid_timezone(candidate):
            return candidate
    return "UTC"


def _number(raw: Mapping[str, Any], section: str, key: str, *, minimum: float, integer: bool = False) -> Any:
    name = f"{section}.{key}"
    value = raw.get(key)
    try:
        number = int(value) if integer else float(value)
        if integer and float(value) != number:
            raise ValueError
    except (TypeError, ValueError):
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"{name}: expected {kind}, got {value!r}", key=name) from None
    if number < minimum:
        raise ConfigError(f"{name}: must be >= {minimum}, got {number!r}", key=name)
    return number


def _section(data: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = data.get(name) or {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{name}: expected a table of settings, got {value!r}", key=name)
    return {str(k).lower(): v for k, v in value.items()}


def _read_raw(settings_file: Path | None, env_file: Path | None) -> dict[str, Any]:
    files = [str(DEFAULT_SETTINGS_FILE)]
    extra = settings_file or (
        Path(os.environ["MICROCLAW_SETTINGS_FILE"]) if os.environ.get("MICROCLAW_SETTINGS_FILE") else None
    )
    if extra is not None:
        if not extra.is_file():
            raise ConfigError(
                f"MICROCLAW_SETTINGS_FILE: no such file: {extra}", key="MICROCLAW_SETTINGS_FILE"
            )
        files.append(str(extra))
    dyn = Dynaconf(
        settings_files=files,
        envvar_prefix=ENV_PREFIX,
        environments=False,
        load_dotenv=True,
        dotenv_path=str(env_file) if env_file else ".env",
        merge_enabled=True,
        nested_separator="__",
    )
    return {str(k).lower(): v for k, v in dyn.as_dict().items()}


def load_settings(*, settings_file: Path | None = None, env_file: Path | None = None) -> Settings:
    """Read, validate and freeze the configuration. Raises `ConfigError` naming the bad key."""
    raw = _read_raw(settings_file, env_file)

    assistant_name = str(raw.get("assistant_name") or "").strip()
    if not assistant_name:
        raise ConfigError("assistant_name: must not be empty", key="assistant_name")
    trigger = str(raw.get("trigger") or "").strip() or f"@{assistant_name}"
    timezone = _pick_timezone(str(raw.get("timezone") or "").strip())

    data_dir = Path(str(raw.get("data_dir") or "data")).expanduser().resolve()
    groups_dir_raw = str(raw.get("groups_dir") or "").strip()
    groups_dir = Path(groups_dir_raw).expanduser().resolve() if groups_dir_raw else data_dir / "groups"

    store_raw = _section(raw, "store")
    db_path_raw = str(store_raw.get("db_path") or "").strip()
    store = StoreSettings(
        db_path=Path(db_path_raw).expanduser().resolve() if db_path_raw else data_dir / "microclaw.db",
        busy_timeout_s=_number(store_raw, "store", "busy_timeout_s", minimum=0.1),
    )

    broker_raw = _section(raw, "broker")
    broker_url = str(broker_raw.get("url") or "").strip() or f"sqla+sqlite:///{data_dir / 'broker.db'}"
    if "://" not in broker_url:
        raise ConfigError(f"broker.url: not a URL: {broker_url!r}", key="broker.url")
    broker = BrokerSettings(
        url=broker_url,
        polling_interval=_number(broker_raw, "broker", "polling_interval", minimum=0.001),
        cleanup_interval_s=_number(broker_raw, "broker", "cleanup_interval_s", minimum=1),
    )

    router_raw = _section(raw, "router")
    delays = router_raw.get("retry_delays_s")
    if not isinstance(delays, list | tuple) or not all(isinstance(d, int | float) and d > 0 for d in delays):
        raise ConfigError(
            f"router.retry_delays_s: expected a list of positive numbers, got {delays!r}",
            key="router.retry_delays_s",
        )
    router = RouterSettings(
        concurrency=_number(router_raw, "router", "concurrency", minimum=1, integer=True),
        max_messages_per_prompt=_number(
            router_raw, "router", "max_messages_per_prompt", minimum=1, integer=True
        ),
        max_text_bytes=_number(router_raw, "router", "max_text_bytes", minimum=16, integer=True),
        lease_ttl_s=_number(router_raw, "router", "lease_ttl_s", minimum=1),
        retry_delays_s=tuple(float(d) for d in delays),
    )

    outbound_raw = _section(raw, "outbound")
    outbound = OutboundSettings(
        max_attempts=_number(outbound_raw, "outbound", "max_attempts", minimum=1, integer=True),
        retry_base_s=_number(outbound_raw, "outbound", "retry_base_s", minimum=0.01),
        max_retry_delay_s=_number(outbound_raw, "outbound", "max_retry_delay_s", minimum=0.01),
    )

    beat_raw = _section(raw, "beat")
    beat = BeatSettings(
        tick_interval_s=_number(beat_raw, "beat", "tick_interval_s", minimum=0.05),
        sweep_interval_s=_number(beat_raw, "beat", "sweep_interval_s", minimum=0.05),
        stale_after_s=_number(beat_raw, "beat", "stale_after_s", minimum=0.1),
    )

    agent_raw = _section(raw, "agent")
    provider = str(agent_raw.get("provider") or "").strip().lower()
    scripted_mode = str(agent_raw.get("scripted_mode") or "echo").strip().lower()
    if scripted_mode not in {"echo", "seen", "fail"}:
        raise ConfigError(
            f"agent.scripted_mode: expected 'echo', 'seen' or 'fail', got {scripted_mode!r}",
            key="agent.scripted_mode",
        )
    agent = _agent_settings(agent_raw, provider, scripted_mode)

    http_raw = _section(raw, "http")
    host = str(http_raw.get("host") or "127.0.0.1")
    if host not in {"127.0.0.1", "localhost", "::1"}:
        raise ConfigError(f"http.host: the control surface is localhost-only, got {host!r}", key="http.host")
    http = HttpSettings(host=host, port=_number(http_raw, "http", "port", minimum=0, integer=True))

    logging_raw = _section(raw, "logging")
    level = str(logging_raw.get("level") or "INFO").upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        raise ConfigError(f"logging.level: unknown level {level!r}", key="logging.level")
    log_format = str(logging_raw.get("format") or "json").lower()
    if log_format not in {"json", "text"}:
        raise ConfigError(
            f"logging.format: expected 'json' or 'text', got {log_format!r}", key="logging.format"
        )

    sandbox = _sandbox_settings(_section(raw, "sandbox"), data_dir)

    connectors_raw = _section(raw, "connectors")
    connectors = {
        str(name).lower(): {str(k).lower(): v for k, v in (value or {}).items()}
        for name, value in connectors_raw.items()
    }

    def _policy_path(key: str, default: str) -> Path:
        return Path(str(raw.get(key) or default)).expanduser().resolve()

    return Settings(
        sender_allowlist_path=_policy_path(
            "sender_allowlist_path", "~/.config/microclaw/sender-allowlist.json"
        ),
        mount_allowlist_path=_policy_path("mount_allowlist_path", "~/.config/microclaw/mount-allowlist.json"),
        assistant_name=assistant_name,
        trigger=trigger,
        timezone=timezone,
        data_dir=data_dir,
        groups_dir=groups_dir,
        store=store,
        broker=broker,
        router=router,
        outbound=outbound,
        beat=beat,
        agent=agent,
        http=http,
        logging=LoggingSettings(level=level, format=log_format),
        sandbox=sandbox,
        connectors=connectors,
    )


# --- [agent] --------------------------------------------------------------------------------

#: Environment variables each provider reads (the usual SDK names): key, base URL, model.
_PROVIDER_ENV = {
    "anthropic": ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "ANTHROPIC_MODEL"),
    "openai": ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_MODEL"),
}


def _agent_settings(raw: Mapping[str, Any], provider: str, scripted_mode: str) -> AgentSettings:
    """The ``[agent]`` table, with the provider's key, base URL and model from its usual env vars
    (settings win for base URL and model; the key only ever comes from the environment)."""

    def num(key: str, minimum: float, *, integer: bool = False) -> Any:
        return _number(raw, "agent", key, minimum=minimum, integer=integer)

    key_var, url_var, model_var = _PROVIDER_ENV.get(provider, ("", "", ""))
    env = os.environ
    base_url = str(raw.get("base_url") or "").strip() or (env.get(url_var, "").strip() if url_var else "")
    if base_url and "://" not in base_url:
        raise ConfigError(f"agent.base_url: not a URL: {base_url!r}", key="agent.base_url")
    model = str(raw.get("model") or "").strip() or (env.get(model_var, "").strip() if model_var else "")
    return AgentSettings(
        provider=provider,
        model=model,
        scripted_mode=scripted_mode,
        scripted_delay_s=num("scripted_delay_s", 0),
        base_url=base_url,
        api_key=env.get(key_var, "").strip() if key_var else "",
        max_tokens=num("max_tokens", 1, integer=True),
        max_steps=num("max_steps", 1, integer=True),
        run_timeout_s=num("run_timeout_s", 1),
        request_timeout_s=num("request_timeout_s", 1),
        max_retries=num("max_retries", 0, integer=True),
        max_tool_output_chars=num("max_tool_output_chars", 256, integer=True),
        history_token_budget=num("history_token_budget", 1000, integer=True),
        keep_recent_turns=num("keep_recent_turns", 2, integer=True),
        daily_token_budget=num("daily_token_budget", 0, integer=True),
        input_cost_per_mtok=num("input_cost_per_mtok", 0),
        output_cost_per_mtok=num("output_cost_per_mtok", 0),
    )


# --- [sandbox] ------------------------------------------------------------------------------

#: Unix socket paths are limited to 108 bytes; the sandbox puts ``<run_dir>/e/<12 hex>/proxy.sock``
#: under this directory, so it must stay short.
MAX_RUN_DIR_CHARS = 80
_SIZE_RE = re.compile(r"^\d+[kmg]?b?$", re.IGNORECASE)
_USER_RE = re.compile(r"^(\d+):(\d+)$")
_INSTANCE_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
_PREFIX_RE = re.compile(r"^[a-z][a-z0-9-]{0,19}$")
_ENV_REF_RE = re.compile(r"^env:([A-Za-z_][A-Za-z0-9_]*)$")
_HEADER_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
_HOST_RE = re.compile(r"^[A-Za-z0-9_.-]+$|^\[?[0-9A-Fa-f:.]+\]?$")


def _choice(raw: Mapping[str, Any], key: str, choices: tuple[str, ...]) -> str:
    value = str(raw.get(key) or choices[0]).strip().lower()
    if value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise ConfigError(f"sandbox.{key}: expected one of {allowed}, got {value!r}", key=f"sandbox.{key}")
    return value


def _matching(raw: Mapping[str, Any], key: str, pattern: re.Pattern[str], what: str) -> str:
    value = str(raw.get(key) if raw.get(key) is not None else "").strip()
    if not pattern.fullmatch(value):
        raise ConfigError(f"sandbox.{key}: expected {what}, got {value!r}", key=f"sandbox.{key}")
    return value


def _table(raw: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = raw.get(key) or {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"sandbox.{key}: expected a table, got {value!r}", key=f"sandbox.{key}")
    return value


def _network_allowlists(raw: Mapping[str, Any]) -> Mapping[str, tuple[str, ...]]:
    from microclaw.core.groups import is_valid_group_folder
    from microclaw.sandbox.egress import parse_destinations

    out: dict[str, tuple[str, ...]] = {}
    for group, entries in _table(raw, "network_allowlists").items():
        name = f"sandbox.network_allowlists.{group}"
        if not is_valid_group_folder(str(group)):
            raise ConfigError(f"{name}: {group!r} is not a valid group folder name", key=name)
        if not isinstance(entries, list | tuple) or not all(isinstance(e, str) for e in entries):
            raise ConfigError(f'{name}: expected a list of "host[:port]" strings, got {entries!r}', key=name)
        try:
            parse_destinations(list(entries))
        except ConfigError as exc:
            raise ConfigError(f"{name}: {exc}", key=name) from None
        out[str(group)] = tuple(e.strip() for e in entries)
    return MappingProxyType(out)


def _egress_credentials(raw: Mapping[str, Any]) -> Mapping[str, Mapping[str, str]]:
    """host -> header -> environment variable name; a literal value is refused, never kept."""
    out: dict[str, Mapping[str, str]] = {}
    for host, headers in _table(raw, "egress_credentials").items():
        name = f"sandbox.egress_credentials.{host}"
        if not _HOST_RE.fullmatch(str(host)):
            raise ConfigError(f"{name}: not a host name", key=name)
        if not isinstance(headers, Mapping) or not headers:
            raise ConfigError(f'{name}: expected a table of header = "env:VARIABLE"', key=name)
        refs: dict[str, str] = {}
        for header, value in headers.items():
            key = f"{name}.{header}"
            if not _HEADER_RE.fullmatch(str(header)):
                raise ConfigError(f"{key}: not a valid HTTP header name", key=key)
            match = _ENV_REF_RE.fullmatch(value.strip()) if isinstance(value, str) else None
            if match is None:
                # Never echo the value: it may be the very secret that must not live here.
                raise ConfigError(
                    f'{key}: must be "env:VARIABLE_NAME" (credential values come from the '
                    "environment, never from settings files)",
                    key=key,
                )
            refs[str(header)] = match.group(1)
        out[str(host).strip().lower().rstrip(".")] = MappingProxyType(refs)
    return MappingProxyType(out)


def _https_hosts(raw: Mapping[str, Any]) -> tuple[str, ...]:
    hosts = raw.get("egress_https_hosts") or []
    if not isinstance(hosts, list | tuple) or not all(
        isinstance(h, str) and _HOST_RE.fullmatch(h.strip()) for h in hosts
    ):
        raise ConfigError(
            f"sandbox.egress_https_hosts: expected a list of host names, got {hosts!r}",
            key="sandbox.egress_https_hosts",
        )
    return tuple(h.strip().lower().rstrip(".") for h in hosts)


def _run_dir(raw: Mapping[str, Any], data_dir: Path) -> Path:
    configured = str(raw.get("run_dir") or "").strip()
    if configured:
        path = Path(configured).expanduser().resolve()
        if len(str(path)) > MAX_RUN_DIR_CHARS:
            raise ConfigError(
                f"sandbox.run_dir: {str(path)!r} is longer than {MAX_RUN_DIR_CHARS} characters "
                "(Unix socket paths must stay short)",
                key="sandbox.run_dir",
            )
        return path
    path = data_dir / "sandbox"
    if len(str(path)) <= MAX_RUN_DIR_CHARS:
        return path
    # A deep data directory: fall back to a short per-user directory (the sandbox worker checks
    # that it owns it before putting sockets there).
    digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"microclaw-{os.getuid()}" / digest


def _sandbox_settings(raw: Mapping[str, Any], data_dir: Path) -> SandboxSettings:
    from microclaw.sandbox.base import parse_memory

    def num(key: str, minimum: float, integer: bool = False) -> Any:
        return _number(raw, "sandbox", key, minimum=minimum, integer=integer)

    for key in ("memory", "tmpfs_size"):
        value = str(raw.get(key) or "").strip()
        if not _SIZE_RE.fullmatch(value) or parse_memory(value) < 1024 * 1024:
            raise ConfigError(
                f'sandbox.{key}: expected a size of at least 1m like "512m" or "1g", got {value!r}',
                key=f"sandbox.{key}",
            )
    user = _matching(raw, "user", _USER_RE, 'a numeric "uid:gid"')
    if user.split(":", 1)[0] == "0":
        raise ConfigError("sandbox.user: containers never run as root (uid 0)", key="sandbox.user")
    exec_timeout = num("exec_timeout_s", 0.1)
    max_exec_timeout = num("max_exec_timeout_s", 0.1)
    if max_exec_timeout < exec_timeout:
        raise ConfigError(
            "sandbox.max_exec_timeout_s: must be >= sandbox.exec_timeout_s", key="sandbox.max_exec_timeout_s"
        )
    ca_file = str(raw.get("egress_ca_file") or "").strip()
    docker_url = str(raw.get("docker_url") or "").strip() or (
        os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    )
    result_url = str(raw.get("result_url") or "").strip() or f"db+sqlite:///{data_dir / 'sandbox-results.db'}"
    for key, url in (("docker_url", docker_url), ("result_url", result_url)):
        if "://" not in url:
            raise ConfigError(f"sandbox.{key}: not a URL: {url!r}", key=f"sandbox.{key}")
    image = str(raw.get("image") or "").strip()
    if not image:
        raise ConfigError("sandbox.image: must not be empty", key="sandbox.image")
    egress_port = num("egress_port", 1, integer=True)
    if egress_port > 65535:
        raise ConfigError(f"sandbox.egress_port: not a port: {egress_port}", key="sandbox.egress_port")
    return SandboxSettings(
        backend=_choice(raw, "backend", ("auto", "docker", "apple")),
        image=image,
        memory=str(raw["memory"]).strip(),
        cpus=num("cpus", 0.01),
        pids_limit=num("pids_limit", 8, integer=True),
        tmpfs_size=str(raw["tmpfs_size"]).strip(),
        user=user,
        idle_timeout_s=num("idle_timeout_s", 1),
        idle_check_interval_s=num("idle_check_interval_s", 0.5),
        exec_timeout_s=exec_timeout,
        max_exec_timeout_s=max_exec_timeout,
        max_output_bytes=num("max_output_bytes", 1024, integer=True),
        max_file_bytes=num("max_file_bytes", 1024, integer=True),
        network_allowlists=_network_allowlists(raw),
        egress_https_hosts=_https_hosts(raw),
        egress_credentials=_egress_credentials(raw),
        egress_ca_file=Path(ca_file).expanduser().resolve() if ca_file else None,
        egress_connect_timeout_s=num("egress_connect_timeout_s", 0.1),
        egress_port=egress_port,
        docker_url=docker_url,
        exec_transport=_choice(raw, "exec_transport", ("auto", "socket", "docker")),
        run_dir=_run_dir(raw, data_dir),
        instance=_matching(
            raw, "instance", _INSTANCE_RE, "1-32 of [a-z0-9-], starting with a letter or digit"
        ),
        label_prefix=_matching(raw, "label_prefix", _PREFIX_RE, "1-20 of [a-z0-9-], starting with a letter"),
        start_timeout_s=num("start_timeout_s", 1),
        api_timeout_s=num("api_timeout_s", 1),
        apple_cli=str(raw.get("apple_cli") or "container").strip(),
        readiness_interval_s=num("readiness_interval_s", 0.5),
        queue_timeout_s=num("queue_timeout_s", 1),
        result_url=result_url,
        result_expires_s=num("result_expires_s", 60),
    )
