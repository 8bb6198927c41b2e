"""iMessage on macOS: tail the Messages database read-only, send through AppleScript.

Capability card:
- Platform: macOS only, with Full Disk Access (to read ``chat.db``) and Automation permission
  for Messages (to send). Elsewhere `available()` says "unavailable: not macOS" and the
  connector is skipped at boot.
- Addresses: ``imsg:<chat guid>`` (``imsg:iMessage;-;+15551234567``, ``imsg:any;+;chat123…`` on
  macOS 26); a group chat is one group. ``message_id`` is ``imsg:<message guid>``.
- Inbound: ``chat.db`` (``chat_db``, default ``~/Library/Messages/chat.db``) is opened with
  ``mode=ro`` and polled every ``poll_interval_s`` for rows with ``ROWID`` above a cursor kept
  in the connector's state file. The body is ``text``, or the string decoded from
  ``attributedBody`` when ``text`` is NULL; attachments become ``[Attachment: name]``.
  Tapbacks and group events (renames, joins) are skipped. A row whose chat link is not written
  yet is waited for (``join_grace_s``) before anything after it.
- Ack point: the cursor moves past a ROWID only after ``deliver`` returned for it. A crash before
  that reads the row again; the store keeps one copy by ``message_id``.
- First start: the cursor starts at the newest row (history is not imported); a cursor beyond
  the database's newest row (a rebuilt database) is reset to it with a warning.
- Own messages: rows with ``is_from_me`` are delivered marked ``is_from_me``; echoes of replies
  this connector sent (same text within ``echo_ttl_s``) are skipped.
- Outbound: ``osascript`` reads a fixed script from stdin and gets the text and the chat only as
  ``on run argv`` arguments, never interpolated into the script. When Messages cannot find the
  chat by id (error -1728) a direct chat is retried through its participant; for a group chat
  that is permanent. -1743 (no Automation permission) is permanent; other failures are
  transient. Sends are not idempotent (an interrupted one is marked uncertain).
- Limits: replies split at 16 384 characters; no rate limit of its own (Apple throttles and
  flags bulk senders).
- Required settings: none (``chat_db``, ``osascript``, ``poll_interval_s``, ``join_grace_s``,
  ``send_timeout_s`` and ``echo_ttl_s`` have defaults). Secrets: none (macOS permissions instead).
- State: ``<data_dir>/imessage-state.db`` (`ConnectorState`): ``cursor`` (the last delivered
  ROWID) and ``sent:<hash>`` (texts just sent, to recognise their echo; pruned after ``echo_ttl_s``).
- Cannot: read contact names (senders are phone numbers or addresses), send attachments,
  react, show "typing…", see edits or unsends of messages already delivered, start a chat that Messages does
  not know.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import re
import shutil
import sqlite3
import sys
import time
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

from microclaw.connectors.base import BaseConnector, ConnectorSettings, Deliver
from microclaw.connectors.state import ConnectorState
from microclaw.connectors.typedstream import decode_attributed_body
from microclaw.envelope import Envelope, make_envelope
from microclaw.errors import ConfigError, EnvelopeError, PermanentConnectorError, TransientConnectorError

logger = logging.getLogger(__name__)

DEFAULT_CHAT_DB = "~/Library/Messages/chat.db"
# Seconds between 1970-01-01 and Apple's epoch, 2001-01-01 (UTC).
APPLE_EPOCH_S = 978_307_200
BATCH = 200
GROUP_STYLE = 43
_ERROR_CODE = re.compile(r"\((-?\d+)\)\s*$")
# AppleScript errors: -1728 "can't get object", -1743 "not authorized to send Apple events".
ERR_NOT_FOUND = -1728
ERR_NOT_AUTHORIZED = -1743

# The scripts are constants; everything variable arrives as an `on run argv` argument.
SEND_TO_CHAT = """on run argv
    set theText to item 1 of argv
    set theChat to item 2 of argv
    tell application "Messages"
        send theText to chat id theChat
    end tell
