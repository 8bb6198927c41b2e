"""``microclaw-host doctor``: check every precondition of a working install, each with its fix.

`run_checks()` returns one `Check` per precondition (Python, data dir, database integrity and
schema, broker, Docker, sandbox image and a test exec, each enabled connector's credentials,
the model provider, clock, free disk, allowlist files, and with the device gateway on, its offline
voice engines); ``ok`` is False for a failure, None for
"not applicable / not checked". Nothing is created, migrated or fixed: the checks only read,
and the only thing started is one throw-away container (no network) for the test exec.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import sqlite3
import stat
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from microclaw.config import Settings
from microclaw.connectors.base import BaseConnector

logger = logging.getLogger(__name__)
MIN_FREE_BYTES = 500 * 1024 * 1024
# No clock on a working machine is before this (the project did not exist).
EARLIEST_SANE = 1_735_689_600  # 2025-01-01T00:00:00Z
PROVIDER_DEFAULT_URLS = {"anthropic": "https://api.anthropic.com", "openai": "https://api.openai.com/v1"}
IMAGE_FIX = (
    "build it: `docker build -t {image} sandbox-image/` (needs a registry), or offline "
    "`sandbox-image/build-test-image.sh {image}`; `make run` does this by itself"
)


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool | None  # None: not applicable / not checked
    detail: str
    fix: str = ""

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def failed(checks: list[Check]) -> list[Check]:
    return [c for c in checks if c.ok is False]


def run_checks(settings: Settings) -> list[Check]:
    checks = [_python(), _data_dir(settings), _database(settings), _broker(settings)]
    checks += _docker(settings)
    checks += _connectors(settings)
    checks += [_provider(settings), _clock(settings), _disk(settings)]
    checks += _allowlists(settings)
    checks += _gateway(settings)
    return checks


def _gateway(settings: Settings) -> list[Check]:
    """The device gateway's switch and, when it serves, the offline voice engines it would use."""
    g, v = settings.gateway, settings.voice
    if not g.enabled:
        return [
            Check(
                "gateway",
                None,
                "off ([gateway] enabled = false): devices cannot connect",
                "set [gateway] enabled = true and restart to use ESP32-S3 terminals",
            )
        ]
    checks = [Check("gateway", True, f"on: devices connect to {g.host}:{g.port}")]
    if v.stt == "pocketsphinx":
        import importlib.util

        found = importlib.util.find_spec("pocketsphinx") is not None
        checks.append(
            Check(
                "speech to text",
                found,
                "pocketsphinx (offline)" + ("" if found else ": not installed"),
                ""
                if found
                else "`pip install pocketsphinx` (a MicroClaw dependency: reinstall with `make install`)",
            )
        )
    if v.tts == "espeak":
        from microclaw.gateway.speech.espeak import EspeakTTS

        tts = EspeakTTS.from_settings(v)
        found = tts.available
        checks.append(
            Check(
                "text to speech",
                found,
                f"{tts.program} (offline)" + ("" if found else " is not installed"),
                ""
                if found
                else "`apt-get install espeak-ng` (Debian, Ubuntu); until then device replies are text",
            )
        )
    return checks


def _python() -> Check:
    v = sys.version_info
    if v < (3, 11):
        return Check("python", False, f"Python {v.major}.{v.minor}", "install Python 3.11 or newer")
    return Check("python", True, f"Python {v.major}.{v.minor}.{v.micro} at {sys.executable}")


def _data_dir(settings: Settings) -> Check:
    path = settings.data_dir
    fix = f"`chmod 700 {path}` (it holds the token, the databases and host.log)"
    try:
        st = path.stat()
    except FileNotFoundError:
        return Check(
            "data dir", False, f"{path} does not exist", "start the host once, or `microclaw-host migrate`"
        )
    if st.st_uid != os.getuid():
        return Check("data dir", False, f"{path} is owned by uid {st.st_uid}", f"`chown -R $USER {path}`")
    if stat.S_IMODE(st.st_mode) & 0o077:
        return Check(
            "data dir", False, f"{path} is mode {stat.S_IMODE(st.st_mode):o}: others can read it", fix
        )
    if not os.access(path, os.W_OK | os.X_OK):
        return Check("data dir", False, f"{path} is not writable", f"`chmod u+rwx {path}`")
    return Check("data dir", True, f"{path} (mode 700)")


