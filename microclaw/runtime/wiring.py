"""The composition root: turns validated `Settings` into the objects each process runs with.

Entry points (the host, the worker and beat processes in ``workers/``, the CLI) call these
builders; nothing else reads settings. This is the one place where parts are put together:
the app engine, connectors, the router's and the outbound worker's dependencies, the agent
(provider, tools, memory, limits) and, in the sandbox worker only, the sandbox service.
Heavy parts are imported inside the builder that needs them (the agent stack, the provider's
SDK, the router, the sandbox client), so a process imports only what it runs: the host and
beat never load the agent, and only the configured provider's SDK is ever imported.
Builders are cheap and side-effect free except `bootstrap_database`, which migrates the app
database and registers the local main group at first boot. The sandbox builders
(`sandbox_config`, `sandbox_audit`, `build_sandbox`) run only in the sandbox worker: that is
where credential values are read from the environment, and the only process that loads a
container backend.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine

from microclaw import safefs
from microclaw.config import Settings
from microclaw.connectors import CONNECTORS
from microclaw.connectors.base import BaseConnector, ConnectorSettings, Secrets
from microclaw.errors import ConfigError, UnsafePath
from microclaw.private import private_dir, private_sqlite
from microclaw.registry import load_class
from microclaw.store import groups
from microclaw.store.audit import record_now
from microclaw.store.db import create_sqlite_engine, migrate, write_tx

if TYPE_CHECKING:
    from celery import Celery

    from microclaw.agent.loop import Agent
    from microclaw.agent.providers.base import BaseProvider
    from microclaw.agent.tools.sandbox import SandboxCalls
    from microclaw.config import AgentSettings
    from microclaw.core.senders import SenderAllowlist
    from microclaw.pipeline.delivery import DeliveryDeps
    from microclaw.pipeline.router import AgentFn, RouterConfig, RouterDeps
    from microclaw.sandbox.base import SandboxConfig
    from microclaw.sandbox.service import SandboxService
    from microclaw.scheduler.schedule import ScheduleLimits

logger = logging.getLogger(__name__)

# Providers that never call tools: no sandbox, sessions or spend records for them.
OFFLINE_PROVIDERS = frozenset({"", "none", "scripted"})


def app_engine(settings: Settings) -> Engine:
    engine = create_sqlite_engine(settings.store.db_path, busy_timeout_s=settings.store.busy_timeout_s)
    _audit_broker_resets(engine)
    return engine


def _audit_broker_resets(engine: Engine) -> None:
    """A broker file this process finds corrupt or deleted gets a ``broker.reset`` audit row."""
    from microclaw.broker import store as broker_store
    from microclaw.store import audit

    def record(path: Path, moved_to: Path | None, reason: str) -> None:
        audit.record_now(
            engine, "broker.reset", decision="error", path=str(path), moved_to=str(moved_to), reason=reason
        )

    broker_store.on_reset(record)


def conversations_dir(settings: Settings) -> Path:
    """Where compaction archives transcripts: ``<data_dir>/conversations/<folder>/``, a
    host-only directory (no container mounts it), not the container-writable group folder."""
    return settings.data_dir / "conversations"


def worker_name(process: str) -> str:
    """This process's holder name, ``process@host:pid#incarnation`` (see
    `microclaw.pipeline.leases`); ``process`` is its name in heartbeats (``worker``, ``sandbox``)."""
    from microclaw.pipeline.leases import process_holder

    return process_holder(process)


def router_config(settings: Settings) -> RouterConfig:
    from microclaw.pipeline.router import RouterConfig

    return RouterConfig(
        assistant_name=settings.assistant_name,
        default_trigger=settings.trigger,
        timezone=settings.timezone,
        groups_dir=settings.groups_dir,
        max_messages_per_prompt=settings.router.max_messages_per_prompt,
        lease_ttl_ms=int(settings.router.lease_ttl_s * 1000),
        retry_delays_ms=tuple(int(d * 1000) for d in settings.router.retry_delays_s),
    )


def build_router_deps(
    settings: Settings,
    engine: Engine,
    agent: AgentFn,
    *,
    publish_deliver: Callable[[str], object],
    publish_typing: Callable[[str], object] | None = None,
    publish_sandbox_ensure: Callable[[str, bool], object] | None = None,
    process: str = "router",
) -> RouterDeps:
    """What `process_group` needs in a router worker (``process``: the worker's name, which
    its lease holder names carry). With a provider that calls tools, a run starts its group's
    container early through ``publish_sandbox_ensure``."""
    from microclaw.pipeline.router import RouterDeps

    tools = settings.agent.provider not in OFFLINE_PROVIDERS
    return RouterDeps(
        engine=engine,
        config=router_config(settings),
        agent=agent,
        publish_deliver=publish_deliver,
        worker=worker_name(process),
        allowlist=sender_allowlist_loader(settings),
        publish_typing=publish_typing,
        prepare_sandbox=publish_sandbox_ensure if tools else None,
    )


def build_delivery_deps(
    settings: Settings,
    engine: Engine,
    connectors: list[BaseConnector],
    runner: asyncio.Runner,
    *,
    process: str = "outbound",
) -> DeliveryDeps:
    """What `deliver_chat` needs in an outbound worker (``process`` as for the router)."""
    from microclaw.pipeline.delivery import DeliveryDeps

    return DeliveryDeps(
        engine=engine,
        connectors=connectors,
        settings=settings.outbound,
        worker=worker_name(process),
        runner=runner,
        lease_ttl_ms=int(settings.router.lease_ttl_s * 1000),
    )


def build_agent_fn(
    settings: Settings,
    engine: Engine,
    *,
    app: Celery,
    publish_deliver: Callable[[str], object] | None,
) -> AgentFn:
    """The callable the router runs: a real provider gets tools (sandbox, through ``app``, and
    host), sessions, memory files and spend control; the offline providers (scripted, none)
    answer in one plain step and never touch the sandbox."""
    from microclaw.agent.loop import AgentRequest, AgentResult, run_agent
    from microclaw.agent.providers import load_provider
    from microclaw.sandbox.client import SandboxClient

    provider = load_provider(settings.agent)
    if settings.agent.provider in OFFLINE_PROVIDERS:
        name = settings.assistant_name

        def offline(request: AgentRequest, on_step: Callable[[], list[str]]) -> AgentResult:
            return run_agent(provider, request, assistant_name=name, on_step=on_step)

        return offline
    return build_agent(
        settings.agent,
        provider,
        assistant_name=settings.assistant_name,
        engine=engine,
        groups_dir=settings.groups_dir,
        archive_dir=conversations_dir(settings),
        timezone=settings.timezone,
        sandbox=SandboxClient(app, settings.sandbox),
        publish_deliver=publish_deliver,
        lease_ttl_ms=int(settings.router.lease_ttl_s * 1000),
        schedule_limits=schedule_limits(settings),
    )


def schedule_limits(settings: Settings) -> ScheduleLimits:
    """The limits on scheduled tasks: ``[scheduler]`` plus the agent's daily token budget."""
    from microclaw.scheduler.schedule import ScheduleLimits

    return ScheduleLimits(
        min_interval=timedelta(seconds=settings.scheduler.min_interval_s),
        max_active_tasks=settings.scheduler.max_active_tasks_per_group,
        daily_token_budget=settings.agent.daily_token_budget,
    )


