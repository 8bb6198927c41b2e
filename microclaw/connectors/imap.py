"""One blocking IMAP connection for the email connector: select a folder read-only, list UIDs
after a cursor, fetch messages without touching their flags, wait in IDLE.

Runs in a worker thread (imapclient is synchronous). It lets imapclient's and the socket's
exceptions through; `microclaw.connectors.email` turns them into ours at its edge. It keeps no
cursor and knows nothing about envelopes.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from dataclasses import dataclass
from datetime import date, datetime
from typing import Protocol

from imapclient import IMAPClient

from microclaw.errors import TransientConnectorError


@dataclass(frozen=True)
class FetchedMail:
    uid: int
    raw: bytes
    internaldate: datetime | None
    size: int
    headers_only: bool = False


class ImapOptions(Protocol):
    """What a session reads of the email connector's settings (`email.EmailOptions`)."""

    @property
    def imap_host(self) -> str: ...
    @property
    def imap_port(self) -> int: ...
    @property
    def imap_tls(self) -> bool: ...
    @property
    def imap_starttls(self) -> bool: ...
    @property
    def imap_user(self) -> str: ...
    @property
    def imap_password(self) -> str: ...
    @property
    def folder(self) -> str: ...
    @property
    def timeout_s(self) -> float: ...
    @property
    def max_fetch_bytes(self) -> int: ...


class ImapSession:
    """One blocking IMAP connection with the folder selected read-only. Runs in a worker thread;
    `abort` may be called from another thread to wake a blocked IDLE."""

    def __init__(self, opts: ImapOptions) -> None:
        self.opts = opts
        self.client: IMAPClient | None = None
        self.uidvalidity = 0
        self.uidnext: int | None = None
        self.can_idle = False

    def open(self) -> None:
        o = self.opts
        context = ssl.create_default_context()
        client = IMAPClient(
            o.imap_host, port=o.imap_port, ssl=o.imap_tls, ssl_context=context, timeout=o.timeout_s
        )
        self.client = client
        client.normalise_times = False
        if o.imap_starttls:
            client.starttls(context)
        client.login(o.imap_user, o.imap_password)
        self.can_idle = b"IDLE" in client.capabilities()
        self.select()

    def select(self) -> bool:
        """(Re-)select the folder read-only, which also brings the server's view up to date;
        True when its UIDVALIDITY differs from the previous selection."""
        client = self._c()
        selected = client.select_folder(self.opts.folder, readonly=True)
        uidvalidity = int(selected[b"UIDVALIDITY"])
        uidnext = selected.get(b"UIDNEXT")
        if uidnext is None:
            uids = client.search(["ALL"])
            uidnext = max(uids) + 1 if uids else 1
        changed = self.uidvalidity not in (0, uidvalidity)
        self.uidvalidity, self.uidnext = uidvalidity, int(uidnext)
        return changed

    def _c(self) -> IMAPClient:
        if self.client is None:
            raise TransientConnectorError("IMAP session is not open")
        return self.client

    def uids_after(self, uid: int) -> list[int]:
        return sorted(u for u in self._c().search(["UID", f"{uid + 1}:*"]) if u > uid)

    def uids_since(self, day: date) -> list[int]:
        return sorted(self._c().search(["SINCE", day]))

    def fetch(self, uids: list[int]) -> dict[int, FetchedMail]:
        client = self._c()
        meta = client.fetch(uids, ["RFC822.SIZE", "INTERNALDATE"])
        small = [
            u for u in uids if u in meta and int(meta[u].get(b"RFC822.SIZE", 0)) <= self.opts.max_fetch_bytes
        ]
        large = [u for u in uids if u in meta and u not in small]
        out: dict[int, FetchedMail] = {}
        for uid_list, item, key, headers_only in (
            (small, "BODY.PEEK[]", b"BODY[]", False),
            (large, "BODY.PEEK[HEADER]", b"BODY[HEADER]", True),
        ):
            if not uid_list:
                continue
            for uid, data in client.fetch(uid_list, [item]).items():
                raw = data.get(key)
                if raw is None:
                    continue
                out[uid] = FetchedMail(
                    uid=uid,
                    raw=bytes(raw),
                    internaldate=meta[uid].get(b"INTERNALDATE"),
                    size=int(meta[uid].get(b"RFC822.SIZE", 0)),
                    headers_only=headers_only,
                )
        return out

    def idle_wait(self, timeout: float) -> None:
        """Block until the server reports a change or ``timeout`` passes."""
        client = self._c()
        client.idle()
        try:
            client.idle_check(timeout=timeout)
        finally:
            client.idle_done()

    def logout(self) -> None:
        """Say LOGOUT and close (errors ignored: the session is over either way)."""
        client, self.client = self.client, None
        if client is None:
            return
        try:
            client.logout()
        except Exception:
            self.client = client
            self.abort()

    def abort(self) -> None:
        """Close the connection at once (safe from any thread, idempotent)."""
        client, self.client = self.client, None
        if client is None:
            return
        with contextlib.suppress(Exception):
            client.socket().shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(Exception):
            client.shutdown()
