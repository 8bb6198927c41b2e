"""A real Dovecot IMAP server for one test, plus a real SMTP front door that delivers into it.

- `start_dovecot()` writes a config into a fresh temp dir (mode 0755: a 0700 dir blocks
  Dovecot's auth process), picks a free loopback port and runs ``dovecot -F -c <conf>`` in the
  foreground in its own session; it listens within ~20 ms. As root the login process runs as
  ``dovenull``, the internal one as ``dovecot`` and mail is owned by ``nobody`` (Dovecot refuses
  UID 0 for mail); as another user everything runs as that user. ``idle=False`` makes the
  server stop advertising IDLE (``imap_capability``), to exercise the polling fallback.
- `Dovecot.deliver()` puts a raw message into a folder with ``dovecot-lda`` (real delivery:
  the same binary an MTA calls); `Dovecot.admin()` is a logged-in IMAPClient for test set-up.
- `Mailroom` is an aiosmtpd server: mail for the Dovecot user is handed to ``dovecot-lda``,
  mail for anyone else (the assistant's replies) is captured for assertions; scripted replies
  (``4xx``/``5xx``) can be queued to test error mapping, and it can check AUTH.
- Dovecot missing: the test FAILS when ``CI`` is set and is skipped otherwise
  (``scripts/install-test-deps.sh`` installs ``dovecot-imapd``).
"""

from __future__ import annotations

import contextlib
import email.policy
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from imapclient import IMAPClient

from tests.conftest import free_port

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
LDA = "/usr/lib/dovecot/dovecot-lda"
IMAP = "/usr/lib/dovecot/imap"
USER = "assistant"
DOMAIN = "example.test"
ADDRESS = f"{USER}@{DOMAIN}"
PASSWORD = "imap-secret-for-tests"


def require_dovecot() -> None:
    """Skip (or fail, when CI is set) unless Dovecot's IMAP server and LDA are installed."""
    missing = [p for p in (DOVECOT, LDA, IMAP) if not os.access(p, os.X_OK)]
    if missing:
        message = f"Dovecot is not installed (missing {', '.join(missing)}); run scripts/install-test-deps.sh"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def _identity() -> dict[str, str]:
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        return {
            "login_user": "dovenull",
            "internal_user": "dovecot",
            "uid": str(nobody.pw_uid),
            "gid": str(nobody.pw_gid),
        }
    me = pwd.getpwuid(os.geteuid())
    return {
        "login_user": me.pw_name,
        "internal_user": me.pw_name,
        "uid": str(me.pw_uid),
        "gid": str(me.pw_gid),
    }


_CONF = """\
protocols = imap
listen = 127.0.0.1
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_login_user = {login_user}
default_internal_user = {internal_user}
first_valid_uid = {uid}
last_valid_uid = 0
mail_location = maildir:{root}/mail/%u
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/users
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/home/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
protocol lda {{
  postmaster_address = postmaster@{domain}
}}
{extra}
"""
# What Dovecot 2.3 advertises after login, minus IDLE.
_NO_IDLE = (
    "protocol imap {\n  imap_capability = IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE SORT UNSELECT"
    " CHILDREN NAMESPACE UIDPLUS LIST-EXTENDED LITERAL+ ESEARCH\n}\n"
)


@dataclass
class Dovecot:
    root: Path
    port: int
    conf: Path
    proc: subprocess.Popen[bytes]
    user: str = USER
    password: str = PASSWORD

    def deliver(self, raw: bytes, folder: str = "INBOX", sender: str = "sender@example.com") -> None:
        """Deliver ``raw`` into ``folder`` with dovecot-lda, as an MTA would."""
        args = [LDA, "-c", str(self.conf), "-d", self.user, "-f", sender]
        if folder != "INBOX":
            args += ["-m", folder]
        result = subprocess.run(args, input=raw, capture_output=True, timeout=30)
        if result.returncode != 0:
            raise AssertionError(
                f"dovecot-lda failed ({result.returncode}): {result.stderr.decode()}\n{self.log()}"
            )

    def admin(self) -> IMAPClient:
        client = IMAPClient("127.0.0.1", port=self.port, ssl=False, timeout=10)
        client.login(self.user, self.password)
        return client

    def recreate_folder(self, folder: str) -> tuple[int, int]:
        """Delete and re-create ``folder``; returns (old, new) UIDVALIDITY."""
        with contextlib.closing(_Admin(self)) as admin:
            old = int(admin.client.folder_status(folder, [b"UIDVALIDITY"])[b"UIDVALIDITY"])
            admin.client.delete_folder(folder)
            admin.client.create_folder(folder)
            new = int(admin.client.folder_status(folder, [b"UIDVALIDITY"])[b"UIDVALIDITY"])
        return old, new

    def create_folder(self, folder: str) -> None:
        with contextlib.closing(_Admin(self)) as admin:
            admin.client.create_folder(folder)

    def log(self) -> str:
        path = self.root / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)


