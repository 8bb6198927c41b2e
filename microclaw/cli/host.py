"""``microclaw-host``: run, stop, status, health, smoke, migrate, register-group.

An entry point: it loads settings, sets up logging and renders output; the work is done by
library functions. Heavy modules are imported inside each command, so ``--help`` and the
quick commands stay fast.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import click
import psutil
from rich.table import Table

from microclaw.cli.common import (
    HostError,
    console,
    err,
    fail,
    host_client,
    host_request,
    load_settings_or_exit,
)
from microclaw.config import Settings
from microclaw.errors import PermanentStoreError
from microclaw.logs import configure_logging
from microclaw.private import open_private_append, private_dir, write_private


@click.group(help="Run and inspect the MicroClaw host.")
@click.version_option(package_name="microclaw", prog_name="microclaw-host")
def host_main() -> None:
    pass


def _read_pid(path: Path) -> int | None:
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid


def _alive(pid: int) -> bool:
    """Whether ``pid`` is still running (a zombie awaiting its reaper counts as gone)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _boot_report(settings: Settings, boots: list[Any]) -> None:
    table = Table(title=f"MicroClaw host — {settings.assistant_name}", show_lines=False)
    table.add_column("what")
    table.add_column("state")
    table.add_column("detail")
    table.add_row("http", "listening", settings.http.base_url)
    table.add_row("database", "migrated", str(settings.store.db_path))
    table.add_row("broker", "sqlite" if settings.broker.is_sqlite else "external", settings.broker.url)
    table.add_row(
        "agent",
        settings.agent.provider or "not configured",
        settings.agent.model or ("replies with setup help" if not settings.agent.provider else ""),
    )
    table.add_row("timezone", settings.timezone, "")
    colours = {"active": "green", "skipped": "yellow", "error": "red"}
    for boot in boots:
        table.add_row(
            f"connector {boot.name}", f"[{colours.get(boot.state, 'white')}]{boot.state}[/]", boot.detail
        )
    err.print(table)


@host_main.command(help="Start the host (connectors + localhost HTTP). Daemonizes unless --foreground.")
@click.option("--foreground", is_flag=True, help="Stay attached (for honcho/systemd).")
def run(foreground: bool) -> None:
    from microclaw.runtime.wiring import bootstrap_database, build_connectors

    # Defence in depth: whatever the host creates that no helper of `microclaw.private` covers
    # is private too (it writes nothing a container must read).
    os.umask(0o077)
    settings = load_settings_or_exit()
    configure_logging(
        settings.logging.level, settings.logging.format, role="host", levels=settings.logging.levels
    )
    pidfile = settings.pidfile
    running = _read_pid(pidfile)
    if running and running != os.getpid():
        fail(f"the host is already running (pid {running}); stop it with `microclaw-host stop`")
    try:
        bootstrap_database(settings)
    except PermanentStoreError as exc:
        fail(f"database migration failed, not starting: {exc}")
    boots = build_connectors(settings)
    _boot_report(settings, boots)
    if not foreground:
        import daemon

        log_path = settings.data_dir / "host.log"
        err.print(f"daemonizing; logs in {log_path}, pidfile {pidfile}")
        with open_private_append(log_path) as log:  # noqa: SIM117 - the context must wrap the daemon context
            with daemon.DaemonContext(working_directory=os.getcwd(), stdout=log, stderr=log, umask=0o077):
                configure_logging(
                    settings.logging.level,
                    settings.logging.format,
                    role="host",
                    levels=settings.logging.levels,
                )
                _serve(settings, boots, pidfile)
        return
    _serve(settings, boots, pidfile)


def _serve(settings: Settings, boots: list[Any], pidfile: Path) -> None:
    from microclaw.runtime import heap
    from microclaw.runtime.celery_app import Publisher, create_app
    from microclaw.runtime.host import Host
    from microclaw.runtime.wiring import app_engine

    private_dir(pidfile.parent)
    write_private(pidfile, str(os.getpid()))
    engine = app_engine(settings)
    publish = Publisher(create_app(settings))
    host = Host(settings, engine, boots, publish.kick)
    heap.freeze()  # start-up's objects: later full collections need not walk them
    try:
        asyncio.run(host.run())
    finally:
        if _read_pid(pidfile) == os.getpid():
            pidfile.unlink(missing_ok=True)
        engine.dispose()


