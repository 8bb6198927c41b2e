"""Every process starts and the pipeline answers when the data dir's path holds "@" and "%"."""

from __future__ import annotations

from tests.integration.conftest import make_stack  # noqa: F401 - the fixture
from tests.integration.stack import wait_for


def test_a_data_dir_with_at_and_percent_runs_the_whole_stack(make_stack, tmp_path) -> None:  # noqa: F811
    data = tmp_path / "me@host %40 50%" / "data"
    stack = make_stack(MICROCLAW_DATA_DIR=str(data))
    stack.host()
    stack.router("router-1", 1)
    stack.outbound()
    stack.beat()
    stack.wait_host()
    stack.wait_workers(2)
    with stack.http() as client:
        assert client.post("/api/chat", json={"text": "odd path"}).status_code == 202
    replies = wait_for(lambda: stack.mailbox.after(0, chat_id="local:main"), 30, "a reply")
    assert [r.text for r in replies] == ["seen: odd path"]
    assert (data / "broker.db").exists() and (data / "microclaw.db").exists()
