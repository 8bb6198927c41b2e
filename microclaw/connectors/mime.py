"""Email as plain data: parse a raw RFC 5322 message into the text a person wrote, and build replies.

Pure functions over bytes and strings, used by the email connector and tested on their own:

- `parse_email` reads the headers that matter (Message-ID, From, Reply-To, To/Cc, Subject, Date,
  In-Reply-To, References, Auto-Submitted) and the body text: from ``multipart/alternative`` it
  takes ``text/plain`` when there is one, otherwise HTML converted to text (``html-text``, after
  dropping the quoted-history containers mail clients mark); attachments and forwarded messages
  become ``[Attachment: name]`` lines; quoted reply history is trimmed (``mail-parser-reply``,
  which knows the "On … wrote:" headers of many languages and clients).
- `thread_root` names the conversation a message belongs to (the first References entry).
- `build_reply` makes the outgoing message with ``In-Reply-To``/``References`` and a ``Re:`` subject.

No network, no state and no logging of message content here. The HTML and reply-parsing
libraries load on first use, so a host whose email connector is skipped never imports them.
"""

from __future__ import annotations

import email.policy
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from email.errors import MessageError
from email.headerregistry import Address
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import formataddr, formatdate, getaddresses, parseaddr, parsedate_to_datetime
from typing import cast

# Languages whose reply headers ("On … wrote:", "Am … schrieb …:") are recognised.
REPLY_LANGUAGES = ("en", "de", "fr", "es", "it", "nl", "sv", "da", "pl", "cs")
# Containers mail clients put quoted history in (Gmail, Thunderbird, Apple Mail, Yahoo).
_HTML_QUOTE_XPATH = (
    "//*[contains(concat(' ', normalize-space(@class), ' '), ' gmail_quote ')]"
    " | //blockquote[@type='cite']"
    " | //*[contains(concat(' ', normalize-space(@class), ' '), ' moz-cite-prefix ')]"
    " | //*[contains(concat(' ', normalize-space(@class), ' '), ' yahoo_quoted ')]"
)
# Trimming is regex-heavy; beyond this many characters the text is kept as it is.
_TRIM_MAX_CHARS = 200_000
_REPLY_PREFIX = re.compile(r"^\s*(re|aw|sv|antw|vs|ref|r)\s*(\[\d+\])?\s*:\s*", re.IGNORECASE)
_MSGID = re.compile(r"<[^<>\s]+>")
# RFC 5322 suggests trimming long References; keep the root and the newest entries.
MAX_REFERENCES = 20

_parser = BytesParser(policy=email.policy.default)


@dataclass(frozen=True)
class ParsedEmail:
    """What the connector needs from one received message."""

    message_id: str | None  # "<id@host>", angle brackets included; None when absent
    from_addr: str  # lower-cased address, "" when unparseable
    from_name: str
    reply_to: tuple[str, ...]  # where a reply goes: Reply-To, else From
    to: tuple[str, ...]
    cc: tuple[str, ...]
    subject: str
    date: datetime | None
    in_reply_to: str | None
    references: tuple[str, ...]
    text: str  # the new text of this message, quoted history trimmed
    attachments: tuple[str, ...] = field(default=())
    automated: bool = False  # auto-reply, bounce or list mail: never answered

    @property
    def participants(self) -> tuple[str, ...]:
        """Everyone on the message (From, Reply-To, To, Cc), lower-cased, in order, once."""
        return tuple(dict.fromkeys(a for a in (self.from_addr, *self.reply_to, *self.to, *self.cc) if a))


def _addresses(values: Iterable[str | None]) -> tuple[str, ...]:
    pairs = getaddresses([str(v) for v in values if v])
    return tuple(dict.fromkeys(addr.strip().lower() for _, addr in pairs if "@" in addr))


def msgids(value: str | None) -> tuple[str, ...]:
    """The ``<id>`` tokens of a Message-ID / In-Reply-To / References header, in order."""
    return tuple(_MSGID.findall(value or ""))


def _header(msg: EmailMessage, name: str) -> str | None:
    values = _header_all(msg, name)
    return values[0] if values else None


def _header_all(msg: EmailMessage, name: str) -> list[str]:
    try:
        return [str(v) for v in msg.get_all(name) or []]
    except (
        ValueError,
        IndexError,
        TypeError,
        AttributeError,
        MessageError,
    ):  # a header the policy cannot parse
        return []


def _date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None