class _Admin:
    def __init__(self, server: Dovecot) -> None:
        self.client = server.admin()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.logout()


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def start_dovecot(*, idle: bool = True) -> Dovecot:
    """A running Dovecot with one user (``assistant`` / `PASSWORD`) and an empty INBOX."""
    require_dovecot()
    for _attempt in range(3):  # the free port may be taken between choosing and binding it
        root = Path(tempfile.mkdtemp(prefix="mc-dovecot-"))
        root.chmod(0o755)
        ident = _identity()
        for sub in ("mail", "home"):
            (root / sub).mkdir()
            if os.geteuid() == 0:
                os.chown(root / sub, int(ident["uid"]), int(ident["gid"]))
        (root / "users").write_text(f"{USER}:{{PLAIN}}{PASSWORD}\n")
        port = free_port()
        conf = root / "dovecot.conf"
        conf.write_text(
            _CONF.format(root=root, port=port, domain=DOMAIN, extra="" if idle else _NO_IDLE, **ident)
        )
        proc = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        server = Dovecot(root, port, conf, proc)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and proc.poll() is None and not _listening(port):
            time.sleep(0.01)
        if proc.poll() is None and _listening(port):
            return server
        err = proc.stderr.read().decode() if proc.stderr and proc.poll() is not None else ""
        server.stop()
        last = f"{err}\n{server.log()}"
    raise AssertionError(f"Dovecot did not start: {last}")


# --- SMTP ------------------------------------------------------------------------------------


@dataclass
class Captured:
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes
    login: str | None  # the AUTH login the client used, None without AUTH

    @property
    def message(self) -> EmailMessage:
        msg = BytesParser(policy=email.policy.default).parsebytes(self.raw)
        assert isinstance(msg, EmailMessage)
        return msg


@dataclass
class _Handler:
    dovecot: Dovecot | None
    captured: list[Captured] = field(default_factory=list)
    rcpt_replies: list[str] = field(default_factory=list)
    data_replies: list[str] = field(default_factory=list)
    arrived: threading.Condition = field(default_factory=threading.Condition)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options) -> str:
        if self.rcpt_replies:
            return self.rcpt_replies.pop(0)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope) -> str:
        if self.data_replies:
            return self.data_replies.pop(0)
        raw = envelope.original_content or envelope.content
        if ADDRESS in (r.lower() for r in envelope.rcpt_tos) and self.dovecot is not None:
            self.dovecot.deliver(raw, sender=envelope.mail_from or "sender@example.com")
        others = [r for r in envelope.rcpt_tos if r.lower() != ADDRESS]
        if others:
            with self.arrived:
                auth = session.auth_data if session.authenticated else None
                login = auth.login.decode() if isinstance(auth, LoginPassword) else None
                self.captured.append(Captured(envelope.mail_from, others, raw, login))
                self.arrived.notify_all()
        return "250 Message accepted"


class Mailroom:
    """aiosmtpd on a free loopback port: relays mail for `ADDRESS` into Dovecot, captures the rest."""

    def __init__(self, dovecot: Dovecot | None, *, login: tuple[str, str] | None = None) -> None:
        self.handler = _Handler(dovecot)
        self.login = login
        kwargs: dict[str, object] = {}
        if login is not None:
            # AUTH is offered without TLS on loopback; whether the client used it is recorded
            # per captured mail (requiring it without TLS only makes aiosmtpd warn).
            kwargs.update(authenticator=self._authenticate, auth_require_tls=False)
        self.port = free_port()
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port, **kwargs)
        self.controller.start()

    def _authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and self.login == (
            auth_data.login.decode(),
            auth_data.password.decode(),
        )
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    @property
    def captured(self) -> list[Captured]:
        return self.handler.captured

    def fail_next_rcpt(self, reply: str) -> None:
        self.handler.rcpt_replies.append(reply)

    def fail_next_data(self, reply: str) -> None:
        self.handler.data_replies.append(reply)

    def send(self, msg: EmailMessage) -> None:
        """Submit ``msg`` over SMTP (smtplib), as a correspondent's mail server would."""
        import smtplib

        with smtplib.SMTP("127.0.0.1", self.port, timeout=10) as smtp:
            if self.login:
                smtp.login(*self.login)
            smtp.send_message(msg)

    def wait_captured(self, count: int, timeout: float = 10) -> list[Captured]:
        with self.handler.arrived:
            if not self.handler.arrived.wait_for(lambda: len(self.captured) >= count, timeout=timeout):
                raise AssertionError(f"expected {count} captured mails, got {len(self.captured)}")
        return list(self.captured)

    def stop(self) -> None:
        if self.controller._thread is not None:
            self.controller.stop()
