"""microclaw/connectors/mailbox.py: the SQLite mailbox behind the local and fake channels."""

from __future__ import annotations

from pathlib import Path

from microclaw.connectors.mailbox import Mailbox
from tests.conftest import file_mode


def test_puts_are_idempotent_by_key_and_read_in_order(tmp_path: Path) -> None:
    box = Mailbox(tmp_path / "local-chat.db")
    first = box.put("local:main", "one", "k1")
    assert box.put("local:main", "one again", "k1") == first
    box.put("local:other", "two", "k2")
    assert [i.text for i in box.after(0)] == ["one", "two"]
    assert [i.text for i in box.after(0, chat_id="local:other")] == ["two"]


def test_the_mailbox_holding_every_reply_is_private_whatever_the_umask(
    tmp_path: Path, umask_022: None
) -> None:
    box = Mailbox(tmp_path / "data" / "local-chat.db")
    box.put("local:main", "a private reply", "k")
    modes = {p.name: file_mode(p) for p in (tmp_path / "data").iterdir()}
    assert set(modes) >= {"local-chat.db", "local-chat.db-wal", "local-chat.db-shm"}
    assert set(modes.values()) == {0o600}