def _part_text(part: EmailMessage) -> str:
    """A text part's content as str, tolerating unknown or lying charsets."""
    try:
        content = part.get_content()
        if isinstance(content, str):
            return content
    except (LookupError, UnicodeError, AssertionError, KeyError):
        pass
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        payload = b""
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, errors="replace")
    except LookupError:
        return payload.decode("utf-8", errors="replace")


def html_to_text(html: str) -> str:
    """Readable text from an email's HTML, with the clients' quoted-history blocks removed."""
    if not html.strip():
        return ""
    import html_text
    import lxml.html

    try:
        tree = lxml.html.document_fromstring(html)
    except (ValueError, lxml.etree.ParserError):
        return html_text.extract_text(html, guess_layout=True)
    for node in tree.xpath(_HTML_QUOTE_XPATH):
        if node.getparent() is not None:
            node.drop_tree()
    return str(html_text.extract_text(tree, guess_layout=True))


def trim_quoted(text: str, languages: Iterable[str] = REPLY_LANGUAGES) -> str:
    """The newest reply in ``text``: quoted history after an "On … wrote:" header, Outlook's
    "-----Original Message-----" and the like is dropped. Text that is all quote (a forward)
    or too long to scan is returned unchanged (normalized)."""
    text = normalize_text(text)
    if not text or len(text) > _TRIM_MAX_CHARS:
        return text
    from mailparser_reply import EmailReplyParser

    latest = EmailReplyParser(languages=list(languages)).parse_reply(text=text)
    trimmed = _strip_trailing_quote(normalize_text(latest or ""))
    return trimmed or text


def _strip_trailing_quote(text: str) -> str:
    """Drop a block of ``>`` lines at the very end (history pasted below the reply)."""
    lines = text.split("\n")
    end = len(lines)
    while end > 0 and (lines[end - 1].startswith(">") or not lines[end - 1].strip()):
        end -= 1
    if end == 0 or end == len(lines):
        return text
    return "\n".join(lines[:end]).rstrip()


def normalize_text(text: str) -> str:
    """Unix newlines, no trailing spaces, at most one blank line in a row, stripped."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    lines = [line.rstrip() for line in text.split("\n")]
    out: list[str] = []
    for line in lines:
        if not line and out and not out[-1]:
            continue
        out.append(line)
    return "\n".join(out).strip()


def _attachment_name(part: EmailMessage) -> str:
    name = part.get_filename()
    if name:
        return str(name)
    if part.get_content_type() == "message/rfc822":
        inner = part.get_payload()
        inner_msg = inner[0] if isinstance(inner, list) and inner else None
        subject = _header(inner_msg, "subject") if isinstance(inner_msg, EmailMessage) else None
        return f"{subject or 'forwarded message'}.eml"
    return f"unnamed {part.get_content_type()}"


def extract_body(msg: EmailMessage) -> tuple[str, tuple[str, ...]]:
    """(body text before trimming, attachment names) of a parsed message."""
    # Parsed with email.policy.default, every part is an EmailMessage (typeshed says Message).
    body = cast(EmailMessage | None, msg.get_body(preferencelist=("plain", "html")))
    text = ""
    if body is not None:
        raw = _part_text(body)
        text = html_to_text(raw) if body.get_content_type() == "text/html" else raw
    names: list[str] = []
    _collect_attachments(msg, body, names)
    return text, tuple(names)


def _collect_attachments(part: EmailMessage, body: object, names: list[str]) -> None:
    if part is body:
        return
    ctype = part.get_content_type()
    if ctype == "message/rfc822":
        names.append(_attachment_name(part))  # a forwarded message: named, not descended into
        return
    if part.is_multipart():
        for sub in part.iter_parts():
            _collect_attachments(cast(EmailMessage, sub), body, names)
        return
    if part.get_content_maintype() == "multipart":
        return
    disposition = part.get_content_disposition()
    is_alternative_text = ctype in ("text/plain", "text/html") and disposition != "attachment"
    if disposition == "attachment" or part.get_filename() or not is_alternative_text:
        names.append(_attachment_name(part))


def parse_email(raw: bytes) -> ParsedEmail:
    """Parse one raw message. Never raises for malformed input; missing parts come back empty."""
    msg = _parser.parsebytes(raw)
    assert isinstance(msg, EmailMessage)
    from_name, from_addr = parseaddr(_header(msg, "from") or "")
    text, attachments = extract_body(msg)
    body = trim_quoted(text)
    if attachments:
        body = "\n".join([body, *(f"[Attachment: {name}]" for name in attachments)]).strip()
    auto = (_header(msg, "auto-submitted") or "no").strip().lower()
    precedence = (_header(msg, "precedence") or "").strip().lower()
    automated = (
        auto != "no"
        or precedence in ("bulk", "junk", "list")
        or msg.get_content_type() == "multipart/report"
        or from_addr.lower().startswith(("mailer-daemon@", "postmaster@"))
    )
    message_ids = msgids(_header(msg, "message-id"))
    reply_to = _addresses([_header(msg, "reply-to")]) or _addresses([_header(msg, "from")])
    return ParsedEmail(
        message_id=message_ids[0] if message_ids else None,
        from_addr=from_addr.strip().lower() if "@" in from_addr else "",
        from_name=from_name.strip(),
        reply_to=reply_to,
        to=_addresses(_header_all(msg, "to")),
        cc=_addresses(_header_all(msg, "cc")),
        subject=" ".join((_header(msg, "subject") or "").split()),
        date=_date(_header(msg, "date")),
        in_reply_to=next(iter(msgids(_header(msg, "in-reply-to"))), None),
        references=msgids(_header(msg, "references")),
        text=body,
        attachments=attachments,
        automated=automated,
    )


def thread_root(parsed: ParsedEmail) -> str | None:
    """The Message-ID that started this conversation: the first References entry, else
    In-Reply-To, else the message's own id."""
    if parsed.references:
        return parsed.references[0]
    return parsed.in_reply_to or parsed.message_id


