"""The sandbox worker process role: its one ``SandboxService``, orphan cleanup, readiness reports.

The sandbox worker is ONE process (``-P threads``, see the Procfile): a group's egress proxy
must be served by the process that started the group's container, and removing the previous
process's containers is only safe before this process starts any. So `boot_worker` (called by
the Celery app's ``celeryd_after_setup`` hook, before the consumer starts) refuses a prefork
pool, raises the soft open-files limit to the hard one (the egress proxy's connections
count against it), builds the service, removes orphans of this instance, records readiness in the
``component_status`` table and starts a thread that re-checks it every
``sandbox.readiness_interval_s`` (retrying the orphan cleanup once the runtime comes back).
Until that cleanup has run, `SandboxRuntime.service` raises ``SandboxUnavailable``, so no
tool runs next to a dead process's leftovers.

Does not: run tools (``tasks/sandbox.py`` does, through `runtime().service()`), or decide
anything about containers (``microclaw.sandbox.service``).
"""

from __future__ import annotations

import logging
import os
import resource
import stat
import tempfile
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from microclaw.config import Settings
from microclaw.errors import SandboxError, SandboxUnavailable
from microclaw.runtime.wiring import app_engine, build_sandbox, sandbox_credentials, worker_name
from microclaw.sandbox.service import SandboxService
from microclaw.store import status
from microclaw.store.db import write_tx

logger = logging.getLogger(__name__)

COMPONENT = "sandbox"


def record_component(engine: Engine, name: str, state: str, detail: dict[str, Any]) -> None:
    """Upsert one ``component_status`` row."""
    with write_tx(engine) as conn:
        status.record_component(conn, name, state, detail)


def unsafe_run_dir(path: Path) -> str | None:
    """Create the socket directory (0700); None when it is safe to use, else why not.

    It must belong to this user; the short per-user fallback under the temp directory (see
    ``config._run_dir``) must also have a parent of our own, or another local user could have
    planted it.
    """
    uid = os.getuid()
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        checks = [path]
        if path.parent.name.startswith("microclaw-") and path.parent.parent == Path(tempfile.gettempdir()):
            checks.append(path.parent)
        for directory in checks:
            st = directory.lstat()
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid:
                return f"sandbox.run_dir {directory} is not a directory owned by uid {uid}"
            os.chmod(directory, 0o700)
    except OSError as exc:
        return f"sandbox.run_dir {path} is unusable: {exc}"
    return None


