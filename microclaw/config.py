"""Configuration: the only module that reads dynaconf, the environment and `.env`.

`load_settings()` layers `settings.toml` (the documented defaults), an optional file named by
``MICROCLAW_SETTINGS_FILE``, `.env` and ``MICROCLAW_*`` environment variables (``__`` nests),
validates everything at once and returns frozen, typed objects. Only entry points (the host,
the Celery app factory, the CLI) call it; library code receives the slice it needs through its
constructor. Every validation failure is a `ConfigError` whose ``key`` names the setting.

Each setting is declared once: as a field of its table's model below (type, default and
constraints), plus its commented line in ``settings.toml``. The model is both the validator and
the frozen object handed to constructors, so a new setting needs nothing else. A key that no
model declares is refused (an operator's typo must not be silently ignored), except under
``[connectors.*]``: each connector parses its own free-form slice. A few settings derive their
value from another setting or the environment when left empty; `_with_derived_values` fills
those in before validation.

This module does not open databases or sockets, and it never logs secrets.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, ClassVar, Literal

from dynaconf import Dynaconf
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from microclaw.core.groups import is_valid_group_folder
from microclaw.core.timezones import is_valid_timezone
from microclaw.errors import ConfigError
from microclaw.sandbox.egress import parse_destinations

DEFAULT_SETTINGS_FILE = Path(__file__).resolve().parent.parent / "settings.toml"
ENV_PREFIX = "MICROCLAW"
#: Keys dynaconf adds to what it read (its own options), not settings.
_LOADER_KEYS = ("load_dotenv", "settings_file")


# --- validation errors -> ConfigError -------------------------------------------------------

#: Error types whose input is never echoed: it may be a secret in the wrong place.
_NO_ECHO = {"extra_forbidden", "unexpected_keyword_argument", "missing"}
#: Settings (and everything below them) whose values are never echoed: a mistake there may
#: well be the secret itself, pasted where a reference belongs.
_NEVER_ECHOED = ("sandbox.egress_credentials", "agent.api_key", "voice.api_key")


def _expected(error: ErrorDetails) -> str:
    """What the setting should have been, in words."""
    ctx = error.get("ctx") or {}
    match error["type"]:
        case "greater_than_equal":
            return f"must be >= {ctx['ge']}"
        case "greater_than":
            return f"must be > {ctx['gt']}"
        case "less_than_equal":
            return f"must be <= {ctx['le']}"
        case "int_parsing" | "int_type" | "int_from_float":
            return "expected an integer"
        case "float_parsing" | "float_type":
            return "expected a number"
        case "bool_parsing" | "bool_type":
            return "expected true or false"
        case "string_too_short":
            return "must not be empty"
        case "literal_error":
            return f"expected one of {ctx['expected']}"
        case "dict_type" | "model_type" | "model_attributes_type":
            return "expected a table of settings"
        case "extra_forbidden" | "unexpected_keyword_argument":
            return "unknown setting (settings.toml lists every setting; check the spelling)"
        case "missing":
            return "missing (settings.toml declares every setting)"
        case "value_error":
            return error["msg"].removeprefix("Value error, ")
        case _:
            return error["msg"]


def _dotted(section: str, error: ErrorDetails) -> str:
    # List positions and pydantic's "[key]" marker (a bad table key) are not part of the name.
    parts = [p for p in error["loc"] if isinstance(p, str) and p != "[key]"]
    return ".".join([section, *parts] if section else parts) or "settings"


def config_error(exc: ValidationError, section: str = "") -> ConfigError:
    """The first failure in ``exc`` as a `ConfigError` naming the dotted setting."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    key = _dotted(section, first)
    message = f"{key}: {_expected(first)}"
    secret = any(key == name or key.startswith(f"{name}.") for name in _NEVER_ECHOED)
    if first["type"] not in _NO_ECHO and not secret:
        shown = repr(first["input"])
        message += f", got {shown if len(shown) <= 200 else shown[:200] + '...'}"
    others = sorted({_dotted(section, e) for e in errors[1:]} - {key})
    if others:
        message += f" (also invalid: {', '.join(others)})"
    return ConfigError(message, key=key)