def _database(settings: Settings) -> Check:
    path = settings.store.db_path
    if not path.exists():
        return Check("database", False, f"{path} does not exist", "`microclaw-host migrate`")
    try:
        with _readonly(path) as conn:
            verdict = conn.execute("PRAGMA integrity_check").fetchone()[0]
            if verdict != "ok":
                return Check(
                    "database",
                    False,
                    f"integrity_check: {verdict}",
                    f"stop everything, keep a copy of {path}, restore a backup "
                    "(or `sqlite3 microclaw.db .recover`)",
                )
            row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.DatabaseError as exc:
        return Check("database", False, f"{path}: {exc}", f"restore {path} from a backup")
    current = row[0] if row else None
    head = _alembic_head()
    if current != head:
        return Check(
            "database",
            False,
            f"schema at {current or 'nothing'}, code expects {head}",
            "`microclaw-host migrate`",
        )
    return Check("database", True, f"{path}: integrity ok, schema at head {head}")


def _alembic_head() -> str | None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from microclaw.store.db import ALEMBIC_DIR

    cfg = Config()
    cfg.set_main_option("script_location", str(ALEMBIC_DIR))
    return ScriptDirectory.from_config(cfg).get_current_head()


@contextmanager
def _readonly(path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True, timeout=5)
    try:
        yield conn
    finally:
        conn.close()


def _broker(settings: Settings) -> Check:
    url = settings.broker.url
    if settings.broker.is_sqlite:
        from microclaw.broker.transport import sqlite_path

        path = sqlite_path(url)
        if not path.exists():
            return Check("broker", None, f"{path} not created yet (the first worker creates it)")
        try:
            with _readonly(path) as conn:
                verdict = conn.execute("PRAGMA quick_check").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            verdict = str(exc)
        if verdict != "ok":
            return Check(
                "broker",
                False,
                f"{path}: {verdict}",
                f"stop everything and delete {path} (queued wake-ups only)",
            )
        return Check("broker", True, f"SQLite {path}")
    import kombu

    try:
        with kombu.Connection(url, connect_timeout=3) as conn:
            conn.ensure_connection(max_retries=1)
    except Exception as exc:
        return Check(
            "broker", False, f"{url}: {type(exc).__name__}: {exc}", "start the broker or fix broker.url"
        )
    return Check("broker", True, url)


def _docker(settings: Settings) -> list[Check]:
    sb = settings.sandbox
    if sb.backend == "apple" or (sb.backend == "auto" and sys.platform == "darwin"):
        return [Check("docker", None, "the apple backend is used; not checked here")]
    import docker
    from docker.errors import DockerException, ImageNotFound

    try:
        client = docker.DockerClient(base_url=sb.docker_url, timeout=10)
        client.ping()
    except DockerException as exc:
        return [
            Check(
                "docker",
                False,
                f"{sb.docker_url}: {exc}",
                "start Docker (`sudo systemctl start docker`) and add your user to the docker group",
            )
        ]
    checks = [Check("docker", True, f"reachable at {sb.docker_url}")]
    try:
        client.images.get(sb.image)
    except ImageNotFound:
        checks.append(
            Check("sandbox image", False, f"{sb.image} not found", IMAGE_FIX.format(image=sb.image))
        )
        return checks
    checks.append(Check("sandbox image", True, sb.image))
    try:
        client.containers.run(sb.image, ["true"], network_mode="none", remove=True, user=sb.user or None)
    except DockerException as exc:
        checks.append(
            Check(
                "sandbox exec", False, f"`true` in {sb.image} failed: {exc}", IMAGE_FIX.format(image=sb.image)
            )
        )
    else:
        checks.append(Check("sandbox exec", True, f"`true` ran in {sb.image} without network"))
    finally:
        client.close()
    return checks


def _connectors(settings: Settings) -> list[Check]:
    from microclaw.runtime.wiring import build_connectors

    checks = []
    for boot in build_connectors(settings):
        name = f"connector {boot.name}"
        if boot.state == "error":
            checks.append(
                Check(name, False, boot.detail, "fix its [connectors.*] settings or its .env variables")
            )
            continue
        if boot.connector is None:
            continue
        try:
            said = asyncio.run(_check_connector(boot.connector))
        except Exception as exc:
            checks.append(
                Check(
                    name,
                    False,
                    f"{type(exc).__name__}: {exc}",
                    "check its credentials in .env and the network",
                )
            )
            continue
        checks.append(Check(name, True if said else None, said or "configured (no cheap remote check)"))
    return checks


