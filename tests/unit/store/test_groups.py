"""store.groups: registered groups (NanoClaw's quirks) and the router's per-group state rows."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from microclaw.store import groups
from microclaw.store.db import read_tx, write_tx


def register(engine: Engine, jid: str, folder: str, **kw) -> groups.Group:
    with write_tx(engine) as conn:
        return groups.register_group(conn, jid=jid, name=jid, folder=folder, trigger="@Andy", **kw)


def test_register_defaults_and_replaces(engine: Engine) -> None:
    group = register(engine, "fake:a", "team", added_at="2026-01-01")
    assert (group.requires_trigger, group.is_main, group.container_config) == (True, False, None)
    again = register(
        engine, "fake:a", "team2", is_main=True, requires_trigger=False, container_config={"x": 1}
    )
    assert (again.folder, again.is_main, again.requires_trigger, again.container_config) == (
        "team2",
        True,
        False,
        {"x": 1},
    )
    with read_tx(engine) as conn:
        assert groups.get_group(conn, "fake:a") == again
        assert groups.get_group(conn, "fake:none") is None


def test_invalid_folders_are_refused_on_write_and_skipped_on_read(engine: Engine) -> None:
    with pytest.raises(ValueError, match="invalid group folder"):
        register(engine, "fake:a", "../escape")
    register(engine, "fake:b", "fine", added_at="2026-01-02")
    with write_tx(engine) as conn:  # a row written by something else (an old import, a hand edit)
        conn.exec_driver_sql(
            "INSERT INTO registered_groups (jid, name, folder, trigger_pattern, added_at)"
            " VALUES ('fake:bad', 'bad', '../x', '@Andy', '2026-01-01')"
        )
    with read_tx(engine) as conn:
        assert [g.jid for g in groups.all_groups(conn)] == ["fake:b"]
        assert groups.get_group(conn, "fake:bad") is None
        assert groups.registered_folders(conn) == {"fake:b": "fine"}


def test_state_rows_are_created_lazily_with_zero_cursors(engine: Engine) -> None:
    with write_tx(engine) as conn:
        assert groups.chats_with_state(conn) == set()
        state = groups.get_state(conn, "fake:a")
        assert state == groups.GroupStateRow("fake:a", 0, 0, 0, None, None)
        groups.set_state(conn, "fake:a", cursor_seq=5, seen_seq=7, retry_at_ms=99)
        assert groups.get_state(conn, "fake:a") == groups.GroupStateRow("fake:a", 5, 7, 0, 99, None)
        assert groups.chats_with_state(conn) == {"fake:a"}


def test_a_kick_is_requested_once_until_the_flag_is_cleared(engine: Engine) -> None:
    with write_tx(engine) as conn:
        assert groups.request_kick(conn, "fake:a", 100)  # creates the row too
        assert not groups.request_kick(conn, "fake:a", 200)  # one outstanding kick is enough
        assert groups.get_state(conn, "fake:a").kick_requested_ms == 100
        groups.set_state(conn, "fake:a", kick_requested_ms=None)
        assert groups.request_kick(conn, "fake:a", 300)