class SettingsTable(BaseModel):
    """Base of every settings table: frozen, unknown keys refused, failures as `ConfigError`.

    ``section`` is the table's dotted name; it prefixes the key of every error, whether the
    table is validated inside `Settings` or constructed directly (as tests do).
    """

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        str_strip_whitespace=True,
        coerce_numbers_to_str=True,
        validate_default=True,
    )
    section: ClassVar[str] = ""

    @model_validator(mode="wrap")
    @classmethod
    def _raise_config_error(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(data)
        except ValidationError as exc:
            raise config_error(exc, cls.section) from None


# --- reusable field types -------------------------------------------------------------------


def _check(predicate: Callable[[Any], bool], expected: str) -> AfterValidator:
    """A validator that refuses values failing ``predicate`` with "expected ..."."""

    def check(value: Any) -> Any:
        if not predicate(value):
            raise ValueError(f"expected {expected}")
        return value

    return AfterValidator(check)


def _matching(pattern: re.Pattern[str], expected: str) -> AfterValidator:
    return _check(lambda value: pattern.fullmatch(value) is not None, expected)


def _case(convert: Callable[[str], str]) -> BeforeValidator:
    return BeforeValidator(lambda v: convert(v.strip()) if isinstance(v, str) else v)


def _resolve(path: Path) -> Path:
    return path.expanduser().resolve()


def _optional_path(value: Any) -> Path | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str | Path):
        raise ValueError("expected a path")
    return _resolve(Path(str(value).strip()))


def _frozen(value: Any) -> Any:
    """Nested mappings made read-only (the settings object is shared by everyone)."""
    if isinstance(value, Mapping):
        return MappingProxyType({k: _frozen(v) for k, v in value.items()})
    return value


def _thawed(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _thawed(v) for k, v in value.items()}
    return value


NonEmpty = Annotated[str, Field(min_length=1)]
Lower = _case(str.lower)
ResolvedPath = Annotated[Path, _check(lambda p: str(p) not in ("", "."), "a path"), AfterValidator(_resolve)]
OptionalPath = Annotated[Path | None, PlainValidator(_optional_path)]
Url = Annotated[str, _check(lambda u: "://" in u, "a URL (scheme://...)")]
OptionalUrl = Annotated[str, _check(lambda u: not u or "://" in u, "a URL (scheme://...) or empty")]
Seconds = Annotated[float, Field(gt=0)]


# --- tables ---------------------------------------------------------------------------------


class StoreSettings(SettingsTable):
    section: ClassVar[str] = "store"

    db_path: ResolvedPath = Path("data/microclaw.db")
    busy_timeout_s: float = Field(30.0, ge=0.1)

    @property
    def url(self) -> str:
        return f"sqlite:///{self.db_path}"


class BrokerSettings(SettingsTable):
    section: ClassVar[str] = "broker"

    url: Url = "sqla+sqlite:///data/broker.db"
    polling_interval: float = Field(1.0, ge=0.001)
    cleanup_interval_s: float = Field(300.0, ge=1)

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqla+sqlite")


class RouterSettings(SettingsTable):
    section: ClassVar[str] = "router"

    concurrency: int = Field(5, ge=1)
    max_messages_per_prompt: int = Field(10, ge=1)
    max_text_bytes: int = Field(65536, ge=16)
    lease_ttl_s: float = Field(60.0, ge=1)
    retry_delays_s: tuple[Seconds, ...] = (5, 10, 20, 40, 80)


class OutboundSettings(SettingsTable):
    section: ClassVar[str] = "outbound"

    max_attempts: int = Field(8, ge=1)
    retry_base_s: float = Field(2.0, ge=0.01)
    max_retry_delay_s: float = Field(300.0, ge=0.01)