end run
"""
SEND_TO_PARTICIPANT = """on run argv
    set theText to item 1 of argv
    set theHandle to item 2 of argv
    set theService to item 3 of argv
    tell application "Messages"
        if theService is "SMS" then
            set theAccount to 1st account whose service type = SMS
        else
            set theAccount to 1st account whose service type = iMessage
        end if
        send theText to participant theHandle of theAccount
    end tell
end run
"""


def available(platform: str = sys.platform) -> str | None:
    """None when iMessage can run here, else why not."""
    return None if platform == "darwin" else "unavailable: not macOS"


def apple_time_ms(value: int | None) -> int | None:
    """``message.date`` (nanoseconds since 2001-01-01; seconds before macOS 10.13) as Unix ms."""
    if value is None or value <= 0:
        return None
    seconds = value / 1e9 if value > 10**11 else float(value)
    return int((seconds + APPLE_EPOCH_S) * 1000)


def split_chat_guid(guid: str) -> tuple[str, str, str]:
    """(service, kind, identifier) of ``service;-;id`` (direct) or ``service;+;id`` (group).

    Split on the separator, not a known service name: macOS 26 writes ``any;-;…``.
    """
    parts = guid.split(";", 2)
    if len(parts) != 3:
        return "", "", guid
    return parts[0], parts[1], parts[2]


def is_direct_chat(guid: str) -> bool:
    return split_chat_guid(guid)[1] == "-"


def echo_key(text: str) -> str:
    """State key under which a sent text is remembered to recognise its echo in chat.db."""
    normal = unicodedata.normalize("NFC", text.replace("\ufffc", "")).strip()
    return "sent:" + hashlib.sha256(normal.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ChatRow:
    """One ``message`` row with its chat and sender, as read from chat.db."""

    rowid: int
    guid: str
    text: str | None
    attributed_body: bytes | None
    date: int | None
    is_from_me: bool
    associated_type: int
    item_type: int
    has_attachments: bool
    thread_originator: str | None
    handle: str | None
    chat_guid: str | None
    chat_style: int | None
    chat_name: str | None
    attachments: tuple[str, ...] = ()

    def body(self) -> str:
        """The message text: ``text``, else the decoded ``attributedBody``; attachments named."""
        text = (self.text or "").replace("\ufffc", "").strip()
        if not text:
            text = (decode_attributed_body(self.attributed_body) or "").strip()
        lines = [text] if text else []
        lines += [f"[Attachment: {name}]" for name in self.attachments]
        return "\n".join(lines)


class ChatDb:
    """A read-only connection to chat.db that reads message rows after a ROWID.

    Columns differ between macOS versions; missing optional ones read as NULL/0.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.db = sqlite3.connect(
                path.resolve().as_uri() + "?mode=ro", uri=True, isolation_level=None, check_same_thread=False
            )
            columns = {row[1] for row in self.db.execute("PRAGMA table_info(message)")}
            tables = {
                row[0] for row in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            }
        except sqlite3.Error as exc:
            raise PermanentConnectorError(
                f"cannot read {path} ({exc}); the host needs Full Disk Access"
            ) from exc
        if not {"message", "handle", "chat", "chat_message_join"} <= tables or "ROWID" not in columns:
            raise PermanentConnectorError(f"{path} does not look like a Messages database")

        def col(name: str, default: str) -> str:
            return f"m.{name}" if name in columns else default

        self._has_attachments = {"attachment", "message_attachment_join"} <= tables
        self._query = (
            "SELECT m.ROWID, m.guid, m.text, "
            f"{col('attributedBody', 'NULL')}, {col('date', 'NULL')}, {col('is_from_me', '0')}, "
            f"{col('associated_message_type', '0')}, {col('item_type', '0')}, "
            f"{col('cache_has_attachments', '0')}, {col('thread_originator_guid', 'NULL')}, "
            "h.id, c.guid, c.style, COALESCE(NULLIF(c.display_name, ''), c.chat_identifier)"
            " FROM message m"
            " LEFT JOIN handle h ON h.ROWID = m.handle_id"
            " LEFT JOIN chat c ON c.ROWID ="
            " (SELECT MIN(j.chat_id) FROM chat_message_join j WHERE j.message_id = m.ROWID)"
            " WHERE m.ROWID > ? ORDER BY m.ROWID LIMIT ?"
        )

    def max_rowid(self) -> int:
        return int(self.db.execute("SELECT COALESCE(MAX(ROWID), 0) FROM message").fetchone()[0])

    def rows_after(self, rowid: int, limit: int = BATCH) -> list[ChatRow]:
        rows = []
        for r in self.db.execute(self._query, (rowid, limit)).fetchall():
            row = ChatRow(
                rowid=int(r[0]),
                guid=str(r[1]),
                text=r[2],
                attributed_body=bytes(r[3]) if r[3] is not None else None,
                date=r[4],
                is_from_me=bool(r[5]),
                associated_type=int(r[6] or 0),
                item_type=int(r[7] or 0),
                has_attachments=bool(r[8]),
                thread_originator=r[9],
                handle=r[10],
                chat_guid=r[11],
                chat_style=r[12],
                chat_name=r[13],
            )
            if row.has_attachments and self._has_attachments:
                row = dataclasses.replace(row, attachments=self._attachment_names(row.rowid))
            rows.append(row)
        return rows

    def _attachment_names(self, rowid: int) -> tuple[str, ...]:
        names = self.db.execute(
            "SELECT COALESCE(NULLIF(a.transfer_name, ''), a.filename) FROM message_attachment_join j"
            " JOIN attachment a ON a.ROWID = j.attachment_id WHERE j.message_id = ? ORDER BY a.ROWID",
            (rowid,),
        ).fetchall()
        return tuple(Path(str(n[0])).name if n[0] else "attachment" for n in names)

    def close(self) -> None:
        self.db.close()


