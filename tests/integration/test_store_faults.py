"""Store faults on the real stack (host, router, outbound+maintenance, beat as processes):
a full disk under the data directory and the app database locked past the busy timeout.
Each gives a clear 503 with the reason from /api/chat and /health, stops no process, loses no
acknowledged message, and clears by itself when the fault does."""

from __future__ import annotations

import contextlib
import errno
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from microclaw.store.db import read_tx
from tests.integration.stack import Stack, wait_for
from tests.unit.store.test_db_faults import HOLD_SQLITE, holder, stop

pytestmark = pytest.mark.slow


@pytest.fixture
def tmpfs_data(tmp_path: Path) -> Iterator[Path]:
    """The stack's data directory on its own small tmpfs (needs root, as in CI)."""
    data = tmp_path / "data"
    data.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(data)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    yield data
    subprocess.run(["umount", "-l", str(data)], check=False)


def fill(path: Path) -> None:
    """Write zeros to ``path`` until the file system has no space left."""
    block = b"\0" * 65536
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                f.write(block)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
        with contextlib.suppress(OSError):
            while True:  # the last partial block
                f.write(b"\0" * 512)


def start(stack: Stack) -> None:
    stack.host()
    stack.router("router-1", 1)
    stack.outbound()
    stack.beat()
    stack.wait_host()
    stack.wait_workers(3)  # beat too: one still migrating when the test locks the database exits


def post(stack: Stack, text: str) -> tuple[int, dict]:
    with stack.http(timeout=30) as client:
        response = client.post("/api/chat", json={"text": text, "client_id": text})
    return response.status_code, response.json()


def health(stack: Stack) -> tuple[int, list[str]]:
    with stack.http(timeout=30) as client:
        response = client.get("/health")
    return response.status_code, response.json().get("problems", [])


def answered(stack: Stack) -> list[str]:
    """Every message text the replies answered (a reply may answer several), in order."""
    replies = stack.mailbox.after(0, chat_id="local:main")
    return [t for r in replies for t in r.text.removeprefix("seen: ").split(" | ")]


def tables(stack: Stack) -> str:
    """The pipeline's rows, for a failure message."""
    with read_tx(stack.engine) as conn:
        return (
            "\n".join(
                f"{name}: {conn.execute(text(sql)).all()}"
                for name, sql in {
                    "runs": "SELECT id, chat_jid, status, error FROM runs",
                    "group_state": "SELECT * FROM group_state",
                    "leases": "SELECT * FROM leases",
                    "outbox": "SELECT id, status, attempts, text FROM outbox",
                    "messages": "SELECT * FROM messages",
                }.items()
            )
            + f"\nanswered: {answered(stack)}"
        )


def all_running(stack: Stack) -> bool:
    return all(p.poll() is None for p in stack.procs.values())


def test_disk_full_is_a_clear_503_stops_nothing_and_recovers(tmpfs_data, make_stack) -> None:
    stack = make_stack(MICROCLAW_AGENT__SCRIPTED_DELAY_S="2.0")
    start(stack)
    assert post(stack, "before")[0] == 202
    wait_for(lambda: answered(stack) == ["before"], 30, "the first reply")

    assert post(stack, "mid-run")[0] == 202  # the disk fills while its run works
    wait_for(lambda: stack.http().get("/status").json()["runs_in_progress"], 30, "the run to start")
    filler = tmpfs_data / "filler"
    fill(filler)
    time.sleep(4)  # the run ends, its reply and the broker ack hit the full disk
    acked, refused = [], []
    for i in range(5):
        status, body = post(stack, f"full-{i}")
        assert status in (202, 503), body  # never a bare 500
        if status == 503:
            assert body["error"].startswith("disk full"), body
            refused.append(i)
        else:
            acked.append(f"full-{i}")
    assert refused, "no write failed on a full disk"
    status, problems = health(stack)
    assert status == 503 and any(p.startswith("disk full") for p in problems), problems
    time.sleep(3)
    assert all_running(stack), stack.logs()  # no role exited (the router's consumer used to)

    filler.unlink()
    wait_for(lambda: health(stack)[0] == 200, 60, "health to recover by itself")
    assert post(stack, "after")[0] == 202
    expected = sorted(["before", "mid-run", *acked, "after"])
    try:
        wait_for(lambda: sorted(answered(stack)) == expected, 60, "every acknowledged message answered")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{tables(stack)}") from None
    time.sleep(2)
    assert sorted(answered(stack)) == expected  # each once: nothing acknowledged lost or doubled
    assert all_running(stack), stack.logs()
    print(f"disk full: {len(acked)} acknowledged, {len(refused)} refused with 503")