async def _check_connector(connector: BaseConnector) -> str | None:
    try:
        return await asyncio.wait_for(connector.check(), timeout=15)
    finally:
        try:
            await connector.close()
        except Exception:  # closing is best effort
            logger.debug("closing %s after its check failed", connector.name, exc_info=True)


def _provider(settings: Settings) -> Check:
    agent = settings.agent
    if not agent.provider:
        return Check("provider", None, "no agent provider configured (replies are setup help)")
    if agent.provider == "scripted":
        return Check("provider", True, "scripted (offline)")
    url = agent.base_url or PROVIDER_DEFAULT_URLS.get(agent.provider, "")
    if not url:
        return Check("provider", None, f"{agent.provider}: no URL to check")
    try:
        response = httpx.get(url, timeout=5.0)
    except httpx.HTTPError as exc:
        return Check(
            "provider",
            False,
            f"{agent.provider} at {url}: {type(exc).__name__}: {exc}",
            "check the network / proxy, or agent.base_url",
        )
    return Check("provider", True, f"{agent.provider} at {url} answers (HTTP {response.status_code})")


def _clock(settings: Settings, now: Callable[[], float] = time.time) -> Check:
    moment = now()
    if moment < EARLIEST_SANE:
        return Check(
            "clock", False, f"the clock says {time.ctime(moment)}", "enable NTP (`timedatectl set-ntp true`)"
        )
    newest = None
    if settings.store.db_path.exists():
        try:
            with _readonly(settings.store.db_path) as conn:
                newest = conn.execute("SELECT MAX(received_at_ms) FROM messages").fetchone()[0]
        except sqlite3.DatabaseError:
            newest = None
    if newest is not None and newest / 1000 > moment + 300:
        return Check(
            "clock",
            False,
            f"a message was stored {newest / 1000 - moment:.0f} s in the future: the clock went back",
            "enable NTP (`timedatectl set-ntp true`); schedules and leases follow the wall clock",
        )
    return Check("clock", True, time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(moment)))


def _disk(settings: Settings) -> Check:
    path = settings.data_dir if settings.data_dir.exists() else settings.data_dir.parent
    free = shutil.disk_usage(path).free
    if free < MIN_FREE_BYTES:
        return Check(
            "disk", False, f"{free // 2**20} MiB free under {path}", "free some space (SQLite needs room)"
        )
    return Check("disk", True, f"{free // 2**20} MiB free under {path}")


def _allowlists(settings: Settings) -> list[Check]:
    from microclaw.sandbox.mounts import MountAllowlistError, read_mount_allowlist

    checks = []
    path = settings.sender_allowlist_path
    if not path.exists():
        checks.append(Check("sender allowlist", None, f"{path} absent: everyone may trigger"))
    else:
        problems = _sender_allowlist_problems(path)
        if problems:
            checks.append(
                Check(
                    "sender allowlist",
                    False,
                    f"{path}: {'; '.join(problems)}",
                    "fix the file (see docs/security.md)",
                )
            )
        else:
            checks.append(Check("sender allowlist", True, str(path)))
    mounts = settings.mount_allowlist_path
    try:
        found = read_mount_allowlist(mounts)
    except MountAllowlistError as exc:
        checks.append(
            Check("mount allowlist", False, str(exc), "fix the file or remove it (extra mounts are blocked)")
        )
    else:
        checks.append(
            Check("mount allowlist", True if found else None, str(mounts) if found else f"{mounts} absent")
        )
    return checks


def _sender_allowlist_problems(path: Path) -> list[str]:
    """What `load_sender_allowlist` would warn about (it falls back to defaults silently)."""
    from microclaw.core.senders import load_sender_allowlist

    try:
        json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return [f"not valid JSON ({exc})"]
    records: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    handler = _Collect(logging.WARNING)
    target = logging.getLogger("microclaw.core.senders")
    target.addHandler(handler)
    try:
        load_sender_allowlist(path)
    finally:
        target.removeHandler(handler)
    return records
