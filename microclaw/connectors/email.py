"""Email: receive from one IMAP folder (IDLE push, polling fallback), reply over SMTP.

Capability card:
- Addresses: ``email:<address>`` with one group per correspondent (``group_by = "correspondent"``,
  the default), or ``email:<root Message-ID>`` (angle brackets kept, ``email:<abc@host>``) with one
  group per thread (``group_by = "thread"``; the root is the first ``References`` entry).
- Inbound: IMAP IDLE on ``folder``; when the server does not offer IDLE (or ``idle = false``) the
  folder is polled every ``poll_interval_s``. New mail is found by UID after a cursor (one per
  folder) kept in the connector's state file together with the folder's UIDVALIDITY. Mail is
  read with ``BODY.PEEK`` (flags untouched). ``message_id`` is ``email:<Message-ID header>``; a
  message without one gets a hash of From/To/Date/Subject.
- Ack point: the cursor moves past a UID only after ``deliver`` returned for that message (it is
  durable). A crash before that fetches the message again; the store keeps one copy by
  ``message_id``.
- First start: the cursor starts at the folder's end (UIDNEXT); existing mail is not imported.
- UIDVALIDITY change (mailbox recreated or restored): reading restarts at the first message
  whose INTERNALDATE is on or after the day before the newest one delivered; what was stored
  already is deduplicated by ``message_id``, so nothing is lost or doubled.
- Text: ``text/plain`` preferred in ``multipart/alternative``, else HTML as text; attachments as
  ``[Attachment: name]``; quoted history trimmed; the first message of a thread starts with
  ``Subject: …``. Automated mail (Auto-Submitted, bounces, bulk) and our own replies are stored
  as bot messages, so the assistant never answers them (no mail loops).
- Outbound: plain-text mail over SMTP (STARTTLS, implicit TLS or plain), ``Re: <subject>`` with
  ``In-Reply-To``/``References`` to the chat's newest message (remembered in the state file, so
  the outbound worker needs no listener), and a Message-ID derived from the idempotency key.
  SMTP cannot deduplicate: a send cut off by a crash is marked uncertain, never repeated.
  SMTP 5xx → `PermanentConnectorError`, 4xx and connection trouble → `TransientConnectorError`.
- Check (``microclaw-host doctor``): an IMAP login with ``folder`` selected, then LOGOUT, and an
  SMTP session (TLS / STARTTLS as configured, AUTH when ``smtp_user`` is set), then QUIT. A
  refused login is `PermanentConnectorError` naming the server that refused it, never the password.
- Limits: replies split at 65 536 characters; inbound text cut at the envelope limit with a
  ``[truncated]`` line; messages larger than ``max_fetch_bytes`` are read headers only. No send
  rate limit of its own; providers cap daily volume (consumer accounts ~500 mails a day).
- Required settings: ``imap_host``, ``imap_user``, ``smtp_host``, ``from_address`` (defaults to
  ``imap_user`` when that is an address); secrets ``EMAIL_IMAP_PASSWORD`` (required) and
  ``EMAIL_SMTP_PASSWORD`` (defaults to the IMAP password when ``smtp_user`` is set).
- State: ``<data_dir>/email-state.db`` (`ConnectorState`): ``cursor:<folder>`` (UIDVALIDITY, UID,
  newest date) and ``chat:<chat id>`` (recipients, subject and parent Message-ID for the reply).
- Cannot: send HTML or attachments, show "typing…", watch more than one folder, see mail that
  server rules file elsewhere, start a conversation in thread mode (a thread must have written
  first).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import smtplib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any, ClassVar, Self

from microclaw.connectors.base import BaseConnector, ConnectorSettings, Deliver, number_option
from microclaw.connectors.mime import (
    ParsedEmail,
    build_reply,
    fallback_message_id,
    make_message_id,
    parse_email,
    reply_references,
    reply_subject,
    thread_root,
    valid_address,
)
from microclaw.connectors.state import ConnectorState
from microclaw.envelope import Envelope, make_envelope
from microclaw.errors import (
    ConfigError,
    ConnectorError,
    EnvelopeError,
    PermanentConnectorError,
    TransientConnectorError,
)

if TYPE_CHECKING:  # IMAP's library loads only when the connector runs (not when it is skipped)
    from microclaw.connectors.imap import FetchedMail, ImapSession

logger = logging.getLogger(__name__)

IMAP_PASSWORD_ENV = "EMAIL_IMAP_PASSWORD"
SMTP_PASSWORD_ENV = "EMAIL_SMTP_PASSWORD"
GROUP_MODES = ("correspondent", "thread")
FETCH_BATCH = 25
_ID_MAX = 500
_TRUNCATED = "\n[truncated]"


def _opt_bool(options: Mapping[str, Any], key: str, default: bool) -> bool:
    value = options.get(key, default)
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(
        f"connectors.email.{key}: expected true or false, got {value!r}", key=f"connectors.email.{key}"
    )


def _required(options: Mapping[str, Any], key: str) -> str:
    value = str(options.get(key) or "").strip()
    if not value:
        raise ConfigError(f"connectors.email.{key} is not set", key=f"connectors.email.{key}")
    return value


@dataclass(frozen=True)
class EmailOptions:
    """The email connector's settings, validated. Passwords are kept out of ``repr``."""

    imap_host: str
    imap_user: str
    smtp_host: str
    from_address: str
    from_name: str = ""
    imap_port: int = 993
    imap_tls: bool = True
    imap_starttls: bool = False
    smtp_port: int = 587
    smtp_user: str = ""
    smtp_tls: bool = False
    smtp_starttls: bool = True
    folder: str = "INBOX"
    group_by: str = "correspondent"
    idle: bool = True
    poll_interval_s: float = 60.0
    idle_timeout_s: float = 300.0
    timeout_s: float = 30.0
    max_fetch_bytes: int = 10 * 1024 * 1024
    subject: str = ""
    imap_password: str = ""
    smtp_password: str = ""

    def __repr__(self) -> str:
        return (
            f"EmailOptions(imap={self.imap_user}@{self.imap_host}:{self.imap_port}, folder={self.folder!r})"
        )

    @classmethod
    def parse(
        cls, options: Mapping[str, Any], secrets: Mapping[str, str], assistant_name: str
    ) -> EmailOptions:
        """Validate this connector's settings slice; `ConfigError` names the first bad key."""
        imap_host = _required(options, "imap_host")
        imap_user = _required(options, "imap_user")
        smtp_host = _required(options, "smtp_host")
        from_address = str(options.get("from_address") or (imap_user if "@" in imap_user else "")).strip()
        if not from_address:
            raise ConfigError("connectors.email.from_address is not set", key="connectors.email.from_address")
        if not valid_address(from_address):
            raise ConfigError(
                f"connectors.email.from_address: not an email address: {from_address!r}",
                key="connectors.email.from_address",
            )
        imap_password = secrets.get(IMAP_PASSWORD_ENV, "")
        if not imap_password:
            raise ConfigError(f"{IMAP_PASSWORD_ENV} is not set (the IMAP password)", key=IMAP_PASSWORD_ENV)
        smtp_user = str(options.get("smtp_user") or "").strip()
        smtp_password = secrets.get(SMTP_PASSWORD_ENV, "") or (imap_password if smtp_user else "")
        group_by = str(options.get("group_by") or "correspondent").strip().lower()
        if group_by not in GROUP_MODES:
            raise ConfigError(
                f"connectors.email.group_by: expected one of {', '.join(GROUP_MODES)}, got {group_by!r}",
                key="connectors.email.group_by",
            )
        imap_tls = _opt_bool(options, "imap_tls", True)
        smtp_tls = _opt_bool(options, "smtp_tls", False)

        def number(key: str, default: float, minimum: float = 0.0) -> float:
            # Empty values (an unset variable in .env) mean the default here.
            return number_option(options, "email", key, default, minimum=minimum, blank_is_default=True)

        return cls(
            imap_host=imap_host,
            imap_user=imap_user,
            smtp_host=smtp_host,
            from_address=from_address.lower(),
            from_name=str(options.get("from_name") or assistant_name),
            imap_port=int(number("imap_port", 0)) or (993 if imap_tls else 143),
            imap_tls=imap_tls,
            imap_starttls=_opt_bool(options, "imap_starttls", False),
            smtp_port=int(number("smtp_port", 0)) or (465 if smtp_tls else 587),
            smtp_user=smtp_user,
            smtp_tls=smtp_tls,
            smtp_starttls=_opt_bool(options, "smtp_starttls", not smtp_tls),
            folder=str(options.get("folder") or "INBOX"),
            group_by=group_by,
            idle=_opt_bool(options, "idle", True),
            poll_interval_s=number("poll_interval_s", 60.0, minimum=0.01),
            idle_timeout_s=min(number("idle_timeout_s", 300.0, minimum=0.01), 29 * 60),
            timeout_s=number("timeout_s", 30.0, minimum=0.1),
            max_fetch_bytes=int(number("max_fetch_bytes", 10 * 1024 * 1024, minimum=1024)),
            subject=str(options.get("subject") or f"Message from {assistant_name}"),
            imap_password=imap_password,
            smtp_password=smtp_password,
        )


