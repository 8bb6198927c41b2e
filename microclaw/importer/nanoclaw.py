"""Importing a NanoClaw v1 install: its ``store/messages.db`` and, optionally, its ``groups/``.

`import_nanoclaw()` opens the NanoClaw store read-only and copies, in one write transaction on
our database (all or nothing): chats, messages (ids kept; our ``seq`` assigned in NanoClaw
timestamp order after every seq we already have; ``received_at_ms`` from the timestamp),
registered groups, scheduled tasks, their run logs and sessions, then turns
``router_state.last_agent_timestamp`` (``{chatJid: isoTs}``) into sequence cursors: a chat's
``cursor_seq`` and ``seen_seq`` become the seq of its last message with ``timestamp <= cursor``.
A registered chat with no per-chat cursor gets ``seen_seq`` from the global ``last_timestamp``
(what NanoClaw's loop had already looked at), so old chatter is never trigger-checked again.
A chat that already had MicroClaw messages gets its imported history (whose seqs come after
ours) counted as processed, with a warning. Cursors only move forward.

Schema variants (contract §5.2): a column NanoClaw added later may be missing; its default or
NanoClaw's backfill is applied instead: ``context_mode`` → ``isolated``, ``script`` → NULL,
``is_bot_message`` → content starts with ``<assistant>:``, ``is_main`` → ``folder == 'main'``,
``channel``/``is_group`` → from the JID pattern, ``reply_to_*`` → NULL (also
``requires_trigger`` → 1, ``container_config`` → NULL). A missing optional table imports
nothing.

Idempotent: a row that exists is left alone (messages by (id, chat), groups by jid, tasks by id,
run logs by their content, sessions by folder), chats only gain a newer time or a missing
channel/name, so a second run reports no new rows and changes nothing. A dry run does the same
work and rolls it back. `copy_group_folders()` copies each imported group's folder (and
``global``) without overwriting a file that exists and without following a link on either side
(`microclaw.safefs`). `run_command()` is the CLI front end (rich table, progress bar, exit
code; 1 when a destination was refused, each refusal printed and audited as ``fs.refused``).

Does not touch the NanoClaw install, import its JSON state files (NanoClaw moved them into the
store at its own start), or kick groups (the beat sweeper finds pending work by itself).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import stat
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import Connection, Engine, func, insert, select, update
from sqlalchemy.exc import SQLAlchemyError

from microclaw import safefs
from microclaw.core.groups import is_valid_group_folder
from microclaw.errors import PermanentStoreError, StoreError, UnsafePath
from microclaw.scheduler.schedule import next_run, validate_schedule
from microclaw.scheduler.tick import iso, parse_iso
from microclaw.store import audit
from microclaw.store.db import write_tx
from microclaw.store.models import (
    Chat,
    GroupState,
    Message,
    RegisteredGroup,
    ScheduledTask,
    SessionRow,
    TaskRunLog,
    table_of,
)
from microclaw.store.tasks import CONTEXT_MODES

logger = logging.getLogger(__name__)

_C, _M, _G = table_of(Chat), table_of(Message), table_of(RegisteredGroup)
_T, _L, _SESS, _S = table_of(ScheduledTask), table_of(TaskRunLog), table_of(SessionRow), table_of(GroupState)

SQLITE_MAGIC = b"SQLite format 3\x00"
NANOCLAW_TABLES = (
    "chats",
    "messages",
    "registered_groups",
    "scheduled_tasks",
    "task_run_logs",
    "sessions",
    "router_state",
)
REPORT_TABLES = ("chats", "messages", "registered_groups", "scheduled_tasks", "task_run_logs", "sessions")
# The columns read from each source table; NanoClaw added the LATE_COLUMNS over time (contract
# §5.1-5.2), and a store without one gets the SQL given here (chats' channel/is_group are then
# backfilled from the JID). Any other missing column reads as NULL.
SOURCE_COLUMNS: dict[str, tuple[str, ...]] = {
    "chats": ("jid", "name", "last_message_time", "channel", "is_group"),
    "messages": (
        "id", "chat_jid", "sender", "sender_name", "content", "timestamp", "is_from_me", "is_bot_message",
        "reply_to_message_id", "reply_to_message_content", "reply_to_sender_name",
    ),
    "registered_groups": (
        "jid", "name", "folder", "trigger_pattern", "added_at", "container_config", "requires_trigger",
        "is_main",
    ),
    "scheduled_tasks": (
        "id", "group_folder", "chat_jid", "prompt", "schedule_type", "schedule_value", "next_run", "last_run",
        "last_result", "status", "created_at", "context_mode", "script",
    ),
}  # fmt: skip
LATE_COLUMNS: dict[str, dict[str, str]] = {
    "chats": {"channel": "NULL", "is_group": "NULL"},
    "messages": {
        "is_bot_message": "(CASE WHEN content LIKE ? ESCAPE '\\' THEN 1 ELSE 0 END)",  # ? = '<assistant>:%'
        "reply_to_message_id": "NULL",
        "reply_to_message_content": "NULL",
        "reply_to_sender_name": "NULL",
    },
    "registered_groups": {
        "is_main": "(CASE WHEN folder = 'main' THEN 1 ELSE 0 END)",
        "requires_trigger": "1",
        "container_config": "NULL",
    },
    "scheduled_tasks": {"context_mode": "'isolated'", "script": "NULL"},
}
_BATCH = 2000


class NanoClawImportError(PermanentStoreError):
    """The source is not an importable NanoClaw store (or groups folder); ``path`` names it."""

    def __init__(self, message: str, *, path: Path) -> None:
        super().__init__(message)
        self.path = path


@dataclass
class TableCount:
    """What happened to one table's rows (or, for ``files``, to the group folders' files)."""

    table: str
    in_source: int = 0
    imported: int = 0
    already_present: int = 0
    updated: int = 0
    skipped: int = 0


@dataclass
class ImportReport:
    source: Path
    dry_run: bool
    tables: list[str]
    missing_columns: dict[str, list[str]]
    counts: dict[str, TableCount]
    warnings: list[str] = field(default_factory=list)
    # Folders of the source's valid groups that are registered to the same chat here afterwards.
    group_folders: list[str] = field(default_factory=list)

    @property
    def changed(self) -> int:
        """Rows added or changed (files copied included)."""
        return sum(c.imported + c.updated for c in self.counts.values())


@dataclass(frozen=True)
class SourceSchema:
    tables: dict[str, set[str]]  # table -> its columns

    def has(self, table: str, column: str) -> bool:
        return column in self.tables.get(table, set())

    def missing_columns(self) -> dict[str, list[str]]:
        return {
            table: [c for c in columns if not self.has(table, c)]
            for table, columns in LATE_COLUMNS.items()
            if table in self.tables and any(not self.has(table, c) for c in columns)
        }


# --- the source --------------------------------------------------------------------------------


def open_source(path: Path) -> tuple[sqlite3.Connection, SourceSchema]:
    """Open a NanoClaw store read-only; `NanoClawImportError` when it is not one.

    ``path`` may also be a NanoClaw project directory holding ``store/messages.db``.
    """
    if path.is_dir() and (path / "store" / "messages.db").is_file():
        path = path / "store" / "messages.db"
    if not path.exists():
        raise NanoClawImportError(f"{path}: no such file", path=path)
    if not path.is_file():
        raise NanoClawImportError(f"{path}: not a file (expected NanoClaw's store/messages.db)", path=path)
    try:
        with path.open("rb") as handle:
            magic = handle.read(len(SQLITE_MAGIC))
    except OSError as exc:
        raise NanoClawImportError(f"{path}: cannot be read: {exc.strerror or exc}", path=path) from exc
    if magic != SQLITE_MAGIC:
        raise NanoClawImportError(f"{path}: not an SQLite database", path=path)
    try:
        conn = sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro", uri=True)
        conn.row_factory = sqlite3.Row
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        schema = SourceSchema(
            {
                n: {c[1] for c in conn.execute(f'PRAGMA table_info("{n}")')}
                for n in names
                if n in NANOCLAW_TABLES
            }
        )
    except sqlite3.DatabaseError as exc:
        raise NanoClawImportError(f"{path}: {_source_problem(exc)}", path=path) from exc
    if not schema.has("messages", "id") or not schema.has("chats", "jid"):
        conn.close()
        found = ", ".join(sorted(names)) or "none"
        raise NanoClawImportError(
            f"{path}: not a NanoClaw store: no chats and messages tables (tables found: {found})", path=path
        )
    return conn, schema


def _columns(schema: SourceSchema, table: str) -> str:
    """The select list for ``table``: each column, or its stand-in ``AS`` it when missing."""
    late = LATE_COLUMNS.get(table, {})
    return ", ".join(
        f'"{name}"' if schema.has(table, name) else f'{late.get(name, "NULL")} AS "{name}"'
        for name in SOURCE_COLUMNS[table]
    )


def _batches(cursor: sqlite3.Cursor) -> Iterator[list[sqlite3.Row]]:
    while rows := cursor.fetchmany(_BATCH):
        yield rows


def jid_channel(jid: str) -> tuple[str | None, int]:
    """NanoClaw's chats backfill (migration 5): (channel, is_group) from a JID pattern."""
    if jid.endswith("@g.us"):
        return "whatsapp", 1
    if jid.endswith("@s.whatsapp.net"):
        return "whatsapp", 0
    if jid.startswith("dc:"):
        return "discord", 1
    if jid.startswith("tg:"):
        return "telegram", 0  # every tg: chat, negative group ids included (NanoClaw pins this)
    return None, 0


