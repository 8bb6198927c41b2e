"""The console: a readable line on a terminal (under a real pty), JSON lines on a pipe."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys

from microclaw.logs import process_name, process_role

SNIPPET = """
import logging
from microclaw.logs import configure_logging
configure_logging("INFO", "auto", role="worker", levels={"beat": "WARNING"})
log = logging.getLogger("microclaw.pipeline.router")
ids = {"chat_jid": "tg:-100", "message_id": "tg:-100:7", "run_id": 42, "group": "team"}
log.info("run finished", extra=ids)
log.debug("per-message chatter")
logging.getLogger("celery.beat").info("Sending due task scheduler-tick (microclaw.tick)")
log.warning("sandbox unavailable: image not found")
"""


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MICROCLAW_")}


def run_under_pty() -> str:
    pid, fd = pty.fork()
    if pid == 0:  # the child: stdin/stdout/stderr are the pty
        os.execve(sys.executable, [sys.executable, "-c", SNIPPET], _env())
    chunks = []
    while True:
        try:
            data = os.read(fd, 4096)
        except OSError:  # EIO: the child closed the pty
            break
        if not data:
            break
        chunks.append(data)
    os.waitpid(pid, 0)
    return b"".join(chunks).decode()


def test_on_a_terminal_lines_are_readable_and_carry_the_join_ids() -> None:
    out = [line for line in run_under_pty().splitlines() if line.strip()]
    assert len(out) == 2, out  # DEBUG and beat's per-tick INFO stay quiet
    assert re.fullmatch(
        r"\d\d:\d\d:\d\d\.\d{3} worker   INFO    run finished  "
        r"chat_jid=tg:-100 message_id=tg:-100:7 run_id=42 group=team",
        out[0],
    ), out[0]
    assert "WARNING" in out[1] and "sandbox unavailable: image not found" in out[1]
    assert not out[0].startswith("{")


def test_on_a_pipe_lines_are_json_with_the_same_ids() -> None:
    result = subprocess.run([sys.executable, "-c", SNIPPET], capture_output=True, text=True, env=_env())
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert [r["message"] for r in lines] == ["run finished", "sandbox unavailable: image not found"]
    assert lines[0]["role"] == "worker" and lines[0]["run_id"] == 42 and lines[0]["chat_jid"] == "tg:-100"


def test_make_runs_tty_hint_makes_auto_text_even_on_a_pipe() -> None:
    env = {**_env(), "MC_CONSOLE_TTY": "1"}
    result = subprocess.run([sys.executable, "-c", SNIPPET], capture_output=True, text=True, env=env)
    assert result.stderr.splitlines()[0].split()[1:4] == ["worker", "INFO", "run"]


def test_the_procfile_roles_are_recognised() -> None:
    celery = ["celery", "-A", "workers.app"]
    assert process_role([*celery, "beat", "-S", "workers.beat:DatabaseScheduler"]) == "beat"
    assert process_role([*celery, "worker", "-Q", "microclaw.router", "-n", "router@%h"]) == "worker"
    assert process_role([*celery, "worker", "-n", "sandbox@%h", "-P", "threads"]) == "sandbox"
    assert process_role([*celery, "worker", "--hostname=outbound@x"]) == "outbound"


def test_process_names_are_the_worker_names_of_both_command_lines() -> None:
    """Heartbeats and lease holders carry the name a process runs under (its ``-n``)."""
    assert process_name(["microclaw-worker", "-Q", "q", "-n", "worker@%h", "--embed-beat"]) == "worker"
    assert process_name(["microclaw-worker", "-n", "router@%h"]) == "router"
    assert process_name(["microclaw-worker", "beat", "-S", "workers.beat:DatabaseScheduler"]) == "beat"
    assert process_name(["celery", "-A", "workers.app", "worker", "--hostname=sandbox@x"]) == "sandbox"
    assert process_name(["celery", "-A", "workers.app", "worker"]) == "worker"