class BeatSettings(SettingsTable):
    section: ClassVar[str] = "beat"

    tick_interval_s: float = Field(1.0, ge=0.05)
    sweep_interval_s: float = Field(5.0, ge=0.05)
    stale_after_s: float = Field(10.0, ge=0.1)


class SchedulerSettings(SettingsTable):
    """Limits on scheduled tasks (NanoClaw has none; see docs/security.md)."""

    section: ClassVar[str] = "scheduler"

    min_interval_s: float = Field(60.0, ge=0)
    max_active_tasks_per_group: int = Field(50, ge=0)


class AgentSettings(SettingsTable):
    """The ``[agent]`` table plus the provider's credentials from the environment.

    ``api_key`` comes from ``ANTHROPIC_API_KEY`` / ``OPENAI_API_KEY`` (never from settings.toml)
    and is left out of ``repr`` so it never reaches a log line. ``provider`` is checked by the
    provider registry, which knows the names.
    """

    section: ClassVar[str] = "agent"

    provider: Annotated[str, Lower] = ""
    model: str = ""
    scripted_mode: Annotated[Literal["echo", "seen", "fail"], Lower] = "echo"
    scripted_delay_s: float = Field(0.0, ge=0)
    base_url: OptionalUrl = ""
    api_key: str = Field("", repr=False)
    max_tokens: int = Field(4096, ge=1)
    max_steps: int = Field(20, ge=1)
    run_timeout_s: float = Field(600.0, ge=1)
    request_timeout_s: float = Field(120.0, ge=1)
    max_retries: int = Field(4, ge=0)
    max_tool_output_chars: int = Field(20_000, ge=256)
    history_token_budget: int = Field(60_000, ge=1000)
    keep_recent_turns: int = Field(8, ge=2)
    daily_token_budget: int = Field(0, ge=0)
    input_cost_per_mtok: float = Field(0.0, ge=0)
    output_cost_per_mtok: float = Field(0.0, ge=0)


class HttpSettings(SettingsTable):
    section: ClassVar[str] = "http"

    host: Annotated[
        str, _check(lambda h: h in {"127.0.0.1", "localhost", "::1"}, "a loopback address (localhost only)")
    ] = "127.0.0.1"
    port: int = Field(8765, ge=0, le=65535)

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host  # ::1 -> [::1]
        return f"http://{host}:{self.port}"


LogLevel = Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], _case(str.upper)]


class LoggingSettings(SettingsTable):
    section: ClassVar[str] = "logging"

    level: LogLevel = "INFO"
    # "auto": readable text on a terminal, JSON lines otherwise; or force "json" / "text".
    format: Annotated[Literal["auto", "json", "text"], Lower] = "auto"
    # Per process role (host, worker, sandbox, outbound, beat): overrides `level` for that role.
    levels: Annotated[
        Mapping[Literal["host", "worker", "sandbox", "outbound", "beat"], LogLevel],
        BeforeValidator(lambda v: {str(k).lower(): x for k, x in v.items()} if isinstance(v, Mapping) else v),
        AfterValidator(_frozen),
        PlainSerializer(_thawed),
    ] = Field(default_factory=dict)