@host_main.command(help="Stop a daemonized host (SIGTERM via the pidfile).")
@click.option("--timeout", default=15.0, show_default=True)
def stop(timeout: float) -> None:
    settings = load_settings_or_exit()
    pid = _read_pid(settings.pidfile)
    if pid is None:
        fail("the host is not running", code=1)
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            console.print(f"stopped (pid {pid})")
            return
        time.sleep(0.1)
    fail(f"pid {pid} did not stop within {timeout:.0f} s")


def _status_snapshot(settings: Settings) -> dict[str, Any]:
    from microclaw.runtime.status import collect_status
    from microclaw.runtime.wiring import app_engine, bootstrap_database

    bootstrap_database(settings)
    engine = app_engine(settings)
    try:
        snapshot = collect_status(settings, engine)
    finally:
        engine.dispose()
    pid = _read_pid(settings.pidfile)
    problem = _host_problem(settings)
    snapshot["host"] = {
        "pid": pid,
        "http": settings.http.base_url,
        "reachable": problem is None,
        "problem": problem,
    }
    return snapshot


def _host_problem(settings: Settings) -> str | None:
    """None when the host answers ``/status`` (with the token), else why not."""
    with host_client(settings, timeout=2.0) as client:
        try:
            host_request(client, settings, "GET", "/status")
        except HostError as exc:
            return str(exc)
    return None


@host_main.command(help="Show connectors, queues, leases, workers, sandbox and next scheduled runs.")
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON snapshot.")
def status(as_json: bool) -> None:
    settings = load_settings_or_exit()
    configure_logging("WARNING", "text")
    snap = _status_snapshot(settings)
    if as_json:
        console.print_json(json.dumps(snap))
        return
    host = snap["host"]
    console.print(
        f"[bold]host[/]: {'up' if host['reachable'] else 'down'} (pid {host['pid'] or '-'}) "
        f"{host['http']}   broker: {snap['broker']}   timezone: {snap['timezone']}"
    )
    if host["problem"] and host["pid"]:
        console.print(f"[yellow]{host['problem']}[/]")
    table = Table(title="connectors")
    for col in ("name", "state", "detail", "last error", "last event"):
        table.add_column(col)
    for c in snap["connectors"]:
        ago = (
            f"{(time.time() * 1000 - c['last_event_at_ms']) / 1000:.0f}s ago"
            if c["last_event_at_ms"]
            else "-"
        )
        table.add_row(c["name"], c["state"], c["detail"] or "", c["last_error"] or "", ago)
    console.print(table)
    workers = Table(title="workers")
    for col in ("role", "name", "alive", "last seen"):
        workers.add_column(col)
    for w in snap["workers"]:
        workers.add_row(
            w["role"],
            w["name"],
            "yes" if w["alive"] else "[red]no[/]",
            f"{w['last_seen_ms_ago'] / 1000:.0f}s ago",
        )
    console.print(workers)
    console.print(
        f"queues: {snap['queues'] or '-'}   runs in progress: {snap['runs_in_progress']}   "
        f"leases held: {len(snap['leases'])}   outbox: {snap['outbox'] or '-'}"
    )
    waits = {q: f"{ms / 1000:.1f}s" for q, ms in snap.get("queue_waits", {}).items()}
    console.print(f"oldest ready work waiting: {waits or '-'}")
    console.print(_sandbox_line(snap["sandbox"]))
    for task in snap["scheduler_next_runs"]:
        console.print(f"next run: {task['next_run']}  {task['id']}  {task['schedule']}  ({task['chat_jid']})")


def _sandbox_line(sb: dict[str, Any]) -> str:
    """``sandbox: <state>[: reason]  (backend, image, worker, age)`` for `status`."""
    colour = {"ready": "green", "unavailable": "red", "stale": "yellow"}.get(sb.get("state", ""), "")
    state = f"[{colour}]{sb.get('state')}[/]" if colour else str(sb.get("state"))
    reason = f": {sb['reason']}" if sb.get("reason") and sb.get("state") != "ready" else ""
    facts = [f"backend {sb.get('backend')}", f"image {sb.get('image')}"]
    if sb.get("worker"):
        facts.append(f"worker {sb['worker']}")
    if sb.get("updated_ms_ago") is not None:
        facts.append(f"checked {sb['updated_ms_ago'] / 1000:.0f}s ago")
    if sb.get("missing_credentials"):
        facts.append(f"unset credential variables: {', '.join(sb['missing_credentials'])}")
    line = f"[bold]sandbox[/]: {state}{reason}  ({', '.join(facts)})"
    return line + (f"\n  fix: {_sandbox_fix(sb)}" if sb.get("state") != "ready" else "")