def test_app_db_locked_past_the_busy_timeout_is_a_clear_503_and_recovers(make_stack) -> None:
    stack = make_stack(MICROCLAW_STORE__BUSY_TIMEOUT_S="1")
    start(stack)
    proc = holder(HOLD_SQLITE, stack.settings.store.db_path)
    try:
        status, body = post(stack, "locked")
        assert status == 503 and body["error"].startswith("database busy"), body
        time.sleep(22)  # past the heartbeat staleness (20 s): no heartbeat could be written
        status, problems = health(stack)
        assert status == 503 and any(p.startswith("database busy") for p in problems), problems
        assert not any(p.startswith("no live") for p in problems), problems
        assert all_running(stack), stack.logs()
    finally:
        stop(proc)
    wait_for(lambda: health(stack)[0] == 200, 60, "health to recover by itself")
    assert post(stack, "unlocked")[0] == 202
    wait_for(lambda: answered(stack) == ["unlocked"], 30, "the reply after the lock cleared")
    assert all_running(stack), stack.logs()


def _broker_resets(stack: Stack) -> list:
    with read_tx(stack.engine) as conn:
        return conn.execute(text("SELECT detail FROM audit_log WHERE kind = 'broker.reset'")).all()


@pytest.mark.parametrize("fault", ["corrupt", "deleted"])
def test_a_corrupt_or_deleted_broker_file_is_rebuilt_and_nothing_acknowledged_is_lost(
    make_stack, fault: str
) -> None:
    stack = make_stack()
    start(stack)
    assert post(stack, "before")[0] == 202
    wait_for(lambda: answered(stack) == ["before"], 30, "the first reply")
    broker = Path(stack.settings.broker.url.split("sqlite:///", 1)[1])
    if fault == "corrupt":  # its header bytes overwritten (with no good copy left in the WAL)
        db = sqlite3.connect(broker, timeout=30)
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.close()
        with open(broker, "r+b") as f:
            f.write(b"\xde\xad" * 50)
    else:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{broker}{suffix}").unlink(missing_ok=True)
    sent = [f"{fault}-{i}" for i in range(5)]
    for text_ in sent:
        status, body = post(stack, text_)
        assert status == 202, body
        time.sleep(0.3)
    expected = sorted(["before", *sent])
    try:
        wait_for(lambda: sorted(answered(stack)) == expected, 60, "every acknowledged message answered")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{tables(stack)}") from None
    time.sleep(2)
    assert sorted(answered(stack)) == expected  # each once
    assert all_running(stack), stack.logs()
    resets = _broker_resets(stack)
    if fault == "corrupt":
        assert len(resets) == 1, resets  # one audit row, whoever noticed first
        assert list(broker.parent.glob("broker.db.corrupt-*"))  # kept for inspection
    else:
        # A deleted file is recreated by whichever connection opens it next; when that is a
        # fresh connection the file simply starts anew, so the broker.reset row is not
        # guaranteed (docs/security.md, known limits). What matters holds: nothing is lost.
        assert len(resets) <= 1, resets
    wait_for(lambda: health(stack)[0] == 200, 30, "health ok on the new file")