class GatewaySettings(SettingsTable):
    """The device gateway (``microclaw-gateway run``): one mTLS WebSocket port for ESP32-S3
    terminals, pairing limits and session keepalive (docs/device-protocol.md)."""

    section: ClassVar[str] = "gateway"

    # Off: the Procfile's gateway line (``run --if-enabled``) idles without serving.
    enabled: bool = False
    host: NonEmpty = "0.0.0.0"
    port: int = Field(8766, ge=0, le=65535)
    # Names and addresses devices use to reach the gateway (the server certificate's SANs).
    sans: tuple[NonEmpty, ...] = ("localhost", "127.0.0.1")
    code_ttl_s: float = Field(300.0, gt=0)
    token_ttl_s: float = Field(120.0, gt=0)
    pair_begin_per_minute: int = Field(6, ge=1)
    max_open_pairings: int = Field(50, ge=1)
    cert_days: int = Field(3650, ge=1)
    handshake_timeout_s: float = Field(10.0, gt=0)
    preauth_timeout_s: float = Field(30.0, gt=0)
    preauth_max_bytes: int = Field(4096, ge=1024)
    max_preauth_connections: int = Field(64, ge=1)
    hello_timeout_s: float = Field(10.0, gt=0)
    max_frame_bytes: int = Field(131072, ge=4096)
    ping_interval_s: float = Field(20.0, gt=0)
    ping_timeout_s: float = Field(20.0, gt=0)
    poll_interval_s: float = Field(0.05, gt=0)
    revocation_check_s: float = Field(1.0, gt=0)
    replay_batch: int = Field(200, ge=1)


# --- [ota] ----------------------------------------------------------------------------------


class OtaSettings(SettingsTable):
    """Signed OTA for device firmware and model bundles (``microclaw ota``; the gateway serves
    them): where the signing key lives, and when a rollout halts by itself."""

    section: ClassVar[str] = "ota"

    # The ed25519 signing key: outside the project and the data directory (publishers need it,
    # the gateway never does).
    key_file: ResolvedPath = Path("~/.config/microclaw/ota-ed25519.key")
    # Prefix of the image URL in manifests; empty: a path on the gateway the device talks to.
    base_url: OptionalUrl = ""
    max_image_bytes: int = Field(16 * 1024 * 1024, ge=1)
    halt_failure_rate: float = Field(0.2, ge=0, le=1)
    halt_min_results: int = Field(5, ge=1)
    max_boot_failures: int = Field(0, ge=0)
    max_confirm_miss_rate: float = Field(0.2, ge=0, le=1)
    max_latency_ms: float = Field(2000.0, gt=0)


# --- [voice] --------------------------------------------------------------------------------


class VoiceSettings(SettingsTable):
    """Voice turns on devices (the gateway): speech-to-text for audio between ``listen.start``
    and ``listen.stop``, text-to-speech for replies (docs/device-protocol.md, "Voice").

    ``api_key`` comes from ``OPENAI_API_KEY`` (never from settings.toml) and is left out of
    ``repr``; it is used only by the ``openai`` providers."""

    section: ClassVar[str] = "voice"

    stt: Annotated[Literal["off", "pocketsphinx", "openai"], Lower] = "pocketsphinx"
    tts: Annotated[Literal["off", "espeak", "openai"], Lower] = "espeak"
    max_listen_s: float = Field(30.0, gt=0, le=300)
    max_active_listens: int = Field(16, ge=1)
    stt_workers: int = Field(1, ge=1, le=16)
    tts_concurrency: int = Field(2, ge=1, le=64)
    speak_max_age_s: float = Field(120.0, ge=0)
    max_speak_chars: int = Field(1000, ge=1)
    output_sample_rate: int = Field(16000, ge=8000, le=48000)
    chunk_bytes: int = Field(4096, ge=256, le=65536)
    espeak_voice: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_+-]{0,39}$")] = "en-us"
    espeak_speed: int = Field(160, ge=80, le=450)
    stt_timeout_s: float = Field(60.0, gt=0)
    base_url: OptionalUrl = ""
    api_key: str = Field("", repr=False)
    stt_model: NonEmpty = "whisper-1"
    language: str = ""
    tts_model: NonEmpty = "tts-1"
    tts_voice: NonEmpty = "alloy"
    request_timeout_s: float = Field(60.0, ge=1)
    max_retries: int = Field(2, ge=0)


# --- [sandbox] ------------------------------------------------------------------------------