def iso_to_ms(value: str | None) -> int | None:
    """Milliseconds since the epoch of an ISO timestamp (naive means UTC); None if unparseable."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


# --- the import --------------------------------------------------------------------------------


class _DryRun(Exception):
    """Raised inside the write transaction of a dry run so that it rolls back."""


@dataclass
class _Run:
    src: sqlite3.Connection
    schema: SourceSchema
    conn: Connection
    assistant_name: str
    report: ImportReport
    progress: Callable[[int, int], None] | None
    timezone: str
    now: datetime
    # chat -> newest seq imported in this run; chats that had messages before it
    imported_max_seq: dict[str, int] = field(default_factory=dict)
    chats_with_history: set[str] = field(default_factory=set)

    def count(self, table: str) -> TableCount:
        return self.report.counts.setdefault(table, TableCount(table))

    def warn(self, message: str) -> None:
        logger.warning(message)
        self.report.warnings.append(message)


def import_nanoclaw(
    source: Path,
    engine: Engine,
    *,
    assistant_name: str,
    dry_run: bool = False,
    progress: Callable[[int, int], None] | None = None,
    timezone: str = "UTC",
    now: datetime | None = None,
) -> ImportReport:
    """Import a NanoClaw store into our (migrated) database; see the module docstring.

    ``assistant_name`` is NanoClaw's ASSISTANT_NAME (for the bot-message backfill of old
    stores); ``timezone`` reads task schedules, ``now`` (default: the clock) checks their next
    runs. ``progress(done, total)`` is called while messages are copied. Raises
    `NanoClawImportError` when ``source`` is not a NanoClaw store or cannot be read to the end
    (corrupt, locked, a table missing a column); nothing is written then.
    """
    src, schema = open_source(source)
    report = ImportReport(
        source=source,
        dry_run=dry_run,
        tables=sorted(schema.tables),
        missing_columns=schema.missing_columns(),
        counts={t: TableCount(t) for t in REPORT_TABLES},
    )
    moment = now or datetime.now(tz=UTC)
    try:
        with write_tx(engine) as conn:
            run = _Run(src, schema, conn, assistant_name, report, progress, timezone, moment)
            _import_chats(run)
            _import_messages(run)
            _import_groups(run)
            _import_tasks(run)
            _import_run_logs(run)
            _import_sessions(run)
            _import_cursors(run)
            if dry_run:
                raise _DryRun
    except _DryRun:
        pass
    except sqlite3.DatabaseError as exc:  # the source only: our own database speaks SQLAlchemy
        raise NanoClawImportError(f"{source}: {_source_problem(exc)}", path=source) from exc
    finally:
        src.close()
    return report


def _source_problem(exc: sqlite3.DatabaseError) -> str:
    """A one-line reason a NanoClaw store could not be read."""
    text = str(exc)
    if "locked" in text or "busy" in text:
        return f"the NanoClaw store is locked ({text}); stop NanoClaw and try again"
    if isinstance(exc, sqlite3.OperationalError):
        return f"not a NanoClaw store this importer understands: {text}"
    return f"unreadable SQLite database: {text}"


def _import_chats(run: _Run) -> None:
    count = run.count("chats")
    rows = run.src.execute(f"SELECT {_columns(run.schema, 'chats')} FROM chats").fetchall()
    backfill = not (run.schema.has("chats", "channel") and run.schema.has("chats", "is_group"))
    ours = {r.jid: r for r in run.conn.execute(select(_C))}
    for row in rows:
        count.in_source += 1
        if not row["jid"]:
            count.skipped += 1
            continue
        values = dict(row)
        if backfill:
            channel, is_group = jid_channel(values["jid"])
            if not run.schema.has("chats", "channel"):
                values["channel"] = channel
            if not run.schema.has("chats", "is_group"):
                values["is_group"] = is_group
        _merge_chat(run, count, ours.get(values["jid"]), values)


def _merge_chat(run: _Run, count: TableCount, existing: Any, values: dict[str, Any]) -> None:
    """Insert a new chat; for one we have, keep the newer time and fill what we lack."""
    if existing is None:
        run.conn.execute(insert(_C).values(**values))
        count.imported += 1
        return
    times = [t for t in (existing.last_message_time, values["last_message_time"]) if t]
    merged = {
        "last_message_time": max(times) if times else None,
        "channel": existing.channel if existing.channel is not None else values["channel"],
        "is_group": existing.is_group if existing.is_group is not None else values["is_group"],
        "name": existing.name
        if existing.name not in (None, "", existing.jid) or not values["name"]
        else values["name"],
    }
    if all(getattr(existing, k) == v for k, v in merged.items()):
        count.already_present += 1
        return
    run.conn.execute(update(_C).where(_C.c.jid == existing.jid).values(**merged))
    count.updated += 1


def _import_messages(run: _Run) -> None:
    count = run.count("messages")
    total = run.src.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
    params = () if run.schema.has("messages", "is_bot_message") else (_like_prefix(run.assistant_name),)
    cursor = run.src.execute(
        f"SELECT {_columns(run.schema, 'messages')} FROM messages ORDER BY timestamp, rowid", params
    )
    run.chats_with_history = set(run.conn.execute(select(_M.c.chat_jid).distinct()).scalars())
    known_chats = set(run.conn.execute(select(_C.c.jid)).scalars())
    next_seq = int(run.conn.execute(select(func.coalesce(func.max(_M.c.seq), 0))).scalar_one()) + 1
    done = 0
    for rows in _batches(cursor):
        ids = list({r["id"] for r in rows if r["id"] is not None})
        present = {
            (r.id, r.chat_jid)
            for r in run.conn.execute(select(_M.c.id, _M.c.chat_jid).where(_M.c.id.in_(ids)))
        }
        fresh: list[dict[str, Any]] = []
        for row in rows:
            count.in_source += 1
            key = (row["id"], row["chat_jid"])
            if key[0] is None or key[1] is None:
                count.skipped += 1
                continue
            if key in present:
                count.already_present += 1
                continue
            present.add(key)
            values = dict(row)
            values["is_from_me"] = int(bool(values["is_from_me"]))
            values["is_bot_message"] = int(bool(values["is_bot_message"]))
            values["seq"] = next_seq
            values["received_at_ms"] = iso_to_ms(values["timestamp"])
            run.imported_max_seq[key[1]] = next_seq
            next_seq += 1
            fresh.append(values)
        for chat in {v["chat_jid"] for v in fresh} - known_chats:
            # A message whose chat row is missing (NanoClaw did not enforce the foreign key).
            newest = max((v["timestamp"] or "" for v in fresh if v["chat_jid"] == chat), default="") or None
            run.conn.execute(insert(_C).values(jid=chat, name=chat, last_message_time=newest))
            run.count("chats").imported += 1
            known_chats.add(chat)
        if fresh:
            run.conn.execute(insert(_M), fresh)
            count.imported += len(fresh)
        done += len(rows)
        if run.progress is not None:
            run.progress(done, total)
    for chat in sorted(run.chats_with_history & set(run.imported_max_seq)):
        run.warn(
            f"chat {chat} already had MicroClaw messages: its imported NanoClaw messages are ordered after "
            "them and counted as already processed"
        )


def _like_prefix(assistant_name: str) -> str:
    escaped = assistant_name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"{escaped}:%"


def _import_groups(run: _Run) -> None:
    count = run.count("registered_groups")
    if "registered_groups" not in run.schema.tables:
        return
    rows = run.src.execute(
        f"SELECT {_columns(run.schema, 'registered_groups')} FROM registered_groups ORDER BY added_at"
    ).fetchall()
    ours = {r.jid: r for r in run.conn.execute(select(_G))}
    folders = {r.folder: r.jid for r in ours.values()}
    mains = {r.jid for r in ours.values() if r.is_main == 1}
    for row in rows:
        count.in_source += 1
        values = dict(row)
        jid, folder = values["jid"], values["folder"]
        if not is_valid_group_folder(folder or ""):
            count.skipped += 1
            run.warn(f"registered group {jid} skipped: invalid folder {folder!r}")
            continue
        if jid in ours:
            count.already_present += 1
            if ours[jid].folder == folder:
                run.report.group_folders.append(folder)
            continue
        if folder in folders:
            count.skipped += 1
            run.warn(
                f"registered group {jid} skipped: folder {folder!r} is already used by {folders[folder]}"
            )
            continue
        if None in (jid, values["name"], values["trigger_pattern"], values["added_at"]):
            count.skipped += 1
            run.warn(f"registered group {jid} skipped: a required column is empty")
            continue
        values["is_main"] = int(values["is_main"] == 1)
        run.conn.execute(insert(_G).values(**values))
        count.imported += 1
        folders[folder] = jid
        run.report.group_folders.append(folder)
        if values["is_main"]:
            if mains:
                run.warn(f"{jid} is imported as a main group; {', '.join(sorted(mains))} is main too")
            mains.add(jid)


def _import_tasks(run: _Run) -> None:
    count = run.count("scheduled_tasks")
    if "scheduled_tasks" not in run.schema.tables:
        return
    rows = run.src.execute(
        f"SELECT {_columns(run.schema, 'scheduled_tasks')} FROM scheduled_tasks ORDER BY created_at"
    ).fetchall()
    ours = set(run.conn.execute(select(_T.c.id)).scalars())
    # Groups as they are here after _import_groups: chat jid -> folder.
    registered = {r.jid: r.folder for r in run.conn.execute(select(_G.c.jid, _G.c.folder))}
    for row in rows:
        count.in_source += 1
        values = dict(row)
        if values["id"] in ours:
            count.already_present += 1
            continue
        problem = _task_problem(values, registered, run.timezone, run.now)
        if problem is not None:
            count.skipped += 1
            run.warn(f"scheduled task {values['id']!r} skipped: {problem}")
            continue
        run.conn.execute(insert(_T).values(**values))
        ours.add(values["id"])
        count.imported += 1


_TASK_TEXT = ("id", "group_folder", "chat_jid", "prompt", "schedule_type", "schedule_value", "created_at")
_TASK_STATUSES = (None, "active", "paused", "completed")


def _task_problem(
    values: dict[str, Any], registered: dict[str, str], timezone: str, now: datetime
) -> str | None:
    """Why a source task row must not be imported (None: it may), normalising it in place.

    The row must name a group registered here with exactly that chat (a task runs with its
    folder's powers, so main's folder paired with another chat is refused), carry a schedule
    MicroClaw can compute, and stored times that parse and stay within the year 9999 (the next
    run is rewritten in the canonical form, so SQL's string comparisons order it right).
    """
    if any(not isinstance(values[c], str) or not values[c] for c in _TASK_TEXT):
        return "a required column is empty or not text"
    if values["script"] is not None and not isinstance(values["script"], str):
        return "its script is not text"
    if values["status"] not in _TASK_STATUSES:
        return f"unknown status {values['status']!r}"
    folder, chat = values["group_folder"], values["chat_jid"]
    if registered.get(chat) != folder:
        owner = registered.get(chat)
        return f"its chat {chat!r} is not the chat registered to folder {folder!r} " + (
            f"(that chat belongs to {owner!r})" if owner else "(that chat is not a registered group)"
        )
    try:
        validate_schedule(values["schedule_type"], values["schedule_value"], timezone)
        for column in ("created_at", "last_run"):
            if values[column] is not None:
                parse_iso(values[column])
        if values["next_run"] is not None:
            scheduled = parse_iso(values["next_run"])
            values["next_run"] = iso(scheduled)
            # The tick's arithmetic for this row, now: a next run past the year 9999 is refused here.
            kind, value = values["schedule_type"], values["schedule_value"]
            next_run(kind, value, scheduled, max(scheduled, now), timezone)
    except ValueError as exc:
        return str(exc)
    if values["context_mode"] not in CONTEXT_MODES:
        values["context_mode"] = "isolated"  # NanoClaw's rule for a missing or unknown mode
    return None


def _import_run_logs(run: _Run) -> None:
    count = run.count("task_run_logs")
    if "task_run_logs" not in run.schema.tables:
        return
    fields = ("task_id", "run_at", "duration_ms", "status", "result", "error")
    tasks = set(run.conn.execute(select(_T.c.id)).scalars())
    # Run logs have no natural key; identical rows are matched one for one, so re-runs add nothing.
    ours = Counter(tuple(r) for r in run.conn.execute(select(*(_L.c[f] for f in fields))))
    missing_tasks: set[str] = set()
    fresh: list[dict[str, Any]] = []
    for row in run.src.execute(f"SELECT {', '.join(fields)} FROM task_run_logs ORDER BY id"):
        count.in_source += 1
        key = tuple(row)
        if ours[key] > 0:
            ours[key] -= 1
            count.already_present += 1
            continue
        if row["task_id"] not in tasks:
            count.skipped += 1
            missing_tasks.add(str(row["task_id"]))
            continue
        if None in (row["run_at"], row["duration_ms"], row["status"]):
            count.skipped += 1
            continue
        fresh.append(dict(zip(fields, key, strict=True)))
    if fresh:
        run.conn.execute(insert(_L), fresh)
        count.imported += len(fresh)
    if missing_tasks:
        run.warn(f"run logs of unknown task(s) skipped: {', '.join(sorted(missing_tasks))}")


def _import_sessions(run: _Run) -> None:
    count = run.count("sessions")
    if "sessions" not in run.schema.tables:
        return
    ours = set(run.conn.execute(select(_SESS.c.group_folder)).scalars())
    folders = set(run.conn.execute(select(_G.c.folder)).scalars())
    for row in run.src.execute("SELECT group_folder, session_id FROM sessions"):
        count.in_source += 1
        folder, session = row["group_folder"], row["session_id"]
        if folder in ours:
            count.already_present += 1
        elif not (isinstance(folder, str) and is_valid_group_folder(folder) and isinstance(session, str)) or (
            not session
        ):
            count.skipped += 1
            run.warn(f"session of folder {folder!r} skipped: invalid folder or empty session id")
        elif folder not in folders:
            count.skipped += 1
            run.warn(f"session of folder {folder!r} skipped: no group is registered with that folder")
        else:
            run.conn.execute(insert(_SESS).values(group_folder=folder, session_id=session))
            ours.add(folder)
            count.imported += 1


def _router_state(run: _Run) -> tuple[dict[str, Any], str | None]:
    if "router_state" not in run.schema.tables:
        return {}, None
    state = {r["key"]: r["value"] for r in run.src.execute("SELECT key, value FROM router_state")}
    last_ts = state.get("last_timestamp") or None
    try:
        per_chat = json.loads(state.get("last_agent_timestamp") or "{}")
    except ValueError:
        run.warn("router_state.last_agent_timestamp is not valid JSON; per-chat cursors not imported")
        per_chat = {}
    if not isinstance(per_chat, dict):
        run.warn("router_state.last_agent_timestamp is not a JSON object; per-chat cursors not imported")
        per_chat = {}
    return per_chat, last_ts


def _seq_at(conn: Connection, chat: str, iso: str) -> int:
    """The seq of the chat's last message with ``timestamp <= iso`` (0 when none)."""
    value = conn.execute(
        select(func.max(_M.c.seq)).where(_M.c.chat_jid == chat, _M.c.timestamp <= iso)
    ).scalar_one()
    return int(value or 0)


def _import_cursors(run: _Run) -> None:
    count = run.count("group_state")
    per_chat, last_ts = _router_state(run)
    targets: dict[str, tuple[int, int]] = {}  # chat -> (cursor_seq, seen_seq)
    for chat, stamp in per_chat.items():
        at = _seq_at(run.conn, chat, stamp) if isinstance(stamp, str) and stamp else 0
        targets[str(chat)] = (at, at)
    if last_ts and "registered_groups" in run.schema.tables:
        for (chat,) in run.src.execute("SELECT jid FROM registered_groups"):
            if chat is not None and chat not in targets:
                targets[chat] = (0, _seq_at(run.conn, chat, last_ts))
    for chat in run.chats_with_history & set(run.imported_max_seq):
        newest = run.imported_max_seq[chat]
        cursor, seen = targets.get(chat, (0, 0))
        targets[chat] = (max(cursor, newest), max(seen, newest))
    ours = {r.chat_jid: r for r in run.conn.execute(select(_S.c.chat_jid, _S.c.cursor_seq, _S.c.seen_seq))}
    count.in_source += len(targets)
    for chat, (cursor, seen) in sorted(targets.items()):
        existing = ours.get(chat)
        if existing is None:
            if cursor == 0 and seen == 0:
                count.skipped += 1
                continue
            run.conn.execute(insert(_S).values(chat_jid=chat, cursor_seq=cursor, seen_seq=seen))
            count.imported += 1
            continue
        merged = (max(existing.cursor_seq, cursor), max(existing.seen_seq, seen))
        if merged == (existing.cursor_seq, existing.seen_seq):
            count.already_present += 1
            continue
        run.conn.execute(
            update(_S).where(_S.c.chat_jid == chat).values(cursor_seq=merged[0], seen_seq=merged[1])
        )
        count.updated += 1


# --- group folders -----------------------------------------------------------------------------


def copy_group_folders(
    source_dir: Path,
    dest_dir: Path,
    folders: list[str],
    *,
    dry_run: bool = False,
    on_refused: Callable[[str, UnsafePath], None] | None = None,
) -> TableCount:
    """Copy ``source_dir/<folder>/**`` into ``dest_dir/<folder>/`` for each folder (and
    ``global`` when present), never overwriting a file that exists.

    Both trees were written by containers, so both go through `microclaw.safefs` and no link
    is ever followed: in the source, links and special files are skipped (counted). In the
    destination, a directory that is a link (or not a directory), at any depth, is refused:
    nothing is written through it, the file counts as skipped and ``on_refused(folder, exc)``
    hears of it. A new file is created exclusively (``O_EXCL``), so an existing name, whatever
    it is, counts as already present and is left alone.
    """
    if not source_dir.is_dir():
        raise NanoClawImportError(
            f"{source_dir}: not a directory (expected NanoClaw's groups/)", path=source_dir
        )
    count = TableCount("files")
    names = sorted(set(folders)) + (["global"] if (source_dir / "global").is_dir() else [])
    for name in names:
        # "global" is reserved for groups but is NanoClaw's shared memory folder; it is a literal.
        if name != "global" and not is_valid_group_folder(name):
            continue
        for entry in _source_entries(source_dir, name):
            count.in_source += 1
            try:
                outcome = _copy_entry(entry, dest_dir, (name, *entry.rel), dry_run=dry_run)
            except UnsafePath as exc:
                exc.group = name
                if on_refused is not None:
                    on_refused(name, exc)
                outcome = "skipped"
            if outcome == "imported":
                count.imported += 1
            elif outcome == "present":
                count.already_present += 1
            else:
                count.skipped += 1
    return count


def _source_entries(source_dir: Path, name: str) -> Iterator[safefs.Entry]:
    """The entries below ``source_dir/name``; none when it is missing or not a real directory."""
    walker = safefs.walk(source_dir, [name])
    try:
        first = next(walker, None)
    except (FileNotFoundError, UnsafePath):
        return
    if first is not None:
        yield first
        yield from walker


def _copy_entry(entry: safefs.Entry, dest_dir: Path, parts: tuple[str, ...], *, dry_run: bool) -> str:
    """``imported``, ``present`` or ``skipped`` (not a regular file in the source); raises
    `UnsafePath` when the destination would be reached through a link."""
    if entry.kind != "file":
        return "skipped"
    try:
        src = safefs.open_file_at(entry.dir_fd, entry.name)
    except (UnsafePath, FileNotFoundError):  # changed since it was listed
        return "skipped"
    with os.fdopen(src, "rb") as reader:
        if dry_run:
            return "present" if _exists(dest_dir, parts) else "imported"
        dir_fd = safefs.open_dir(dest_dir, parts[:-1], create=True)
        try:
            out = safefs.create_file_at(dir_fd, parts[-1])
        finally:
            os.close(dir_fd)
        if out is None:
            return "present"
        st = os.fstat(src)
        with os.fdopen(out, "wb") as writer:
            shutil.copyfileobj(reader, writer)
            writer.flush()
            os.fchmod(out, stat.S_IMODE(st.st_mode) & 0o777)
            os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns))
    return "imported"


