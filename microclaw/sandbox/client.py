"""Calling the sandbox from other processes: the ``microclaw.sandbox.*`` wire format and ``SandboxClient``.

Owns what crosses the broker between a caller (the router worker's agent tools) and the
sandbox worker: JSON-only arguments and results (bytes as base64), the structured error
result, the result store the answers travel back through, and the blocking client that sends
a task and waits for its answer.

Results. The app keeps ``task_ignore_result=True`` and no app-wide result backend: chat tasks
are wake-ups whose outcome lives in the database, and storing their results would only cost
writes. Sandbox tasks are calls that need an answer, so they alone get a result store, attached
per task (``SandboxTask.backend``), never to the app:
``sandbox.result_url``, by default ``db+sqlite:///<data_dir>/sandbox-results.db``, Celery's
SQLAlchemy result backend on its own SQLite file (WAL, 30 s busy timeout). Its own file keeps
Celery's tables out of the Alembic-managed app database and its write traffic (one row per
tool call, deleted by the caller once read) off the app database's write lock. With Redis as
broker, point it at Redis (``redis://.../1``) and nothing else changes. We poll it
(``get_task_meta``) with a short backoff rather than using RPC replies: the SQLite transport has
no reliable reply queues, and a result row survives a caller that restarts mid-wait. One backend
object per process, built lazily after fork; for SQLite its engine is cached
(``session_manager.forked = True``, the mode Celery itself uses in pool children) because a
fresh engine per poll costs ~2 ms.

Errors. A task never raises for a sandbox fault: it returns ``{"ok": false, "error": {...}}``
with a ``kind`` (``unavailable``, ``denied``, ``permanent``, ``transient``) that the client
raises as ``SandboxUnavailable``, ``PolicyDenied``, ``PermanentSandboxError`` or
``TransientSandboxError``. A caller whose wait runs out gets ``TransientSandboxError``; the
request was sent with ``expires`` equal to that wait, so it is dropped unrun if a worker picks
it up later. There is no fallback of any kind: no answer means nothing ran.

Does not: run anything itself, choose which group may act (callers pass the lease holder's
group), or retry (the caller decides from the error class).
"""

from __future__ import annotations

import base64
import contextlib
import os
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from celery import Celery, states
from sqlalchemy import event, make_url

from microclaw.errors import (
    PermanentSandboxError,
    PolicyDenied,
    SandboxError,
    SandboxUnavailable,
    TransientSandboxError,
)
from microclaw.sandbox.base import ContainerHandle, ExecResult
from microclaw.sandbox.mounts import MountRequest
from microclaw.sandbox.service import FileContent, FileEntry

if TYPE_CHECKING:
    from celery.backends.base import BaseBackend

    from microclaw.config import SandboxSettings

# The wire names: the queue only the sandbox worker consumes, and one task per call.
SANDBOX = "microclaw.sandbox"
SANDBOX_EXEC = "microclaw.sandbox.exec"
SANDBOX_READ_FILE = "microclaw.sandbox.read_file"
SANDBOX_WRITE_FILE = "microclaw.sandbox.write_file"
SANDBOX_LIST_FILES = "microclaw.sandbox.list_files"
SANDBOX_ENSURE = "microclaw.sandbox.ensure"
SANDBOX_STOP = "microclaw.sandbox.stop"
SANDBOX_STOP_IDLE = "microclaw.sandbox.stop_idle"

_POLL_FIRST_S = 0.002
_POLL_MAX_S = 0.1
_backends: dict[tuple[int, str, int], BaseBackend] = {}
_backends_lock = threading.Lock()


# --- the wire format -------------------------------------------------------------------------


def b64(data: bytes) -> str:
    """Bytes as ASCII base64 (JSON carries no bytes)."""
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    """The inverse of ``b64``; raises ValueError on bad input."""
    return base64.b64decode(text.encode("ascii"), validate=True)


def ok(value: Any) -> dict[str, Any]:
    """A successful answer."""
    return {"ok": True, "value": value}


def error_result(exc: BaseException) -> dict[str, Any]:
    """The structured answer for a failed call; facts from the exception's attributes."""
    if isinstance(exc, SandboxUnavailable):
        kind = "unavailable"
    elif isinstance(exc, PolicyDenied):
        kind = "denied"
    elif isinstance(exc, SandboxError) and exc.transient:
        kind = "transient"
    else:
        kind = "permanent"
    return {
        "ok": False,
        "error": {
            "kind": kind,
            "type": type(exc).__name__,
            "message": str(exc),
            "group": getattr(exc, "group", None),
            "reason": getattr(exc, "reason", None),
            "action": getattr(exc, "action", None),
        },
    }


def raise_error(error: Mapping[str, Any]) -> NoReturn:
    """Raise the MicroClaw exception an ``error_result`` describes."""
    kind, group = error.get("kind"), error.get("group")
    message = str(error.get("message") or "sandbox call failed")
    if kind == "unavailable":
        raise SandboxUnavailable(str(error.get("reason") or message), group=group)
    if kind == "denied":
        raise PolicyDenied(
            str(error.get("action") or "sandbox"), str(error.get("reason") or message), group=group
        )
    if kind == "transient":
        raise TransientSandboxError(message, group=group)
    raise PermanentSandboxError(message, group=group)