#: Unix socket paths are limited to 108 bytes; the sandbox puts ``<run_dir>/e/<12 hex>/proxy.sock``
#: under this directory, so it must stay short.
MAX_RUN_DIR_CHARS = 80
_SIZE_RE = re.compile(r"^(\d+)([kmg]?)b?$", re.IGNORECASE)
_USER_RE = re.compile(r"^(\d+):(\d+)$")
_INSTANCE_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
_PREFIX_RE = re.compile(r"^[a-z][a-z0-9-]{0,19}$")
_ENV_REF_RE = re.compile(r"^env:([A-Za-z_][A-Za-z0-9_]*)$")
_HEADER_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
_HOST_RE = re.compile(r"^[A-Za-z0-9_.-]+$|^\[?[0-9A-Fa-f:.]+\]?$")


def parse_size(value: str | int) -> int:
    """``"512m"`` -> bytes. Accepts ints (bytes) and k/m/g suffixes (powers of 1024).

    Raises ValueError for anything else.
    """
    if isinstance(value, int):
        return value
    match = _SIZE_RE.fullmatch(value.strip())
    if not match:
        raise ValueError(f"invalid size {value!r}")
    number, unit = int(match.group(1)), match.group(2).lower()
    return number * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit]


def _is_size(value: str) -> bool:
    return _SIZE_RE.fullmatch(value) is not None and parse_size(value) >= 1024 * 1024


def _container_user(value: str) -> str:
    if not _USER_RE.fullmatch(value):
        raise ValueError('expected a numeric "uid:gid"')
    if value.split(":", 1)[0] == "0":
        raise ValueError("containers never run as root (uid 0)")
    return value


def _short_dir(path: Path) -> Path:
    if len(str(path)) > MAX_RUN_DIR_CHARS:
        raise ValueError(f"longer than {MAX_RUN_DIR_CHARS} characters (Unix socket paths must stay short)")
    return path


def _destinations(entries: tuple[str, ...]) -> tuple[str, ...]:
    try:
        parse_destinations(entries)
    except ConfigError as exc:  # its key is the whole table; pydantic adds the group's
        raise ValueError(str(exc)) from None
    return entries


def _group_folder(name: str) -> str:
    if not is_valid_group_folder(name):
        raise ValueError("not a valid group folder name")
    return name


def _host(name: str) -> str:
    if not _HOST_RE.fullmatch(name):
        raise ValueError("not a host name")
    return name.lower().rstrip(".")


def _env_reference(value: Any) -> str:
    """``"env:NAME"`` -> ``NAME``. The error never shows the value: it may be the very secret."""
    match = _ENV_REF_RE.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise ValueError(
            'must be "env:VARIABLE_NAME" (credential values come from the environment, never from '
            "settings files)"
        )
    return match.group(1)


Size = Annotated[str, _check(_is_size, 'a size of at least 1m like "512m" or "1g"')]
HostName = Annotated[str, AfterValidator(_host)]
HeaderName = Annotated[str, _matching(_HEADER_RE, "a valid HTTP header name")]
InstanceName = Annotated[str, _matching(_INSTANCE_RE, "1-32 of [a-z0-9-], starting with a letter or digit")]
LabelPrefix = Annotated[str, _matching(_PREFIX_RE, "1-20 of [a-z0-9-], starting with a letter")]
EnvReference = Annotated[str, PlainValidator(_env_reference)]
GroupFolder = Annotated[str, AfterValidator(_group_folder)]
Destinations = Annotated[tuple[str, ...], AfterValidator(_destinations)]
#: group -> destinations, read-only.
NetworkAllowlists = Annotated[
    Mapping[GroupFolder, Destinations], AfterValidator(_frozen), PlainSerializer(_thawed)
]
#: host -> header -> environment variable name, read-only.
CredentialReferences = Annotated[
    Mapping[HostName, Annotated[Mapping[HeaderName, EnvReference], Field(min_length=1)]],
    AfterValidator(_frozen),
    PlainSerializer(_thawed),
]