class IMessageConnector(BaseConnector):
    name: ClassVar[str] = "imessage"
    prefix: ClassVar[str] = "imsg"
    max_text_len: ClassVar[int] = 16384
    idempotent_send: ClassVar[bool] = False
    secrets: ClassVar[tuple[str, ...]] = ()
    state_file: ClassVar[str | None] = "imessage-state.db"

    def __init__(
        self,
        chat_db: Path,
        state: ConnectorState,
        *,
        osascript: str = "osascript",
        poll_interval_s: float = 1.0,
        join_grace_s: float = 5.0,
        send_timeout_s: float = 30.0,
        echo_ttl_s: float = 600.0,
        max_text_bytes: int = 65536,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.chat_db = chat_db
        self.state = state
        self.osascript = osascript
        self.poll_interval_s = poll_interval_s
        self.join_grace_s = join_grace_s
        self.send_timeout_s = send_timeout_s
        self.echo_ttl_s = echo_ttl_s
        self.max_text_bytes = max_text_bytes
        self.clock = clock
        self._unlinked_since: dict[int, float] = {}

    @classmethod
    def available(cls) -> str | None:
        """None when this machine can run iMessage, else the reason it cannot."""
        return available()

    @classmethod
    def from_settings(cls, settings: ConnectorSettings) -> Self:
        reason = cls.available()
        if reason is not None:
            raise ConfigError(reason, key="connectors.imessage")
        opts: Mapping[str, Any] = settings.options
        chat_db = Path(str(opts.get("chat_db") or DEFAULT_CHAT_DB)).expanduser()
        if not chat_db.is_file():
            raise ConfigError(
                f"connectors.imessage.chat_db: {chat_db} not found", key="connectors.imessage.chat_db"
            )
        osascript = str(opts.get("osascript") or "osascript")
        if shutil.which(osascript) is None:
            raise ConfigError(
                f"connectors.imessage.osascript: {osascript} not found", key="connectors.imessage.osascript"
            )
        try:
            return cls(
                chat_db,
                cls.open_state(settings),
                osascript=osascript,
                poll_interval_s=float(opts.get("poll_interval_s") or 1.0),
                join_grace_s=float(opts.get("join_grace_s") or 5.0),
                send_timeout_s=float(opts.get("send_timeout_s") or 30.0),
                echo_ttl_s=float(opts.get("echo_ttl_s") or 600.0),
                max_text_bytes=settings.max_text_bytes,
            )
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"connectors.imessage: {exc}", key="connectors.imessage") from None

    # --- inbound ------------------------------------------------------------------------

    async def listen(self, deliver: Deliver) -> None:
        db = await asyncio.to_thread(ChatDb, self.chat_db)
        try:
            cursor = await asyncio.to_thread(self._initial_cursor, db)
            logger.info(
                "imessage: reading %s after ROWID %d", self.chat_db, cursor, extra={"connector": self.name}
            )
            while True:
                rows = await asyncio.to_thread(self._read, db, cursor)
                finished = True
                for row in rows:
                    if row.chat_guid is None and not self._waited_enough(row.rowid):
                        finished = False  # its chat link is not written yet; keep the order
                        break
                    envelope = await asyncio.to_thread(self.envelope_for, row)
                    if envelope is not None:
                        await deliver(envelope)
                    cursor = row.rowid
                    # The ack point: the message is durable, so move past it.
                    await asyncio.to_thread(self.state.put, "cursor", cursor)
                    self._unlinked_since.pop(row.rowid, None)
                if finished and len(rows) == BATCH:
                    continue
                await asyncio.sleep(self.poll_interval_s)
        finally:
            db.close()

    def _read(self, db: ChatDb, cursor: int) -> list[ChatRow]:
        try:
            return db.rows_after(cursor)
        except sqlite3.Error as exc:
            raise TransientConnectorError(f"reading {self.chat_db}: {exc}") from exc

    def _initial_cursor(self, db: ChatDb) -> int:
        newest = db.max_rowid()
        saved = self.state.get("cursor")
        if saved is None:
            logger.info("imessage: first start; earlier messages are not imported")
            cursor = newest
        elif int(saved) > newest:
            logger.warning(
                "imessage: cursor %d is past the newest row %d (database rebuilt?); starting at %d",
                saved,
                newest,
                newest,
                extra={"connector": self.name},
            )
            cursor = newest
        else:
            cursor = int(saved)
        self.state.put("cursor", cursor)
        self.state.prune("sent:", int(time.time() * 1000 - self.echo_ttl_s * 1000))
        return cursor

    def _waited_enough(self, rowid: int) -> bool:
        first = self._unlinked_since.setdefault(rowid, self.clock())
        if self.clock() - first < self.join_grace_s:
            return False
        logger.warning(
            "imessage: message row %d has no chat after %.0f s; skipped",
            rowid,
            self.join_grace_s,
            extra={"connector": self.name},
        )
        return True

    def _is_echo(self, row: ChatRow) -> bool:
        """Whether an is_from_me row is the echo of a reply this connector sent (forgets it)."""
        key = echo_key(row.body())
        sent = self.state.get(key)
        if sent is None:
            return False
        self.state.delete(key)
        return bool(time.time() * 1000 - float(sent) <= self.echo_ttl_s * 1000)

    def envelope_for(self, row: ChatRow) -> Envelope | None:
        """The envelope of one chat.db row, or None for rows that are not chat messages."""
        if row.chat_guid is None or row.associated_type != 0 or row.item_type != 0:
            return None  # no chat, a tapback, or a group event
        text = row.body()
        if not text:
            logger.debug("imessage: row %d has no text", row.rowid)
            return None
        if row.is_from_me and self._is_echo(row):
            logger.debug("imessage: row %d is the echo of our reply", row.rowid)
            return None
        sender = "me" if row.is_from_me else (row.handle or "")
        _, kind, _ = split_chat_guid(row.chat_guid)
        try:
            return make_envelope(
                source=self.name,
                message_id=f"imsg:{row.guid}",
                chat_id=f"imsg:{row.chat_guid}",
                text=_truncate(text, self.max_text_bytes),
                sender=sender,
                sender_name=sender,
                ts_ms=apple_time_ms(row.date),
                max_text_bytes=self.max_text_bytes,
                is_from_me=row.is_from_me,
                reply_to_message_id=f"imsg:{row.thread_originator}" if row.thread_originator else None,
                chat_name=row.chat_name or None,
                is_group=row.chat_style == GROUP_STYLE or kind == "+",
            )
        except EnvelopeError as exc:
            logger.warning("imessage: row %d rejected: %s", row.rowid, exc, extra={"connector": self.name})
            return None

    # --- outbound -----------------------------------------------------------------------

    async def send(self, chat_id: str, text: str, *, idempotency_key: str) -> str:
        if not self.owns(chat_id):
            raise PermanentConnectorError(f"not an iMessage address: {chat_id!r}", chat_id=chat_id)
        guid = chat_id.removeprefix(f"{self.prefix}:")
        text = text.replace("\x00", "")  # an argv string cannot hold NUL
        # Remember the text before sending: its echo may reach chat.db before osascript returns.
        await asyncio.to_thread(self.state.put, echo_key(text), int(time.time() * 1000))
        code, detail = await self._osascript(SEND_TO_CHAT, text, guid, chat_id=chat_id)
        if code == ERR_NOT_FOUND and is_direct_chat(guid):
            service, _, handle = split_chat_guid(guid)
            logger.info(
                "imessage: chat id not found; sending to the participant", extra={"chat_jid": chat_id}
            )
            code, detail = await self._osascript(SEND_TO_PARTICIPANT, text, handle, service, chat_id=chat_id)
        if code is None:
            return "imsg-sent:" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:24]
        await asyncio.to_thread(self.state.delete, echo_key(text))
        if code == ERR_NOT_FOUND:
            raise PermanentConnectorError(f"Messages has no chat {guid!r}", chat_id=chat_id)
        if code == ERR_NOT_AUTHORIZED:
            raise PermanentConnectorError(
                "not allowed to control Messages: grant Automation permission", chat_id=chat_id
            )
        if text:  # an AppleScript error may quote the message; it must not reach logs or the outbox
            detail = detail.replace(text, "<message>")
        raise TransientConnectorError(f"osascript failed ({code}): {detail}", chat_id=chat_id)

    async def _osascript(self, script: str, *args: str, chat_id: str) -> tuple[int | None, str]:
        """Run ``script`` (from stdin) with ``args`` as ``argv``; (None, "") on success, else
        (AppleScript error number or 1, stderr)."""
        try:
            proc = await asyncio.create_subprocess_exec(
                self.osascript,
                "-",
                *args,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            raise PermanentConnectorError(f"cannot run {self.osascript}: {exc}", chat_id=chat_id) from exc
        try:
            _, err = await asyncio.wait_for(proc.communicate(script.encode()), timeout=self.send_timeout_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise TransientConnectorError(
                f"osascript did not finish in {self.send_timeout_s:g} s", chat_id=chat_id
            ) from None
        if proc.returncode == 0:
            return None, ""
        detail = err.decode("utf-8", "replace").strip()
        match = _ERROR_CODE.search(detail)
        return (int(match.group(1)) if match else 1), detail[-300:]

    async def close(self) -> None:
        self.state.close()


def _truncate(text: str, max_bytes: int) -> str:
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return text
    marker = "\n[truncated]"
    return data[: max_bytes - len(marker.encode())].decode("utf-8", "ignore") + marker
