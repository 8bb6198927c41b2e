"""``microclaw.sandbox.*``: agent tools in per-group containers, run by the sandbox worker only.

Each task decodes JSON arguments (bytes arrive base64), calls one ``SandboxService`` method of
this process's runtime (``workers.sandbox``) and answers ``{"ok": true, "value": ...}`` or a
structured error (``microclaw.sandbox.client``) that the caller raises: ``SandboxUnavailable``
and the other permanent faults are answers, never exceptions, and nothing ever runs on the
host instead. Transient faults of idempotent calls (read, list, ensure, stop) are retried
twice; ``exec`` and ``write_file`` are not retried, because the command may have run.
Results go to the sandbox result store (``SandboxTask.backend``); chat tasks keep none.

Passing ``is_main`` (and ``extra_mounts``) to a tool call ensures the container with that
registration first, so a call after a worker restart does not start a main group's container
as a non-main one. ``stop_idle`` (beat, every ``sandbox.idle_check_interval_s``) stops idle
containers and sweeps results nobody collected.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery import Task

from microclaw.errors import ConfigError, PolicyDenied, SandboxError, SandboxUnavailable
from microclaw.runtime import queues
from microclaw.sandbox.client import (
    app_result_backend,
    decode_mounts,
    encode_entries,
    encode_exec_result,
    encode_file,
    encode_handle,
    error_result,
    ok,
    unb64,
)
from microclaw.sandbox.service import SandboxService
from workers.app import app
from workers.sandbox import runtime

logger = logging.getLogger(__name__)

_RETRY_COUNTDOWN_S = 0.5


class SandboxTask(Task):
    """Base of the sandbox tasks: results go to the sandbox result store, not the app's (none)."""

    ignore_result = False
    max_retries = 2

    @property
    def backend(self) -> Any:
        return app_result_backend(self.app)

    @backend.setter
    def backend(self, value: Any) -> None:  # Celery may assign; the store is fixed by settings
        pass


def _answer(
    task: Task,
    group: str,
    work: Callable[[SandboxService], Any],
    *,
    is_main: bool | None = None,
    extra_mounts: list[dict[str, Any]] | None = None,
    retry: bool = False,
) -> dict[str, Any]:
    """Run ``work`` on this process's service and turn the outcome into an answer."""
    try:
        service = runtime().service()
        if is_main is not None:
            service.ensure(group, is_main=bool(is_main), extra_mounts=decode_mounts(extra_mounts))
        return ok(work(service))
    except SandboxUnavailable as exc:
        runtime().note_unavailable(exc.reason)
        return error_result(exc)
    except SandboxError as exc:
        if exc.transient and retry and task.request.retries < task.max_retries:
            raise task.retry(exc=exc, countdown=_RETRY_COUNTDOWN_S) from exc
        logger.warning("sandbox call for %s failed: %s", group, exc, extra={"group": group})
        return error_result(exc)
    except (PolicyDenied, ConfigError, ValueError) as exc:  # bad arguments (policy denials are audited)
        return error_result(exc)


@app.task(name=queues.SANDBOX_EXEC, base=SandboxTask, bind=True)
def exec_(
    self: Task,
    group: str,
    argv: list[str],
    stdin: str = "",
    env: dict[str, str] | None = None,
    workdir: str | None = None,
    timeout: float | None = None,
    tool: str | None = None,
    is_main: bool | None = None,
    extra_mounts: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return _answer(
        self,
        group,
        lambda s: encode_exec_result(
            s.exec(group, argv, stdin=unb64(stdin), env=env, workdir=workdir, timeout=timeout, tool=tool)
        ),
        is_main=is_main,
        extra_mounts=extra_mounts,
    )


@app.task(name=queues.SANDBOX_READ_FILE, base=SandboxTask, bind=True)
def read_file(
    self: Task,
    group: str,
    path: str,
    max_bytes: int | None = None,
    is_main: bool | None = None,
    extra_mounts: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return _answer(
        self,
        group,
        lambda s: encode_file(s.read_file(group, path, max_bytes=max_bytes)),
        is_main=is_main,
        extra_mounts=extra_mounts,
        retry=True,
    )


@app.task(name=queues.SANDBOX_WRITE_FILE, base=SandboxTask, bind=True)
def write_file(
    self: Task,
    group: str,
    path: str,
    data: str,
    is_main: bool | None = None,
    extra_mounts: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return _answer(
        self,
        group,
        lambda s: s.write_file(group, path, unb64(data)),
        is_main=is_main,
        extra_mounts=extra_mounts,
    )


@app.task(name=queues.SANDBOX_LIST_FILES, base=SandboxTask, bind=True)
def list_files(
    self: Task,
    group: str,
    path: str = ".",
    is_main: bool | None = None,
    extra_mounts: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return _answer(
        self,
        group,
        lambda s: encode_entries(s.list_files(group, path)),
        is_main=is_main,
        extra_mounts=extra_mounts,
        retry=True,
    )


@app.task(name=queues.SANDBOX_ENSURE, base=SandboxTask, bind=True)
def ensure(
    self: Task, group: str, is_main: bool = False, extra_mounts: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return _answer(
        self,
        group,
        lambda s: encode_handle(
            s.ensure(group, is_main=bool(is_main), extra_mounts=decode_mounts(extra_mounts))
        ),
        retry=True,
    )


@app.task(name=queues.SANDBOX_STOP, base=SandboxTask, bind=True)
def stop(self: Task, group: str) -> dict[str, Any]:
    return _answer(self, group, lambda s: s.stop(group), retry=True)


@app.task(name=queues.SANDBOX_STOP_IDLE, base=SandboxTask, bind=True, ignore_result=True)
def stop_idle(self: Task) -> list[str]:
    stopped: list[str] = []
    try:
        stopped = runtime().service().stop_idle()
    except SandboxError as exc:
        logger.warning("stop_idle skipped: %s", exc)
    try:
        self.backend.cleanup()  # results whose caller gave up (expired)
    except Exception:
        logger.warning("sandbox result cleanup failed", exc_info=True)
    if stopped:
        logger.info("stopped %d idle sandbox containers", len(stopped))
    return stopped