class SandboxSettings(SettingsTable):
    """The ``[sandbox]`` table. ``egress_credentials`` holds environment variable *names*
    (host -> header -> variable); the values are read by the sandbox worker's entry point
    (`microclaw.runtime.wiring.sandbox_config`), so no secret ever sits in this object.

    The sandbox itself receives `microclaw.sandbox.base.SandboxConfig`: these fields plus the
    host facts and the resolved credentials, so a field added here reaches it unchanged.
    """

    section: ClassVar[str] = "sandbox"

    backend: Annotated[Literal["auto", "docker", "apple"], Lower] = "auto"
    image: NonEmpty = "microclaw-sandbox:latest"
    memory: Size = "512m"
    cpus: float = Field(1.0, ge=0.01)
    pids_limit: int = Field(256, ge=8)
    tmpfs_size: Size = "64m"
    user: Annotated[str, AfterValidator(_container_user)] = "1000:1000"
    idle_timeout_s: float = Field(1800.0, ge=1)
    idle_check_interval_s: float = Field(60.0, ge=0.5)
    exec_timeout_s: float = Field(120.0, ge=0.1)
    max_exec_timeout_s: float = Field(3600.0, ge=0.1)
    max_output_bytes: int = Field(1_000_000, ge=1024)
    max_file_bytes: int = Field(10 * 1024 * 1024, ge=1024)
    group_quota: Size = "1g"
    network_allowlists: NetworkAllowlists = Field(default_factory=dict)
    egress_https_hosts: tuple[HostName, ...] = ()
    egress_credentials: CredentialReferences = Field(default_factory=dict)
    egress_ca_file: OptionalPath = None
    egress_connect_timeout_s: float = Field(10.0, ge=0.1)
    egress_idle_timeout_s: float = Field(300.0, ge=0.05)
    egress_max_connections: int = Field(256, ge=1)
    egress_max_connections_per_group: int = Field(32, ge=1)
    egress_port: int = Field(3128, ge=1, le=65535)
    docker_url: Url = "unix:///var/run/docker.sock"
    exec_transport: Annotated[Literal["auto", "socket", "docker"], Lower] = "auto"
    # The default is not resolved: its length would depend on the working directory.
    run_dir: Annotated[ResolvedPath, AfterValidator(_short_dir)] = Field(
        Path("data/sandbox"), validate_default=False
    )
    instance: InstanceName = "default"
    label_prefix: LabelPrefix = "microclaw"
    start_timeout_s: float = Field(30.0, ge=1)
    api_timeout_s: float = Field(30.0, ge=1)
    apple_cli: NonEmpty = "container"
    readiness_interval_s: float = Field(15.0, ge=0.5)
    queue_timeout_s: float = Field(60.0, ge=1)
    result_url: Url = "db+sqlite:///data/sandbox-results.db"
    result_expires_s: float = Field(3600.0, ge=60)

    @field_validator("max_exec_timeout_s")
    @classmethod
    def _not_below_exec_timeout(cls, value: float, info: ValidationInfo) -> float:
        if value < info.data.get("exec_timeout_s", 0):
            raise ValueError("must be >= sandbox.exec_timeout_s")
        return value

    @property
    def memory_bytes(self) -> int:
        """The memory limit in bytes."""
        return parse_size(self.memory)

    @property
    def group_quota_bytes(self) -> int:
        """The group folder's size limit in bytes."""
        return parse_size(self.group_quota)

    @property
    def uid_gid(self) -> tuple[int, int]:
        """The numeric container user."""
        uid, gid = self.user.split(":", 1)
        return int(uid), int(gid)


def _lower_keys(value: Any) -> Any:
    if not isinstance(value, Mapping):
        return value
    return {
        str(name).lower(): {str(k).lower(): v for k, v in options.items()}
        if isinstance(options, Mapping)
        else options
        for name, options in value.items()
    }


