"""Real MicroClaw processes for integration tests: Celery workers, beat and the host.

Workers run as the Procfile runs them: Celery's threads pool, one process per worker. Each
process runs in its own session (so a SIGKILL takes anything it started) with an environment
rooted in the test's temporary directory; logs go to files there, and a failing test prints
them. Readiness is read from the heartbeat rows workers write, not from sleeps.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
from celery import Celery
from sqlalchemy import Engine, select

from microclaw.config import Settings, load_settings
from microclaw.connectors.mailbox import Mailbox, MailboxItem
from microclaw.private import read_token
from microclaw.runtime import queues
from microclaw.runtime.celery_app import create_app
from microclaw.runtime.wiring import app_engine, bootstrap_database
from microclaw.store import groups
from microclaw.store.db import read_tx, write_tx
from microclaw.store.models import WorkerHeartbeat
from tests.conftest import base_env

BIN = Path(sys.executable).parent
FAST = {
    "MICROCLAW_AGENT__PROVIDER": "scripted",
    "MICROCLAW_AGENT__SCRIPTED_MODE": "seen",
    "MICROCLAW_BROKER__POLLING_INTERVAL": "0.02",
    "MICROCLAW_ROUTER__LEASE_TTL_S": "4",
    "MICROCLAW_ROUTER__RETRY_DELAYS_S": "[1, 1, 1, 1, 1]",
    "MICROCLAW_BEAT__TICK_INTERVAL_S": "0.5",
    "MICROCLAW_BEAT__SWEEP_INTERVAL_S": "0.5",
    "MICROCLAW_BEAT__STALE_AFTER_S": "2",
    "MICROCLAW_OUTBOUND__RETRY_BASE_S": "0.2",
    "MICROCLAW_LOGGING__FORMAT": "text",
}


def host_headers(data_dir: Path) -> dict[str, str]:
    """The ``Authorization`` header a client of the host sends: the token the host created in
    ``<data_dir>/http-token`` at start (none yet before that)."""
    token = read_token(data_dir / "http-token")
    return {"Authorization": f"Bearer {token}"} if token else {}


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def start_redis(server: str, root: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A throwaway redis-server on a free loopback port (no persistence); returns it and its URL."""
    import redis

    from tests.conftest import free_port

    port = free_port()
    proc = subprocess.Popen(
        [
            server,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(root),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(host="127.0.0.1", port=port)

    def up() -> bool:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    wait_for(up, 15, "redis to answer")
    return proc, f"redis://127.0.0.1:{port}/0"


def register_group_cli(root: Path, env: dict[str, str], jid: str, *, name: str, folder: str) -> None:
    """``microclaw-host register-group`` as a user runs it before starting the stack."""
    result = subprocess.run(
        [str(BIN / "microclaw-host"), "register-group", jid, "--name", name, "--folder", folder],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


@contextlib.contextmanager
def procfile_stack(root: Path, env: dict[str, str], *, healthy_within: float = 90) -> Iterator[str]:
    """``honcho start`` on the repository's Procfile, as ``make run`` does; yields the HTTP base
    URL once ``/health`` (asked with the host's token) answers 200, prints the log tail on
    failure, stops everything after."""
    procfile = Path(__file__).resolve().parents[2] / "Procfile"
    env = {**env, "PATH": f"{BIN}:{env.get('PATH', '')}"}
    log_path = root / "honcho.log"
    with open(log_path, "wb") as log:
        stack = subprocess.Popen(
            [str(BIN / "honcho"), "-f", str(procfile), "-d", str(root), "start"],
            env=env,
            cwd=root,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        base = f"http://127.0.0.1:{env['MICROCLAW_HTTP__PORT']}"

        last: list[str] = ["no answer yet"]

        def healthy() -> bool:
            if stack.poll() is not None:
                raise AssertionError(f"honcho exited with {stack.returncode}: a process of the stack stopped")
            try:
                headers = host_headers(Path(env["MICROCLAW_DATA_DIR"]))
                if not headers:
                    last[0] = "no http-token yet"
                    return False
                response = httpx.get(f"{base}/health", headers=headers, timeout=2)
            except httpx.HTTPError as exc:
                last[0] = f"{type(exc).__name__}: {exc}"
                return False
            last[0] = f"{response.status_code} {response.text}"
            return response.status_code == 200

        try:
            wait_for(healthy, healthy_within, "the whole stack to report healthy", interval=0.5)
            yield base
        except BaseException:
            text = log_path.read_text(errors="replace")
            print(f"last /health answer: {last[0]}")
            print(text if len(text) < 24000 else f"{text[:8000]}\n[...]\n{text[-16000:]}")
            raise
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(stack.pid, signal.SIGTERM)
            try:
                stack.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(stack.pid, signal.SIGKILL)
                stack.wait()


class Stack:
    """A set of MicroClaw processes sharing one data directory."""

    def __init__(self, root: Path, **overrides: str) -> None:
        self.root = root
        self.env = base_env(root, **{**FAST, **overrides})
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.settings = self._load_settings()
        bootstrap_database(self.settings)
        self.engine: Engine = app_engine(self.settings)
        self._app: Celery | None = None

    def _load_settings(self) -> Settings:
        saved = dict(os.environ)
        try:
            os.environ.clear()
            os.environ.update(self.env)
            return load_settings()
        finally:
            os.environ.clear()
            os.environ.update(saved)

    @property
    def app(self) -> Celery:
        if self._app is None:
            self._app = create_app(self.settings)
        return self._app

    def register_chats(self, jids: Iterable[str]) -> None:
        """Register each chat as a group that answers every message (no trigger word needed)."""
        with write_tx(self.engine) as conn:
            for jid in jids:
                groups.register_group(
                    conn,
                    jid=jid,
                    name=jid,
                    folder=jid.replace(":", "_"),
                    trigger="@Andy",
                    requires_trigger=False,
                )

    def kick(self, chat_jid: str) -> None:
        self.app.send_task(queues.KICK, args=[chat_jid], queue=queues.ROUTER)

    @property
    def mailbox(self) -> Mailbox:
        return Mailbox(self.settings.data_dir / "local-chat.db")

    def replies(self) -> list[MailboxItem]:
        """Every reply delivered to the local chat channel so far, oldest first."""
        out: list[MailboxItem] = []
        while page := self.mailbox.after(out[-1].id if out else 0, limit=1000):
            out.extend(page)
        return out

    def seen_by_chat(self) -> dict[str, list[str]]:
        """Per chat, the message texts the scripted agent's replies say it saw ("seen: a | b"),
        in reply order: a lost, repeated or reordered message shows here."""
        seen: dict[str, list[str]] = defaultdict(list)
        for r in self.replies():
            seen[r.chat_id].extend(r.text.removeprefix("seen: ").split(" | "))
        return seen

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.root / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the process
        proc = subprocess.Popen(
            argv, env=self.env, cwd=self.root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.procs[name] = proc
        return proc

    def worker(self, name: str, queue_names: str, concurrency: int = 2) -> subprocess.Popen[bytes]:
        """A threads-pool worker consuming ``queue_names`` (comma separated), started as the
        Procfiles start theirs (``microclaw-worker``)."""
        return self._spawn(
            name,
            [
                str(BIN / "microclaw-worker"),
                "-Q",
                queue_names,
                "-n",
                f"{name}@%h",
                "-P",
                "threads",
                "-c",
                str(concurrency),
                "-l",
                "INFO",
            ],
        )

    def router(self, name: str = "router", concurrency: int = 2) -> subprocess.Popen[bytes]:
        return self.worker(name, queues.ROUTER, concurrency)

    def outbound(self, name: str = "outbound") -> subprocess.Popen[bytes]:
        return self.worker(name, f"{queues.OUTBOUND},{queues.MAINTENANCE}", 2)

    def combined(self, name: str = "worker", concurrency: int = 5) -> subprocess.Popen[bytes]:
        """The default stack's one worker: router, outbound and maintenance in one threads pool."""
        return self.worker(name, f"{queues.ROUTER},{queues.OUTBOUND},{queues.MAINTENANCE}", concurrency)

    def default_worker(self, name: str = "worker") -> subprocess.Popen[bytes]:
        """The default Procfile's worker line: ``microclaw-worker`` serving router, outbound and
        maintenance with beat as a thread (``--embed-beat``); ``name`` is its ``-n`` prefix."""
        queue_names = f"{queues.ROUTER},{queues.OUTBOUND},{queues.MAINTENANCE}"
        argv = [str(BIN / "microclaw-worker"), "-Q", queue_names, "-n", f"{name}@%h", "-P", "threads"]
        return self._spawn(name, [*argv, "--embed-beat"])

    def beat(self) -> subprocess.Popen[bytes]:
        return self._spawn(
            "beat",
            [
                str(BIN / "celery"),
                "-A",
                "workers.app",
                "beat",
                "-S",
                "workers.beat:DatabaseScheduler",
                "-l",
                "INFO",
            ],
        )

    def host(self) -> subprocess.Popen[bytes]:
        return self._spawn("host", [str(BIN / "microclaw-host"), "run", "--foreground"])

    def wait_workers(self, count: int, timeout: float = 60) -> None:
        """Wait until ``count`` live worker processes wrote a heartbeat."""

        def alive() -> bool:
            pids = {p.pid for p in self.procs.values() if p.poll() is None}
            with read_tx(self.engine) as conn:
                rows = conn.execute(select(WorkerHeartbeat.__table__.c.pid)).scalars().all()
            return len(pids & set(rows)) >= count

        wait_for(alive, timeout, f"{count} workers to report ready")

    def http(self, timeout: float = 10) -> httpx.Client:
        """A client of the running host's HTTP surface, sending its token."""
        return httpx.Client(
            base_url=self.settings.http.base_url,
            headers=host_headers(self.settings.data_dir),
            timeout=timeout,
        )

    def wait_host(self, timeout: float = 30) -> None:
        def up() -> bool:
            try:
                with self.http(timeout=1) as client:
                    return client.get("/status").status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, timeout, "the host's HTTP surface")

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        proc.wait(timeout=30)

    def stop(self) -> None:
        for name in list(self.procs):
            proc = self.procs[name]
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait(timeout=10)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)
            self.procs.pop(name)
        self.engine.dispose()

    def logs(self) -> str:
        out = []
        for path in sorted(self.root.glob("*.log")):
            text = path.read_text(errors="replace")
            out.append(f"===== {path.name} (last 60 lines) =====\n" + "\n".join(text.splitlines()[-60:]))
        return "\n".join(out)