def build_agent(
    settings: AgentSettings,
    provider: BaseProvider,
    *,
    assistant_name: str,
    engine: Engine,
    groups_dir: Path,
    archive_dir: Path,
    timezone: str,
    sandbox: SandboxCalls | None,
    publish_deliver: Callable[[str], object] | None = None,
    lease_ttl_ms: int = 60_000,
    schedule_limits: ScheduleLimits | None = None,
) -> Agent:
    """The agent for one worker process: host tools always, sandbox tools when a client is given.

    A scheduled task's pre-check script runs through the same sandbox client and is audited
    (`audited_precheck`); without a client such a run fails, the script never runs on the host.
    """
    from microclaw.agent.loop import Agent, AgentLimits
    from microclaw.agent.memory import AgentMemory
    from microclaw.agent.precheck import audited_precheck
    from microclaw.agent.tools.base import BaseTool, Toolbox
    from microclaw.agent.tools.host import HostEnv, host_tools
    from microclaw.agent.tools.sandbox import sandbox_tools

    env = HostEnv(
        engine,
        timezone=timezone,
        groups_dir=groups_dir,
        lease_ttl_ms=lease_ttl_ms,
        publish_deliver=publish_deliver,
        limits=schedule_limits,
    )
    tools: list[BaseTool] = [*(sandbox_tools(sandbox) if sandbox is not None else []), *host_tools(env)]

    def record(kind: str, **fields: object) -> None:
        record_now(engine, kind, **fields)

    return Agent(
        provider,
        assistant_name=assistant_name,
        toolbox=Toolbox(tools, audit=record, max_output_chars=settings.max_tool_output_chars),
        memory=AgentMemory(
            engine,
            groups_dir,
            archive_dir=archive_dir,
            history_token_budget=settings.history_token_budget,
            keep_recent_turns=settings.keep_recent_turns,
        ),
        limits=AgentLimits(
            max_steps=settings.max_steps,
            run_timeout_s=settings.run_timeout_s,
            daily_token_budget=settings.daily_token_budget,
            input_cost_per_mtok=settings.input_cost_per_mtok,
            output_cost_per_mtok=settings.output_cost_per_mtok,
        ),
        precheck=audited_precheck(sandbox, record),
    )