class Settings(SettingsTable):
    """Everything MicroClaw reads from configuration, validated and frozen."""

    assistant_name: NonEmpty
    trigger: NonEmpty
    timezone: Annotated[str, _check(is_valid_timezone, "a valid IANA timezone (e.g. 'Europe/Berlin', 'UTC')")]
    data_dir: ResolvedPath
    groups_dir: ResolvedPath
    store: StoreSettings
    broker: BrokerSettings
    router: RouterSettings
    outbound: OutboundSettings
    beat: BeatSettings
    scheduler: SchedulerSettings
    agent: AgentSettings
    http: HttpSettings
    logging: LoggingSettings
    sandbox: SandboxSettings
    gateway: GatewaySettings = Field(default_factory=lambda: GatewaySettings.model_validate({}))
    ota: OtaSettings = Field(default_factory=lambda: OtaSettings.model_validate({}))
    voice: VoiceSettings = Field(default_factory=lambda: VoiceSettings.model_validate({}))
    # Policy files live outside the project and are never mounted into containers.
    sender_allowlist_path: ResolvedPath = Path("~/.config/microclaw/sender-allowlist.json")
    mount_allowlist_path: ResolvedPath = Path("~/.config/microclaw/mount-allowlist.json")
    # Raw per-connector slices (``{"local": {...}, "telegram": {...}}``), free-form: each
    # connector's ``from_settings`` turns its own slice into typed values and may read its
    # secret env vars.
    connectors: Annotated[
        Mapping[str, Mapping[str, Any]],
        BeforeValidator(_lower_keys),
        AfterValidator(_frozen),
        PlainSerializer(_thawed),
    ] = Field(default_factory=dict)

    @property
    def pidfile(self) -> Path:
        return self.data_dir / "microclaw-host.pid"

    @property
    def http_token_path(self) -> Path:
        """The per-install secret every client of the host's HTTP surface sends (0600; the host
        creates it at first start)."""
        return self.data_dir / "http-token"


# --- loading --------------------------------------------------------------------------------


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
    # Tables merge key by key (a file or variable that sets one key keeps the others); a list or
    # any other value replaces the one before it. Dynaconf's own merging appends lists, so
    # MICROCLAW_ROUTER__RETRY_DELAYS_S="[1,1]" would have extended the defaults: each source is
    # read on its own and merged here.
    merged: dict[str, Any] = {}
    for path in files:
        one = Dynaconf(settings_files=[path], envvar_prefix=_NO_ENV, environments=False, load_dotenv=False)
        _merge(merged, _lowered(one.as_dict()))
    env = Dynaconf(
        settings_files=[],
        envvar_prefix=ENV_PREFIX,
        environments=False,
        load_dotenv=True,
        dotenv_path=str(env_file) if env_file else ".env",
        nested_separator="__",
    )
    _merge(merged, _lowered(env.as_dict()))
    raw = merged
    return {k: v for k, v in raw.items() if k not in _LOADER_KEYS}


# An environment prefix no variable has: the per-file readers must not see the environment.
_NO_ENV = "MICROCLAW_SETTINGS_FILE_ONLY_NO_ENV"


def _lowered(data: Mapping[Any, Any]) -> dict[str, Any]:
    """Top-level keys and table keys lower-case (env variables arrive upper-case)."""
    return {str(k).lower(): _lower_top(v) if isinstance(v, Mapping) else v for k, v in data.items()}


def _merge(into: dict[str, Any], update: Mapping[str, Any]) -> None:
    """Tables merge recursively, matching keys case-insensitively as Dynaconf does (variables
    arrive upper-case); any other value (lists included) replaces the earlier one."""
    existing = {str(k).lower(): k for k in into}
    for given, value in update.items():
        key = existing.get(str(given).lower(), given)
        old = into.get(key)
        if isinstance(old, dict) and isinstance(value, Mapping):
            nested = dict(old)
            _merge(nested, {str(k): v for k, v in value.items()})
            into[key] = nested
        else:
            into[key] = dict(value) if isinstance(value, Mapping) else value


def _lower_top(table: Mapping[Any, Any]) -> dict[str, Any]:
    return {str(k).lower(): v for k, v in table.items()}