@dataclass(frozen=True)
class Cursor:
    """Where reading stands: the last UID delivered under one UIDVALIDITY, and the newest
    INTERNALDATE seen (used to re-read safely after a UIDVALIDITY change)."""

    uidvalidity: int
    uid: int
    since: str  # ISO date-time

    def advanced(self, uid: int, internaldate: datetime | None) -> Cursor:
        since = self.since
        if internaldate is not None:
            stamp = internaldate if internaldate.tzinfo else internaldate.replace(tzinfo=UTC)
            if stamp > datetime.fromisoformat(since):
                since = stamp.astimezone(UTC).isoformat()
        return Cursor(self.uidvalidity, max(self.uid, uid), since)

    def to_json(self) -> dict[str, Any]:
        return {"uidvalidity": self.uidvalidity, "uid": self.uid, "since": self.since}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Cursor:
        return cls(int(data["uidvalidity"]), int(data["uid"]), str(data["since"]))


class EmailConnector(BaseConnector):
    name: ClassVar[str] = "email"
    prefix: ClassVar[str] = "email"
    max_text_len: ClassVar[int] = 65536
    idempotent_send: ClassVar[bool] = False
    secrets: ClassVar[tuple[str, ...]] = (IMAP_PASSWORD_ENV, SMTP_PASSWORD_ENV)
    state_file: ClassVar[str | None] = "email-state.db"

    def __init__(self, opts: EmailOptions, state: ConnectorState, *, max_text_bytes: int = 65536) -> None:
        self.opts = opts
        self.state = state
        self.max_text_bytes = max_text_bytes

    @classmethod
    def from_settings(cls, settings: ConnectorSettings) -> Self:
        opts = EmailOptions.parse(settings.options, settings.secrets, settings.assistant_name)
        return cls(opts, cls.open_state(settings), max_text_bytes=settings.max_text_bytes)

    # --- inbound ------------------------------------------------------------------------

    @property
    def cursor_key(self) -> str:
        """State key of the watched folder's cursor (another folder starts afresh)."""
        return f"cursor:{self.opts.folder}"

    def cursor(self) -> Cursor | None:
        """Where reading stands, as last acknowledged (None before the first start)."""
        saved = self.state.get(self.cursor_key)
        return None if saved is None else Cursor.from_json(saved)

    async def listen(self, deliver: Deliver) -> None:
        from microclaw.connectors.imap import ImapSession

        session = ImapSession(self.opts)
        try:
            await asyncio.to_thread(self._open, session)
            cursor = await asyncio.to_thread(self._reconcile, session)
            use_idle = self.opts.idle and session.can_idle
            logger.info(
                "email: watching %s from UID %d (%s)",
                self.opts.folder,
                cursor.uid + 1,
                "IDLE" if use_idle else f"polling every {self.opts.poll_interval_s:g} s",
                extra={"connector": self.name},
            )
            while True:
                uids = await asyncio.to_thread(self._call, session.uids_after, cursor.uid)
                for start in range(0, len(uids), FETCH_BATCH):
                    chunk = uids[start : start + FETCH_BATCH]
                    mails = await asyncio.to_thread(self._call, session.fetch, chunk)
                    for uid in chunk:
                        mail = mails.get(uid)
                        if mail is not None:
                            envelope = await asyncio.to_thread(self.envelope_for, mail)
                            if envelope is not None:
                                await deliver(envelope)
                        cursor = cursor.advanced(uid, mail.internaldate if mail else None)
                        # The ack point: the message is durable, so move past it.
                        await asyncio.to_thread(self.state.put, self.cursor_key, cursor.to_json())
                if uids:
                    continue
                if use_idle:
                    await asyncio.to_thread(self._call, session.idle_wait, self.opts.idle_timeout_s)
                else:
                    await asyncio.sleep(self.opts.poll_interval_s)
                # A recreated folder is not reported in IDLE (Dovecot answers NO and keeps a
                # stale view): re-select after every wake-up and compare UIDVALIDITY.
                if await asyncio.to_thread(self._call, session.select):
                    cursor = await asyncio.to_thread(self._reconcile, session)
        finally:
            session.abort()

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run one IMAP step, turning library and socket errors into ours."""
        from imapclient.exceptions import IMAPClientError

        try:
            return fn(*args, **kwargs)
        except (IMAPClientError, OSError, EOFError) as exc:
            raise TransientConnectorError(f"IMAP {self.opts.imap_host}: {type(exc).__name__}: {exc}") from exc

    def _open(self, session: ImapSession) -> None:
        from imapclient.exceptions import IMAPClientError, LoginError

        try:
            session.open()
        except LoginError as exc:
            raise PermanentConnectorError(
                f"IMAP login refused for {self.opts.imap_user} by {self.opts.imap_host}:{self.opts.imap_port}"
                f" (check {IMAP_PASSWORD_ENV})"
            ) from exc
        except IMAPClientError as exc:
            raise TransientConnectorError(
                f"IMAP {self.opts.imap_host}: cannot open folder {self.opts.folder!r}: {exc}"
            ) from exc
        except OSError as exc:
            raise TransientConnectorError(f"IMAP {self.opts.imap_host}: {type(exc).__name__}: {exc}") from exc

    def _reconcile(self, session: ImapSession) -> Cursor:
        """The cursor for this session's folder, reset safely when UIDVALIDITY changed."""
        assert session.uidnext is not None
        saved = self.state.get(self.cursor_key)
        if saved is None:
            cursor = Cursor(session.uidvalidity, session.uidnext - 1, datetime.now(tz=UTC).isoformat())
            logger.info("email: first start; existing mail in %s is not imported", self.opts.folder)
        else:
            cursor = Cursor.from_json(saved)
            if cursor.uidvalidity != session.uidvalidity:
                day = datetime.fromisoformat(cursor.since).date() - timedelta(days=1)
                uids = self._call(session.uids_since, day)
                start = min(uids) - 1 if uids else session.uidnext - 1
                logger.warning(
                    "email: UIDVALIDITY of %s changed (%d -> %d); re-reading mail since %s from UID %d",
                    self.opts.folder,
                    cursor.uidvalidity,
                    session.uidvalidity,
                    day.isoformat(),
                    start + 1,
                    extra={"connector": self.name},
                )
                cursor = Cursor(session.uidvalidity, start, cursor.since)
        self.state.put(self.cursor_key, cursor.to_json())
        return cursor

    def chat_for(self, parsed: ParsedEmail, msgid: str) -> str:
        """The group address of a received message under this connector's grouping mode."""
        if self.opts.group_by == "thread":
            return f"email:{_fit(thread_root(parsed) or msgid)}"
        correspondent = parsed.from_addr
        if correspondent == self.opts.from_address:  # our own mail: the conversation is with its recipient
            correspondent = next(
                (a for a in (*parsed.to, *parsed.cc) if a != self.opts.from_address), correspondent
            )
        return f"email:{correspondent or 'unknown'}"

    def envelope_for(self, mail: FetchedMail) -> Envelope | None:
        """The envelope of one fetched message (None when it cannot be one); remembers how to
        reply to its chat before returning."""
        try:
            parsed = parse_email(mail.raw)
        except Exception:  # a parser bug must not wedge the folder: skip this message, loudly
            logger.exception(
                "email: could not parse UID %d; skipped", mail.uid, extra={"connector": self.name}
            )
            return None
        msgid = parsed.message_id or fallback_message_id(mail.raw)
        chat_id = self.chat_for(parsed, msgid)
        own = self.opts.from_address
        is_from_me = parsed.from_addr == own
        ours = is_from_me and (parsed.message_id or "").startswith("<mc-")
        text = parsed.text
        if mail.headers_only:
            text = f"[message of {mail.size} bytes; too large to read]"
        if not parsed.in_reply_to and not parsed.references and parsed.subject:
            text = f"Subject: {parsed.subject}\n\n{text}".rstrip()
        others = [a for a in parsed.participants if a != own]
        stamp = parsed.date or mail.internaldate
        try:
            envelope = make_envelope(
                source=self.name,
                message_id=f"email:{_fit(msgid)}",
                chat_id=chat_id,
                text=_truncate(text, self.max_text_bytes),
                sender=_fit(parsed.from_addr),
                sender_name=_fit(parsed.from_name or parsed.from_addr),
                ts_ms=int(stamp.timestamp() * 1000) if stamp else None,
                max_text_bytes=self.max_text_bytes,
                is_from_me=is_from_me,
                is_bot_message=ours or parsed.automated,
                reply_to_message_id=f"email:{_fit(parsed.in_reply_to)}" if parsed.in_reply_to else None,
                chat_name=_fit(self._chat_name(parsed)),
                is_group=self.opts.group_by == "thread" and len(others) > 1,
            )
        except EnvelopeError as exc:
            logger.warning("email: UID %d rejected: %s", mail.uid, exc, extra={"connector": self.name})
            return None
        if not is_from_me:
            to = [a for a in parsed.reply_to if a != own] or ([parsed.from_addr] if parsed.from_addr else [])
            cc = [a for a in others if a not in to] if self.opts.group_by == "thread" else []
            self.state.put(
                f"chat:{chat_id}",
                {
                    "to": to,
                    "cc": cc,
                    "subject": parsed.subject,
                    "parent": msgid,
                    "references": list(parsed.references),
                },
            )
        logger.debug("email: UID %d -> %s", mail.uid, envelope.message_id, extra={"connector": self.name})
        return envelope

    def _chat_name(self, parsed: ParsedEmail) -> str:
        if self.opts.group_by == "thread":
            return reply_subject(parsed.subject).removeprefix("Re:").strip() or "(no subject)"
        return parsed.from_name or parsed.from_addr or "unknown"

    # --- outbound -----------------------------------------------------------------------

    async def send(self, chat_id: str, text: str, *, idempotency_key: str) -> str:
        if not self.owns(chat_id):
            raise PermanentConnectorError(f"not an email address: {chat_id!r}", chat_id=chat_id)
        target = chat_id.removeprefix(f"{self.prefix}:")
        facts = await asyncio.to_thread(self.state.get, f"chat:{chat_id}")
        message_id = make_message_id(idempotency_key, self.opts.from_address)
        if facts:
            to, cc = list(facts.get("to") or []), list(facts.get("cc") or [])
            subject = reply_subject(str(facts.get("subject") or ""))
            parent, references = facts.get("parent"), list(facts.get("references") or [])
        elif valid_address(target):
            to, cc, subject, parent, references = [target], [], self.opts.subject, None, []
        else:
            raise PermanentConnectorError(f"no conversation known for {chat_id}", chat_id=chat_id)
        if not to:
            raise PermanentConnectorError(f"no recipient known for {chat_id}", chat_id=chat_id)
        message = build_reply(
            from_address=self.opts.from_address,
            from_name=self.opts.from_name,
            to=to,
            cc=cc,
            subject=subject,
            text=text,
            message_id=message_id,
            in_reply_to=parent,
            references=references,
        )
        await asyncio.to_thread(self._smtp_send, chat_id, message)
        if facts:
            # Our reply is now the newest message: the next one threads under it.
            facts = {**facts, "parent": message_id, "references": reply_references(references, parent)}
            await asyncio.to_thread(self.state.put, f"chat:{chat_id}", facts)
        logger.info("email: sent %s", message_id, extra={"connector": self.name, "chat_jid": chat_id})
        return message_id

    def _smtp_open(self) -> smtplib.SMTP:
        """A connected SMTP session: TLS or STARTTLS as configured, logged in when ``smtp_user``
        is set. smtplib's exceptions pass through (see `_smtp_error`)."""
        o = self.opts
        context = ssl.create_default_context()
        smtp: smtplib.SMTP
        if o.smtp_tls:
            smtp = smtplib.SMTP_SSL(o.smtp_host, o.smtp_port, timeout=o.timeout_s, context=context)
        else:
            smtp = smtplib.SMTP(o.smtp_host, o.smtp_port, timeout=o.timeout_s)
        try:
            if o.smtp_starttls and not o.smtp_tls:
                smtp.starttls(context=context)
            if o.smtp_user:
                smtp.login(o.smtp_user, o.smtp_password)
        except BaseException:
            smtp.close()
            raise
        return smtp

    def _smtp_error(self, exc: Exception, chat_id: str | None) -> ConnectorError:
        """One smtplib or socket exception -> ours (the password is never part of it)."""
        o = self.opts
        if isinstance(exc, smtplib.SMTPAuthenticationError):
            return PermanentConnectorError(
                f"SMTP login refused for {o.smtp_user} by {o.smtp_host}:{o.smtp_port}"
                f" (check {SMTP_PASSWORD_ENV} or {IMAP_PASSWORD_ENV})",
                chat_id=chat_id,
            )
        if isinstance(exc, smtplib.SMTPRecipientsRefused):
            codes = [code for code, _ in exc.recipients.values()]
            detail = f"SMTP refused every recipient ({', '.join(str(c) for c in codes)})"
            if codes and all(code >= 500 for code in codes):
                return PermanentConnectorError(detail, chat_id=chat_id)
            return TransientConnectorError(detail, chat_id=chat_id)
        if isinstance(exc, smtplib.SMTPResponseException):
            detail = f"SMTP {exc.smtp_code}: {_smtp_text(exc.smtp_error)}"
            if exc.smtp_code >= 500:
                return PermanentConnectorError(detail, chat_id=chat_id)
            return TransientConnectorError(detail, chat_id=chat_id)
        if isinstance(exc, smtplib.SMTPNotSupportedError):
            return PermanentConnectorError(f"SMTP server {o.smtp_host}: {exc}", chat_id=chat_id)
        return TransientConnectorError(
            f"SMTP {o.smtp_host}:{o.smtp_port}: {type(exc).__name__}: {exc}", chat_id=chat_id
        )

    def _smtp_send(self, chat_id: str, message: EmailMessage) -> None:
        try:
            with self._smtp_open() as smtp:
                refused = smtp.send_message(message)
        except (smtplib.SMTPException, OSError) as exc:
            raise self._smtp_error(exc, chat_id) from exc
        if refused:
            logger.warning(
                "email: %d recipient(s) refused: %s",
                len(refused),
                ", ".join(sorted(refused)),
                extra={"connector": self.name, "chat_jid": chat_id},
            )

    # --- doctor -------------------------------------------------------------------------

    async def check(self) -> str | None:
        """Log in to IMAP (folder selected) and to SMTP, then leave both (``microclaw-host doctor``)."""
        await asyncio.to_thread(self._imap_check)
        smtp = await asyncio.to_thread(self._smtp_check)
        o = self.opts
        return f"IMAP login accepted for {o.imap_user} ({o.folder} selected); {smtp}"

    def _imap_check(self) -> None:
        from microclaw.connectors.imap import ImapSession

        session = ImapSession(self.opts)
        try:
            self._open(session)
        finally:
            session.logout()

    def _smtp_check(self) -> str:
        o = self.opts
        try:
            with self._smtp_open():
                pass  # leaving the block says QUIT
        except (smtplib.SMTPException, OSError) as exc:
            raise self._smtp_error(exc, None) from exc
        if o.smtp_user:
            return f"SMTP login accepted for {o.smtp_user} at {o.smtp_host}:{o.smtp_port}"
        return f"SMTP {o.smtp_host}:{o.smtp_port} answered (no smtp_user: no login tried)"

    async def close(self) -> None:
        self.state.close()


def _smtp_text(error: bytes | str) -> str:
    return error.decode("utf-8", "replace") if isinstance(error, bytes) else str(error)


def _fit(value: str) -> str:
    """An id or name that fits the envelope's field limit (long ones become a stable hash)."""
    if len(value) <= _ID_MAX:
        return value
    return value[:400] + "#" + hashlib.sha256(value.encode("utf-8", "replace")).hexdigest()[:32]


def _truncate(text: str, max_bytes: int) -> str:
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return text
    keep = max_bytes - len(_TRUNCATED.encode())
    return data[:keep].decode("utf-8", "ignore") + _TRUNCATED