def sender_allowlist_loader(settings: Settings) -> Callable[[], SenderAllowlist]:
    """Re-reads the allowlist file on every call (edits take effect at once)."""
    from microclaw.core.senders import load_sender_allowlist

    path = settings.sender_allowlist_path
    return lambda: load_sender_allowlist(path)


@dataclass(frozen=True)
class ConnectorBoot:
    """What happened to one configured connector at boot."""

    name: str
    state: str  # "active" | "skipped" | "error"
    detail: str
    connector: BaseConnector | None = None


def connector_settings(
    settings: Settings, name: str, cls: type[BaseConnector], environ: Mapping[str, str] | None = None
) -> ConnectorSettings:
    """``name``'s settings slice, with the secrets ``cls`` declares read from ``environ`` (the
    process environment by default) and no others."""
    return ConnectorSettings(
        name=name,
        options=settings.connectors.get(name, {}),
        data_dir=settings.data_dir,
        assistant_name=settings.assistant_name,
        max_text_bytes=settings.router.max_text_bytes,
        secrets=Secrets.from_environ(cls.secrets, os.environ if environ is None else environ),
    )


def build_connectors(settings: Settings, *, quiet: bool = False) -> list[ConnectorBoot]:
    """Every connector named in settings: enabled ones built, missing credentials skipped.

    The host reports skipped connectors as warnings; worker children, which build only the
    send side (``quiet``), log them at debug so one boot does not repeat them per process.
    """
    results: list[ConnectorBoot] = []
    for name, options in settings.connectors.items():
        if not options.get("enabled", False):
            results.append(ConnectorBoot(name, "skipped", "disabled in settings"))
            continue
        cls = load_class(CONNECTORS, name, f"connectors.{name}")
        try:
            connector = cls.from_settings(connector_settings(settings, name, cls))
        except ConfigError as exc:
            logger.log(
                logging.DEBUG if quiet else logging.WARNING,
                "connector %s skipped: %s",
                name,
                exc,
                extra={"connector": name},
            )
            results.append(ConnectorBoot(name, "skipped", str(exc)))
            continue
        except Exception as exc:
            logger.exception("connector %s failed to start", name, extra={"connector": name})
            results.append(ConnectorBoot(name, "error", f"{type(exc).__name__}: {exc}"))
            continue
        results.append(ConnectorBoot(name, "active", "configured", connector))
    return results


def private_data_dir(settings: Settings) -> None:
    """The data directory 0700 and the SQLite files other libraries create in it (the broker's,
    Celery's result store) 0600 before they exist, whatever the umask (`microclaw.private`)."""
    private_dir(settings.data_dir)
    for url in (settings.broker.url, settings.sandbox.result_url):
        scheme, sep, tail = url.partition(":///")
        if sep and scheme.rpartition("+")[2] == "sqlite":
            private_sqlite(Path(tail))


def bootstrap_database(settings: Settings) -> str:
    """Migrate the app database and register the local main group on first boot.

    Raises `PermanentStoreError` when migration fails (the boot must stop).
    """
    private_data_dir(settings)
    for directory in (settings.data_dir, settings.groups_dir):
        directory.mkdir(parents=True, exist_ok=True)
    revision = migrate(settings.store.db_path, busy_timeout_s=settings.store.busy_timeout_s)
    local = settings.connectors.get("local", {})
    if local.get("enabled", False):
        chat_id = str(local.get("chat_id") or "local:main")
        folder = str(local.get("folder") or "local_main")
        engine = app_engine(settings)
        try:
            with write_tx(engine) as conn:
                if groups.get_group(conn, chat_id) is None:
                    has_main = any(g.is_main for g in groups.all_groups(conn))
                    groups.register_group(
                        conn,
                        jid=chat_id,
                        name="Local chat",
                        folder=folder,
                        trigger=settings.trigger,
                        is_main=not has_main,
                    )
                    logger.info("registered the local chat as a group", extra={"chat_jid": chat_id})
            make_group_folder(engine, settings.groups_dir, folder)
        finally:
            engine.dispose()
    return revision