def _exists(dest_dir: Path, parts: tuple[str, ...]) -> bool:
    """Whether ``dest_dir/parts...`` exists (as anything), checked the way a copy would go."""
    try:
        dir_fd = safefs.open_dir(dest_dir, parts[:-1])
    except FileNotFoundError:
        return False
    try:
        os.stat(parts[-1], dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    finally:
        os.close(dir_fd)
    return True


# --- command line --------------------------------------------------------------------------------


def run_command(
    settings: Any, path: Path, *, groups_dir: Path | None, dry_run: bool, assistant_name: str | None
) -> int:
    """``microclaw import-nanoclaw``: import, print counts per table, return the exit code."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    from rich.table import Table

    from microclaw.store.db import create_sqlite_engine, migrate

    out, err = Console(), Console(stderr=True)
    refused: dict[str, UnsafePath] = {}
    db_path: Path = settings.store.db_path
    scratch = None
    if dry_run and not db_path.exists():  # nothing to compare with: a throwaway empty database
        scratch = tempfile.TemporaryDirectory(prefix="microclaw-import-")
        db_path = Path(scratch.name) / "microclaw.db"
    try:
        open_source(path)[0].close()
        if groups_dir is not None and not groups_dir.is_dir():
            raise NanoClawImportError(
                f"{groups_dir}: not a directory (expected NanoClaw's groups/)", path=groups_dir
            )
        migrate(db_path, busy_timeout_s=settings.store.busy_timeout_s)
        engine = create_sqlite_engine(db_path, busy_timeout_s=settings.store.busy_timeout_s, pooled=False)
        try:
            with Progress(
                TextColumn("messages"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=err,
                transient=True,
            ) as bar:
                task = bar.add_task("messages", total=None, visible=False)

                def progress(done: int, total: int) -> None:
                    bar.update(task, completed=done, total=total, visible=total >= 10 * _BATCH)

                report = import_nanoclaw(
                    path,
                    engine,
                    assistant_name=assistant_name or settings.assistant_name,
                    dry_run=dry_run,
                    progress=progress,
                    timezone=settings.timezone,
                )
            if groups_dir is not None:
                report.counts["files"] = copy_group_folders(
                    groups_dir,
                    settings.groups_dir,
                    report.group_folders,
                    dry_run=dry_run,
                    on_refused=lambda folder, exc: refused.update({exc.path: exc}),
                )
                for refusal in refused.values():
                    logger.warning(
                        "refused to import into %s: %s",
                        refusal.path,
                        refusal.problem,
                        extra={"group": refusal.group},
                    )
                    if not dry_run:
                        audit.record_now(
                            engine,
                            "fs.refused",
                            decision="deny",
                            group=refusal.group,
                            use="import",
                            path=refusal.path,
                            problem=refusal.problem,
                        )
        finally:
            engine.dispose()
    except StoreError as exc:  # NanoClawImportError included; a busy database is a TransientStoreError
        err.print(f"[bold red]error:[/] {exc}; nothing was imported", highlight=False)
        return 1
    except SQLAlchemyError as exc:  # our database refused the write: the transaction rolled back
        err.print(
            f"[bold red]error:[/] {db_path}: {type(exc).__name__}: {getattr(exc, 'orig', None) or exc}; "
            "nothing was imported",
            highlight=False,
        )
        return 1
    finally:
        if scratch is not None:
            scratch.cleanup()

    table = Table(title=f"{'DRY RUN — would import' if dry_run else 'Imported'} from {report.source}")
    for col in (
        "table",
        "in source",
        "new" if not dry_run else "would add",
        "already present",
        "updated",
        "skipped",
    ):
        table.add_column(col, justify="left" if col == "table" else "right")
    for name, c in report.counts.items():
        label = "cursors (group_state)" if name == "group_state" else name
        table.add_row(
            label, str(c.in_source), str(c.imported), str(c.already_present), str(c.updated), str(c.skipped)
        )
    out.print(table)
    if report.missing_columns:
        missing = "; ".join(f"{t}: {', '.join(cols)}" for t, cols in report.missing_columns.items())
        out.print(f"older NanoClaw schema, missing columns filled with defaults/backfills: {missing}")
    for warning in report.warnings:
        err.print(f"[yellow]warning:[/] {warning}", highlight=False)
    for refusal in refused.values():
        err.print(
            f"[bold red]error:[/] not copied: {settings.groups_dir / refusal.path} {refusal.problem}; "
            "nothing was written through it (remove it and run the import again)",
            highlight=False,
        )
    if dry_run:
        out.print("dry run: nothing was written")
    else:
        out.print(
            f"{report.changed} new or updated rows" + (" (already up to date)" if not report.changed else "")
        )
    return 1 if refused else 0
