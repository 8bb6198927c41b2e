"""store.audit: one row per decision, in the caller's transaction or its own."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from microclaw.store import audit
from microclaw.store.db import read_tx, write_tx


def test_record_commits_with_the_callers_transaction(engine: Engine) -> None:
    with pytest.raises(RuntimeError), write_tx(engine) as conn:
        audit.record(conn, "router.backlog_dropped", chat_jid="fake:a", decision="drop", dropped=2)
        raise RuntimeError("the decision's effect failed")
    with read_tx(engine) as conn:
        assert audit.recent(conn) == []  # rolled back together


def test_recent_is_newest_first_with_detail_decoded(engine: Engine) -> None:
    with write_tx(engine) as conn:
        audit.record(conn, "a.kind", chat_jid="fake:a", decision="allow", n=1)
        audit.record(conn, "b.kind", message_id="m1")
        audit.record(conn, "a.kind", decision="deny", n=2)
    audit.record_now(engine, "c.kind", chat_jid="fake:c")
    with read_tx(engine) as conn:
        assert [r["kind"] for r in audit.recent(conn)] == ["c.kind", "a.kind", "b.kind", "a.kind"]
        picked = audit.recent(conn, kind="a.kind", limit=1)
        assert [(r["decision"], r["detail"]) for r in picked] == [("deny", {"n": 2})]
        assert audit.recent(conn, kind="b.kind")[0]["detail"] == {}