def make_group_folder(engine: Engine, groups_dir: Path, folder: str) -> bool:
    """Create ``groups_dir/folder`` without following links (`microclaw.safefs`).

    False, with a warning and an ``fs.refused`` audit row, when the folder or what stands in
    its place is a link or not a directory; nothing is created through it.
    """
    try:
        safefs.ensure_dir(groups_dir, [folder])
    except UnsafePath as exc:
        logger.warning("refused group folder %s: %s", exc.path, exc.problem, extra={"group": folder})
        record_now(
            engine,
            "fs.refused",
            decision="deny",
            group=folder,
            use="group folder",
            path=exc.path,
            problem=exc.problem,
        )
        return False
    return True


# --- sandbox (the sandbox worker only) ----------------------------------------------------

REDACTED = "<redacted>"
# Audit kinds that are allow/deny decisions by nature; the rest is decided per row below.
_AUDIT_DECISIONS: Mapping[str, str] = {
    "egress.allow": "allow",
    "egress.deny": "deny",
    "egress.error": "error",
    "sandbox.denied": "deny",
    "sandbox.unavailable": "error",
}


def sandbox_credentials(
    settings: Settings, environ: Mapping[str, str] | None = None
) -> tuple[dict[str, dict[str, str]], list[str]]:
    """Resolve ``egress_credentials`` references: (host -> header -> value, unset variables).

    A header whose variable is unset or empty is left out (the upstream then answers as it
    does to anonymous callers) and its variable is returned so readiness can say so.
    """
    env = os.environ if environ is None else environ
    resolved: dict[str, dict[str, str]] = {}
    missing: list[str] = []
    for host, headers in settings.sandbox.egress_credentials.items():
        for header, variable in headers.items():
            value = env.get(variable)
            if value:
                resolved.setdefault(host, {})[header] = value
            else:
                missing.append(variable)
    return resolved, sorted(set(missing))


def sandbox_config(settings: Settings, environ: Mapping[str, str] | None = None) -> SandboxConfig:
    """The frozen ``SandboxConfig`` for these settings, with credential values from ``environ``."""
    from microclaw.sandbox.base import SandboxConfig

    credentials, missing = sandbox_credentials(settings, environ)
    for variable in missing:
        logger.warning("sandbox credential variable %s is not set; that header is not injected", variable)
    return SandboxConfig.from_settings(
        settings.sandbox,
        groups_dir=settings.groups_dir,
        mount_allowlist_path=settings.mount_allowlist_path,
        credentials=credentials,
    )


def redactor(secrets: Iterable[str]) -> Callable[[Any], Any]:
    """A function that replaces every occurrence of ``secrets`` in strings nested in a value."""
    needles = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def scrub(value: Any) -> Any:
        if not needles:
            return value
        if isinstance(value, str):
            for needle in needles:
                if needle in value:
                    value = value.replace(needle, REDACTED)
            return value
        if isinstance(value, Mapping):
            return {k: scrub(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [scrub(v) for v in value]
        return value

    return scrub


def sandbox_audit_decision(kind: str, data: Mapping[str, Any]) -> str | None:
    """The audit row's ``decision`` for a sandbox event (None for lifecycle events)."""
    if kind == "sandbox.mount":
        return "allow" if data.get("allowed") else "deny"
    if kind == "sandbox.exec":
        return "error" if "error" in data else "allow"
    return _AUDIT_DECISIONS.get(kind)


def sandbox_audit(engine: Engine, secrets: Iterable[str] = ()) -> Callable[..., None]:
    """``audit(kind, *, group, **data)`` for ``SandboxService``: one audit row per call.

    The group folder goes into the detail as ``group``. Every string is scrubbed of the
    credential values first, so a secret that leaked into an argv or an error message still
    never reaches the table. A failed write is logged and swallowed: auditing must not turn
    a tool call (or the egress proxy's event loop) into a crash.
    """
    scrub = redactor(secrets)

    def audit(kind: str, *, group: str | None, **data: Any) -> None:
        detail = scrub(data)
        try:
            record_now(engine, kind, decision=sandbox_audit_decision(kind, data), group=group, **detail)
        except Exception:
            logger.error("could not write the %s audit row", kind, exc_info=True, extra={"group": group})

    return audit


def build_sandbox(
    settings: Settings, engine: Engine, environ: Mapping[str, str] | None = None
) -> SandboxService:
    """The sandbox worker's ``SandboxService``: config, backend and audit to ``engine``.

    Loads the backend module (and its SDK) only now. Raises ConfigError for an unknown backend.
    """
    from microclaw.sandbox import load_backend
    from microclaw.sandbox.service import SandboxService

    config = sandbox_config(settings, environ)
    secrets = [value for headers in config.egress_credentials.values() for value in headers.values()]
    backend = load_backend(settings.sandbox.backend, config)
    return SandboxService(backend, config, sandbox_audit(engine, secrets))