def _sandbox_fix(sb: dict[str, Any]) -> str:
    """The exact command that makes the sandbox ready, when the reason says which."""
    from microclaw.runtime.doctor import IMAGE_FIX

    reason = str(sb.get("reason") or "")
    if "image" in reason and "not found" in reason:
        return IMAGE_FIX.format(image=sb.get("image"))
    if sb.get("state") in (None, "unknown", "stopped", "stale") or not reason:
        return "start the sandbox worker (the `sandbox` line of the Procfile; `make run` starts it)"
    return "`microclaw-host doctor` checks Docker, the image and a test exec, with a fix for each"


@host_main.command(help="Exit 0 when the host answers and router, outbound and beat are alive.")
def health() -> None:
    from microclaw.runtime.status import health_problems

    settings = load_settings_or_exit()
    configure_logging("WARNING", "text")
    snap = _status_snapshot(settings)
    problems = health_problems(snap)
    if not snap["host"]["reachable"]:
        problems.insert(0, f"host not reachable at {settings.http.base_url}: {snap['host']['problem']}")
    if problems:
        for problem in problems:
            err.print(f"[red]unhealthy:[/] {problem}", soft_wrap=True)
        sys.exit(1)
    console.print("healthy")


@host_main.command(help="Push one synthetic message through router -> agent -> outbox, offline.")
def smoke() -> None:
    from microclaw.runtime.smoke import run_smoke

    settings = load_settings_or_exit()
    configure_logging("WARNING", "text")
    result = run_smoke(settings)
    if result.reply is None:
        fail(f"smoke failed: no reply was delivered for {result.sent!r}")
    console.print(f"sent:      {result.sent}")
    console.print(f"delivered: {result.reply}")


@host_main.command(help="Bring the database schema up to date.")
def migrate() -> None:
    from microclaw.store.db import migrate as run_migrations

    settings = load_settings_or_exit()
    configure_logging("WARNING", "text")
    try:
        revision = run_migrations(settings.store.db_path, busy_timeout_s=settings.store.busy_timeout_s)
    except PermanentStoreError as exc:
        fail(str(exc))
    console.print(f"database {settings.store.db_path} at revision {revision}")


@host_main.command(
    "register-group",
    help="Let the assistant work in a chat: register JID (e.g. tg:-1001234567890, dc:123456789012345678) "
    "as a group with its own folder. Telegram's /chatid command tells a chat's JID.",
)
@click.argument("jid")
@click.option("--name", required=True, help="A display name for the group.")
@click.option("--folder", required=True, help="Its folder under groups_dir, e.g. telegram_dev-team.")
@click.option("--trigger", default=None, help="Its trigger word (default: the configured trigger).")
@click.option("--no-trigger-required", is_flag=True, help="Answer every message, not only triggered ones.")
def register_group(jid: str, name: str, folder: str, trigger: str | None, no_trigger_required: bool) -> None:
    from sqlalchemy.exc import SQLAlchemyError

    from microclaw.runtime.wiring import app_engine, bootstrap_database, make_group_folder
    from microclaw.store import groups
    from microclaw.store.db import write_tx

    settings = load_settings_or_exit()
    configure_logging("WARNING", "text")
    prefix, _, chat = jid.partition(":")
    if not prefix or not chat:
        fail(f"{jid!r} is not a chat address; expected <channel>:<id>, e.g. tg:-1001234567890")
    bootstrap_database(settings)
    engine = app_engine(settings)
    try:
        with write_tx(engine) as conn:
            group = groups.register_group(
                conn,
                jid=jid,
                name=name,
                folder=folder,
                trigger=trigger or settings.trigger,
                requires_trigger=False if no_trigger_required else None,
            )
        made = make_group_folder(engine, settings.groups_dir, group.folder)
    except ValueError as exc:
        fail(str(exc))
    except SQLAlchemyError as exc:  # the transaction rolled back: nothing was registered
        fail(f"could not register {jid}: {getattr(exc, 'orig', None) or exc}")
    finally:
        engine.dispose()
    if not made:
        fail(f"{settings.groups_dir / group.folder} is a link or not a directory; remove it and run again")
    needs = "every message" if no_trigger_required else f"messages starting with {group.trigger}"
    console.print(f"registered {jid} as {name!r} (folder {group.folder}); the assistant answers {needs}")


def _add_commands() -> None:
    from microclaw.cli.inspect import doctor, replies, why
    from microclaw.cli.service import install_service

    host_main.add_command(why)
    host_main.add_command(replies)
    host_main.add_command(doctor)
    host_main.add_command(install_service)


_add_commands()