def encode_exec_result(result: ExecResult) -> dict[str, Any]:
    """``ExecResult`` -> JSON."""
    return {
        "exit_code": result.exit_code,
        "stdout": b64(result.stdout),
        "stderr": b64(result.stderr),
        "truncated": result.truncated,
        "duration_ms": result.duration_ms,
        "timed_out": result.timed_out,
        "stdout_bytes": result.stdout_bytes,
        "stderr_bytes": result.stderr_bytes,
    }


def decode_exec_result(data: Mapping[str, Any]) -> ExecResult:
    """JSON -> ``ExecResult``."""
    return ExecResult(
        exit_code=int(data["exit_code"]),
        stdout=unb64(data["stdout"]),
        stderr=unb64(data["stderr"]),
        truncated=bool(data["truncated"]),
        duration_ms=int(data["duration_ms"]),
        timed_out=bool(data["timed_out"]),
        stdout_bytes=int(data.get("stdout_bytes", 0)),
        stderr_bytes=int(data.get("stderr_bytes", 0)),
    )


def encode_file(content: FileContent) -> dict[str, Any]:
    """``FileContent`` -> JSON."""
    return {"data": b64(content.data), "truncated": content.truncated, "size": content.size}


def encode_entries(entries: Sequence[FileEntry]) -> list[dict[str, Any]]:
    """Directory entries -> JSON."""
    return [{"name": e.name, "kind": e.kind, "size": e.size, "mtime": e.mtime} for e in entries]


def encode_handle(handle: ContainerHandle) -> dict[str, Any]:
    """A container handle -> JSON (what ``ensure`` answers)."""
    return {"group": handle.group, "name": handle.name, "id": handle.id, "created": handle.created}


def encode_mounts(mounts: Sequence[MountRequest]) -> list[dict[str, Any]]:
    """Extra mount requests -> JSON."""
    return [
        {"host_path": m.host_path, "container_path": m.container_path, "readonly": m.readonly} for m in mounts
    ]


def decode_mounts(data: Sequence[Mapping[str, Any]] | None) -> tuple[MountRequest, ...]:
    """JSON -> extra mount requests; raises ValueError for a malformed entry."""
    out = []
    for item in data or ():
        if not isinstance(item, Mapping) or not isinstance(item.get("host_path"), str):
            raise ValueError(f"invalid mount request {item!r}")
        readonly = item.get("readonly")
        out.append(
            MountRequest(
                item["host_path"],
                item.get("container_path"),
                None if readonly is None else bool(readonly),
            )
        )
    return tuple(out)


# --- the result store ------------------------------------------------------------------------


def _tune_sqlite(engine: Any) -> None:
    """WAL and a busy timeout on the results file (many readers, one writer process)."""
    if engine.dialect.name != "sqlite":
        return

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()


def result_backend(app: Celery, url: str, *, expires_s: float = 3600.0) -> BaseBackend:
    """This process's result store for sandbox tasks at ``url`` (built on first use)."""
    from celery.app.backends import by_url
    from celery.backends.database import DatabaseBackend

    key = (id(app), url, os.getpid())
    with _backends_lock:
        backend = _backends.get(key)
        if backend is None:
            cls, backend_url = by_url(url, app.loader)
            options: dict[str, Any] = {"expires": expires_s}
            if issubclass(cls, DatabaseBackend):
                options["engine_callback"] = _tune_sqlite
                database = make_url(backend_url).database
                if database and database != ":memory:":
                    Path(database).parent.mkdir(parents=True, exist_ok=True)
            backend = cls(app=app, url=backend_url, **options)
            if isinstance(backend, DatabaseBackend):
                backend.session_manager.forked = True  # cache the engine (see the module docstring)
            _backends[key] = backend
        return backend


def app_result_backend(app: Celery) -> BaseBackend:
    """The sandbox result store configured in ``app.conf.microclaw_settings``."""
    sandbox = app.conf.microclaw_settings.sandbox
    return result_backend(app, sandbox.result_url, expires_s=sandbox.result_expires_s)


# --- the caller's side -------------------------------------------------------------------------