def raise_open_files_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit; returns (before, after).

    The egress proxy holds two descriptors per open connection and the Docker client needs
    its own: systemd's default soft limit of 1024 let one group's idle tunnels exhaust them,
    after which every group's tools failed as "docker engine unreachable".
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return soft, resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def check_open_files_budget(settings: Settings) -> str | None:
    """A warning when the egress budget could not fit in the open-files limit, else None."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    needed = 2 * settings.sandbox.egress_max_connections + 256  # the rest of the process
    if soft != resource.RLIM_INFINITY and needed > soft:
        return (
            f"sandbox.egress_max_connections={settings.sandbox.egress_max_connections} needs about "
            f"{needed} open files but the limit is {soft}: lower it or raise LimitNOFILE"
        )
    return None


class SandboxRuntime:
    """The sandbox worker's service and its readiness, once per process."""

    def __init__(self, settings: Settings, engine: Engine | None = None, *, process: str = "sandbox") -> None:
        self.settings = settings
        self.engine = engine if engine is not None else app_engine(settings)
        self.worker = worker_name(process)
        self._lock = threading.Lock()
        self._service: SandboxService | None = None
        self._cleaned = False
        self._orphans_removed = 0
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def service(self) -> SandboxService:
        """The service, once the previous process's containers are gone.

        Raises SandboxUnavailable (or another SandboxError) while that cleanup cannot run.
        """
        service = self._service
        if service is not None and self._cleaned:
            return service
        with self._lock:
            if self._service is None:
                problem = unsafe_run_dir(self.settings.sandbox.run_dir)
                if problem is not None:
                    raise SandboxUnavailable(problem)
                self._service = build_sandbox(self.settings, self.engine)
            if not self._cleaned:
                removed = self._service.cleanup_orphans()
                self._orphans_removed += len(removed)
                self._cleaned = True
                logger.info("sandbox ready to serve; removed %d orphaned containers", len(removed))
            return self._service

    # -- readiness ------------------------------------------------------------------------

    def _detail(self, reason: str | None) -> dict[str, Any]:
        sb = self.settings.sandbox
        service = self._service
        return {
            "reason": reason,
            "backend": service.backend.name if service is not None else sb.backend,
            "image": sb.image,
            "instance": sb.instance,
            "worker": self.worker,
            "pid": os.getpid(),
            "orphans_removed": self._orphans_removed,
            "missing_credentials": sandbox_credentials(self.settings)[1],
        }

    def record(self, state: str, reason: str | None = None) -> None:
        """Write this process's readiness for ``status`` (never raises)."""
        try:
            record_component(self.engine, COMPONENT, state, self._detail(reason))
        except Exception:
            logger.warning("could not record sandbox readiness", exc_info=True)

    def refresh(self) -> str | None:
        """Check readiness now (retrying a pending orphan cleanup), record it, return the reason."""
        try:
            reason = self.service().readiness()
        except SandboxUnavailable as exc:
            reason = exc.reason
        except SandboxError as exc:
            reason = str(exc)
        except Exception as exc:  # a readiness probe must never take the worker down
            logger.exception("sandbox readiness check failed")
            reason = f"readiness check failed: {type(exc).__name__}: {exc}"
        if self._stopping.is_set():
            return reason  # shutting down: "stopped" is the last word, not a late check
        # Logged when the condition changes, not at every periodic check (status shows it).
        previous, self._logged_reason = getattr(self, "_logged_reason", ""), reason
        if reason is None:
            if previous is not None and previous != "":
                logger.info("sandbox ready again")
            self.record("ready")
        else:
            if reason != previous:
                logger.warning("sandbox unavailable: %s", reason)
            else:
                logger.debug("sandbox still unavailable: %s", reason)
            self.record("unavailable", reason)
        return reason

    def note_unavailable(self, reason: str) -> None:
        """A tool call just found the runtime unavailable: say so in ``status`` at once."""
        self.record("unavailable", reason)

    # -- process lifecycle ----------------------------------------------------------------

    def start(self) -> None:
        """In a thread: the first readiness check (with orphan cleanup), then one periodically.

        Not before the consumer starts: in the default worker the router shares this process,
        and the runtime's client, the orphan cleanup and the probes took seconds of its start.
        A sandbox task that arrives first waits in `service` for the cleanup to finish."""

        def loop() -> None:
            self.refresh()
            while not self._stopping.wait(self.settings.sandbox.readiness_interval_s):
                self.refresh()

        self._thread = threading.Thread(target=loop, name="sandbox-readiness", daemon=True)
        self._thread.start()

    def shutdown(self) -> None:
        """Stop reporting, close the egress proxy and the runtime client, record ``stopped``.

        Containers keep running; the next boot removes them as orphans.
        """
        self._stopping.set()
        with self._lock:
            if self._service is not None:
                self._service.close()
        self.record("stopped", "the sandbox worker shut down")


_runtime: SandboxRuntime | None = None


def runtime() -> SandboxRuntime:
    """This process's runtime (built on first use; `boot_worker` builds it at start)."""
    global _runtime
    if _runtime is None:
        from microclaw.config import load_settings

        _runtime = SandboxRuntime(load_settings())
    return _runtime


def boot_worker(settings: Settings, worker: Any, *, process: str = "sandbox") -> None:
    """Called once in the sandbox worker before it consumes: one process, cleanup, readiness.

    Exits the process (SystemExit) when the pool would fork: the egress proxy and the orphan
    cleanup are only correct in a single process.
    """
    from celery.concurrency.prefork import TaskPool as PreforkPool

    pool = getattr(worker, "pool_cls", None)
    if isinstance(pool, type) and issubclass(pool, PreforkPool):
        message = (
            "the sandbox worker must run as one process: start it with `-P threads -c N` "
            "(see the Procfile), not the prefork pool"
        )
        logger.critical(message)
        raise SystemExit(message)
    # Celery logs every task's return value at INFO; here that is tool output and file contents
    # (DEBUG at most, per the logging rules). Failures are still logged, at ERROR.
    logging.getLogger("celery.app.trace").setLevel(logging.WARNING)
    before, after = raise_open_files_limit()
    logger.info("open files limit %d -> %d", before, after)
    problem = check_open_files_budget(settings)
    if problem is not None:
        logger.warning(problem)
    global _runtime
    _runtime = SandboxRuntime(settings, process=process)
    _runtime.start()


def shutdown_worker() -> None:
    """Called at worker shutdown; a no-op in processes that never booted the sandbox role."""
    if _runtime is not None:
        _runtime.shutdown()