def fallback_message_id(raw: bytes) -> str:
    """A stable id for a message without a Message-ID, from the headers a resend keeps."""
    msg = _parser.parsebytes(raw, headersonly=True)
    basis = "\n".join(str(msg.get(h) or "") for h in ("from", "to", "date", "subject"))
    return "<" + hashlib.sha256(basis.encode("utf-8", "replace")).hexdigest()[:32] + "@microclaw.invalid>"


def reply_subject(subject: str) -> str:
    """``Re: <subject>`` without stacking prefixes (Re:, AW:, SV:, Re[2]: …)."""
    base = subject.strip()
    while True:
        stripped = _REPLY_PREFIX.sub("", base, count=1)
        if stripped == base:
            break
        base = stripped
    return f"Re: {base}" if base else "Re:"


def reply_references(references: Iterable[str], parent: str | None) -> list[str]:
    """The References of a reply to ``parent``: its References plus itself, root kept, trimmed."""
    refs = list(dict.fromkeys([*references, *([parent] if parent else [])]))
    if len(refs) > MAX_REFERENCES:
        refs = [refs[0], *refs[-(MAX_REFERENCES - 1) :]]
    return refs


def make_message_id(key: str, from_address: str) -> str:
    """A deterministic Message-ID for the reply with idempotency key ``key``."""
    domain = from_address.rpartition("@")[2] or "microclaw.invalid"
    return f"<mc-{hashlib.sha256(key.encode()).hexdigest()[:32]}@{domain}>"


def build_reply(
    *,
    from_address: str,
    from_name: str,
    to: Iterable[str],
    cc: Iterable[str] = (),
    subject: str,
    text: str,
    message_id: str,
    in_reply_to: str | None = None,
    references: Iterable[str] = (),
    date: datetime | None = None,
) -> EmailMessage:
    """A plain-text message; with ``in_reply_to`` it threads under that message."""
    msg = EmailMessage()
    msg["From"] = formataddr((from_name, from_address)) if from_name else from_address
    msg["To"] = ", ".join(to)
    cc = list(cc)
    if cc:
        msg["Cc"] = ", ".join(cc)
    msg["Subject"] = subject
    msg["Message-ID"] = message_id
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
        refs = reply_references(references, in_reply_to)
        msg["References"] = " ".join(refs)
    msg["Auto-Submitted"] = "auto-replied" if in_reply_to else "auto-generated"
    msg["Date"] = date if date is not None else formatdate(localtime=False)
    msg.set_content(text)
    return msg


def valid_address(address: str) -> bool:
    """Whether ``address`` is one syntactically valid mailbox (``user@domain``)."""
    if not address or any(c.isspace() or c in '<>,;"' for c in address):
        return False
    try:
        parsed = Address(addr_spec=address)
    except (ValueError, IndexError, TypeError, MessageError):
        return False
    return bool(parsed.username and parsed.domain)