class SandboxClient:
    """Run sandbox tools from any process: sends the task, waits for its answer, raises its error.

    ``settings`` defaults to the app's ``[sandbox]`` settings. Thread-safe. Every method may
    raise ``SandboxUnavailable`` (no isolation: nothing ran), ``PolicyDenied``,
    ``PermanentSandboxError`` or ``TransientSandboxError`` (including "no answer in time").
    """

    def __init__(self, app: Celery, settings: SandboxSettings | None = None) -> None:
        self.app = app
        self.settings = settings or app.conf.microclaw_settings.sandbox
        self.backend = result_backend(app, self.settings.result_url, expires_s=self.settings.result_expires_s)

    # -- tools --------------------------------------------------------------------------------

    def exec(
        self,
        group: str,
        argv: Sequence[str],
        *,
        stdin: bytes = b"",
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
        timeout: float | None = None,
        tool: str | None = None,
        is_main: bool | None = None,
        extra_mounts: Sequence[MountRequest] = (),
    ) -> ExecResult:
        """Run ``argv`` in the group's container (see ``SandboxService.exec``).

        ``is_main`` (with ``extra_mounts``) makes the worker ensure the container with that
        registration first, so a restarted worker starts it right; None reuses what it has.
        """
        limit = self.settings.exec_timeout_s if timeout is None else float(timeout)
        kwargs = {
            "group": group,
            "argv": list(argv),
            "stdin": b64(stdin),
            "env": dict(env or {}),
            "workdir": workdir,
            "timeout": timeout,
            "tool": tool,
            **self._registration(is_main, extra_mounts),
        }
        return decode_exec_result(self.call(SANDBOX_EXEC, kwargs, group=group, wait_s=limit))

    def read_file(
        self, group: str, path: str, *, max_bytes: int | None = None, is_main: bool | None = None
    ) -> FileContent:
        """Read a workspace file (capped)."""
        kwargs = {"group": group, "path": path, "max_bytes": max_bytes, **self._registration(is_main, ())}
        value = self.call(SANDBOX_READ_FILE, kwargs, group=group)
        return FileContent(unb64(value["data"]), bool(value["truncated"]), int(value["size"]))

    def write_file(self, group: str, path: str, data: bytes, *, is_main: bool | None = None) -> int:
        """Create or replace a workspace file; returns the bytes written."""
        kwargs = {"group": group, "path": path, "data": b64(data), **self._registration(is_main, ())}
        return int(self.call(SANDBOX_WRITE_FILE, kwargs, group=group))

    def list_files(self, group: str, path: str = ".", *, is_main: bool | None = None) -> list[FileEntry]:
        """List a workspace directory, sorted by name."""
        kwargs = {"group": group, "path": path, **self._registration(is_main, ())}
        value = self.call(SANDBOX_LIST_FILES, kwargs, group=group)
        return [FileEntry(e["name"], e["kind"], int(e["size"]), int(e["mtime"])) for e in value]

    def ensure(
        self, group: str, *, is_main: bool = False, extra_mounts: Sequence[MountRequest] = ()
    ) -> dict[str, Any]:
        """Start (or reuse) the group's container; returns ``{group, name, id, created}``."""
        kwargs = {"group": group, "is_main": is_main, "extra_mounts": encode_mounts(extra_mounts)}
        return dict(self.call(SANDBOX_ENSURE, kwargs, group=group))

    def stop(self, group: str) -> bool:
        """Stop and remove the group's container; True when one was running."""
        return bool(self.call(SANDBOX_STOP, {"group": group}, group=group))

    # -- plumbing -----------------------------------------------------------------------------

    @staticmethod
    def _registration(is_main: bool | None, extra_mounts: Sequence[MountRequest]) -> dict[str, Any]:
        if is_main is None:
            return {}
        return {"is_main": is_main, "extra_mounts": encode_mounts(extra_mounts)}

    def call(
        self, name: str, kwargs: Mapping[str, Any], *, group: str | None = None, wait_s: float = 0.0
    ) -> Any:
        """Send task ``name`` and return its ``value``, or raise its error.

        Waits for the command's own time (``wait_s``, default the exec timeout) plus
        ``queue_timeout_s``; the request expires unrun after that.
        """
        budget = (wait_s or self.settings.exec_timeout_s) + self.settings.queue_timeout_s
        task_id = uuid.uuid4().hex
        self.app.send_task(
            name, kwargs=dict(kwargs), queue=SANDBOX, task_id=task_id, ignore_result=False, expires=budget
        )
        try:
            meta = self._wait(task_id, time.monotonic() + budget)
        finally:
            with contextlib.suppress(Exception):  # what stays behind is swept by stop_idle
                self.backend.forget(task_id)
        if meta is None:
            raise TransientSandboxError(
                f"the sandbox worker did not answer {name} within {budget:.0f} s "
                "(is the sandbox process running?); the request was dropped",
                group=group,
            )
        if meta["status"] != states.SUCCESS:
            raise PermanentSandboxError(
                f"{name} failed in the sandbox worker: {meta.get('result')!r}", group=group
            )
        answer = meta["result"]
        if not isinstance(answer, Mapping) or "ok" not in answer:
            raise PermanentSandboxError(f"{name} answered something unexpected: {answer!r}", group=group)
        if not answer["ok"]:
            raise_error(answer["error"])
        return answer["value"]

    def _wait(self, task_id: str, deadline: float) -> dict[str, Any] | None:
        delay = _POLL_FIRST_S
        while True:
            meta = self.backend.get_task_meta(task_id, cache=False)
            if meta.get("status") in states.READY_STATES:
                return meta
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            time.sleep(min(delay, remaining))
            delay = min(delay * 1.5, _POLL_MAX_S)