def load_settings(*, settings_file: Path | None = None, env_file: Path | None = None) -> Settings:
    """Read, validate and freeze the configuration. Raises `ConfigError` naming the bad key."""
    raw = _with_derived_values(_read_raw(settings_file, env_file), os.environ)
    return Settings.model_validate(raw)


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _with_derived_values(raw: dict[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """Fill in the settings whose empty value means "derive it" (see their settings.toml lines).

    A table that is not a table is left alone for validation to report.
    """
    raw = {k: dict(v) if isinstance(v, Mapping) else v for k, v in raw.items()}

    def fill(table: str | None, key: str, default: Callable[[], Any]) -> None:
        target = raw if table is None else raw.setdefault(table, {})
        if isinstance(target, dict) and _empty(target.get(key)):
            target[key] = default()

    fill(None, "data_dir", lambda: "data")
    data_dir = _resolve(Path(str(raw["data_dir"]).strip()))
    raw["data_dir"] = data_dir
    fill(None, "trigger", lambda: f"@{str(raw.get('assistant_name') or '').strip()}")
    fill(None, "timezone", lambda: _default_timezone(env))
    fill(None, "groups_dir", lambda: data_dir / "groups")
    fill("store", "db_path", lambda: data_dir / "microclaw.db")
    fill("broker", "url", lambda: f"sqla+sqlite:///{data_dir / 'broker.db'}")
    fill("sandbox", "docker_url", lambda: env.get("DOCKER_HOST") or "unix:///var/run/docker.sock")
    fill("sandbox", "run_dir", lambda: _run_dir(data_dir))
    fill("sandbox", "result_url", lambda: f"db+sqlite:///{data_dir / 'sandbox-results.db'}")

    agent = raw.get("agent")
    if isinstance(agent, dict):
        if "api_key" in agent:  # never echoed: it is a secret in the wrong place
            raise ConfigError(
                "agent.api_key: API keys come only from the environment (ANTHROPIC_API_KEY, "
                "OPENAI_API_KEY), never from settings",
                key="agent.api_key",
            )
        provider = str(agent.get("provider") or "").strip().lower()
        key_var, url_var, model_var = _PROVIDER_ENV.get(provider, ("", "", ""))
        # Settings win for base URL and model; the key only ever comes from the environment.
        fill("agent", "base_url", lambda: env.get(url_var, "").strip() if url_var else "")
        fill("agent", "model", lambda: env.get(model_var, "").strip() if model_var else "")
        agent["api_key"] = env.get(key_var, "").strip() if key_var else ""
    voice = raw.get("voice")
    if isinstance(voice, dict) and "api_key" in voice:
        raise ConfigError(
            "voice.api_key: API keys come only from the environment (OPENAI_API_KEY), never from settings",
            key="voice.api_key",
        )
    if voice is None or isinstance(voice, dict):
        voice = raw.setdefault("voice", {})
        fill("voice", "base_url", lambda: env.get("OPENAI_BASE_URL", "").strip())
        voice["api_key"] = env.get("OPENAI_API_KEY", "").strip()
    return raw


#: Environment variables each provider reads (the usual SDK names): key, base URL, model.
_PROVIDER_ENV = {
    "anthropic": ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "ANTHROPIC_MODEL"),
    "openai": ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_MODEL"),
}


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


def _default_timezone(env: Mapping[str, str]) -> str:
    for candidate in (env.get("TZ"), _system_timezone()):
        if candidate and is_valid_timezone(candidate):
            return candidate
    return "UTC"


def _run_dir(data_dir: Path) -> Path:
    """``<data_dir>/sandbox``, or a short per-user directory when that is too long."""
    path = data_dir / "sandbox"
    if len(str(path)) <= MAX_RUN_DIR_CHARS:
        return path
    # A deep data directory: fall back to a short per-user directory (the sandbox worker checks
    # that it owns it before putting sockets there).
    digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"microclaw-{os.getuid()}" / digest
