"""The agent loop through the router, real SDKs against the wire-level fakes, real SQLite.

Tools run against `FolderSandbox` (files in a temp folder; the real sandbox worker is covered in
``test_agent_sandbox.py`` and the e2e test). Everything else is real: the router's lease and
cursors, the outbox, the audit log, sessions, compaction and usage rows.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select, text

from microclaw.agent.loop import BUDGET_EXHAUSTED, STEP_LIMIT_NOTE
from microclaw.agent.providers.anthropic import AnthropicProvider
from microclaw.agent.providers.openai import OpenAIProvider
from microclaw.config import AgentSettings
from microclaw.pipeline.inbound import ingest
from microclaw.pipeline.router import RouterDeps, process_group
from microclaw.runtime.wiring import build_agent
from microclaw.store import audit, groups
from microclaw.store.db import now_ms, read_tx, write_tx
from microclaw.store.models import AgentUsage, ScheduledTask, TaskQueueEntry
from tests.helpers import envelope, outbox_rows, register, router_deps, runs
from tests.integration.agent.fakes import Call, Fail, FakeAnthropic, FakeOpenAI, FolderSandbox, Step


@dataclasses.dataclass
class Harness:
    engine: Any
    tmp: Path
    server: FakeAnthropic | FakeOpenAI
    sandbox: FolderSandbox
    published: list[str]
    settings: AgentSettings = dataclasses.field(default_factory=lambda: AgentSettings(max_retries=0))

    @property
    def wire(self) -> str:
        return "anthropic" if isinstance(self.server, FakeAnthropic) else "openai"

    def deps(self, **agent_settings: Any) -> RouterDeps:
        settings = self.settings.model_copy(update=agent_settings)
        if self.wire == "anthropic":
            provider: Any = AnthropicProvider(
                api_key="k", base_url=self.server.base_url, timeout_s=5, max_retries=0
            )
        else:
            provider = OpenAIProvider(api_key="k", base_url=self.server.base_url, timeout_s=5, max_retries=0)
        agent = build_agent(
            settings,
            provider,
            assistant_name="Andy",
            engine=self.engine,
            groups_dir=self.tmp / "groups",
            archive_dir=self.tmp / "conversations",
            timezone="UTC",
            sandbox=self.sandbox,
            publish_deliver=self.published.append,
            lease_ttl_ms=30_000,
        )
        return router_deps(self.engine, self.tmp, agent=agent, published=self.published)

    def run(self, chat: str, **agent_settings: Any) -> str:
        return process_group(self.deps(**agent_settings), chat)

    # -- what the model was sent ------------------------------------------------------------

    def tool_results(self, request_index: int) -> list[tuple[str, bool]]:
        """(content, is_error) of the tool results in one recorded request."""
        body = self.server.requests[request_index]
        out: list[tuple[str, bool]] = []
        for message in body["messages"]:
            if self.wire == "anthropic" and isinstance(message["content"], list):
                out += [
                    (b["content"], bool(b.get("is_error")))
                    for b in message["content"]
                    if b["type"] == "tool_result"
                ]
            elif message["role"] == "tool":
                content = message["content"]
                out.append((content.removeprefix("ERROR: "), content.startswith("ERROR: ")))
        return out

    def texts(self, request_index: int) -> str:
        return json.dumps(self.server.requests[request_index]["messages"])


@pytest.fixture(params=["anthropic", "openai"])
def h(request: pytest.FixtureRequest, engine, tmp_path: Path) -> Iterator[Harness]:
    server = (FakeAnthropic() if request.param == "anthropic" else FakeOpenAI()).start()
    try:
        yield Harness(engine, tmp_path, server, FolderSandbox(tmp_path / "groups"), [])
    finally:
        server.stop()


@pytest.fixture
def anthropic_h(engine, tmp_path: Path) -> Iterator[Harness]:
    with FakeAnthropic() as server:
        yield Harness(engine, tmp_path, server, FolderSandbox(tmp_path / "groups"), [])


def audits(engine, kind: str) -> list[dict[str, Any]]:
    with read_tx(engine) as conn:
        return audit.recent(conn, kind=kind, limit=100)


def test_multi_step_tool_use_ends_in_one_reply(h: Harness) -> None:
    register(h.engine, "fake:main", is_main=True, folder="main_g")
    ingest(h.engine, envelope("fake:main", "save a note and read it back"))
    h.server.add(
        Step(text="Writing.", calls=[Call("write_file", {"path": "notes/a.txt", "content": "milk, eggs"})]),
        Step(calls=[Call("read_file", {"path": "notes/a.txt"}), Call("list_files", {"path": "notes"})]),
        Step(text="Your note says: milk, eggs", input_tokens=100, output_tokens=20),
    )
    assert h.run("fake:main") == "drained"
    assert [(r.text, r.idempotency_key) for r in outbox_rows(h.engine)] == [
        ("Your note says: milk, eggs", f"run:{runs(h.engine)[0].id}:reply")
    ]
    assert (h.tmp / "groups" / "main_g" / "notes" / "a.txt").read_text() == "milk, eggs"
    assert h.tool_results(2) == [
        ("wrote 10 bytes to notes/a.txt", False),
        ("milk, eggs", False),
        ("a.txt  (10 bytes)", False),
    ]
    assert "You are Andy" in json.dumps(h.server.requests[0])
    with read_tx(h.engine) as conn:
        (row,) = conn.execute(select(AgentUsage.__table__)).all()
    assert (row.group_folder, row.steps, row.input_tokens, row.output_tokens) == ("main_g", 3, 120, 30)


def test_malformed_and_unknown_tool_calls_come_back_as_audited_tool_errors(h: Harness) -> None:
    register(h.engine, "fake:main", is_main=True, folder="main_g")
    ingest(h.engine, envelope("fake:main", "go"))
    bad = '{"path": "x.txt"' if h.wire == "openai" else {"path": 42}
    h.server.add(
        Step(calls=[Call("read_file", bad), Call("launch_rockets", {})]),
        Step(text="Sorry, I got the arguments wrong."),
    )
    h.run("fake:main")
    (malformed, is_error), (unknown, unknown_error) = h.tool_results(1)
    assert is_error and "invalid arguments for read_file" in malformed
    assert unknown_error and "unknown tool 'launch_rockets'" in unknown
    assert h.sandbox.calls == []  # nothing ran
    rows = audits(h.engine, "agent.tool_error")
    assert {r["detail"]["tool"] for r in rows} == {"read_file", "launch_rockets"}
    assert [r.text for r in outbox_rows(h.engine)] == ["Sorry, I got the arguments wrong."]


def test_non_main_group_cannot_message_another_chat(h: Harness) -> None:
    register(h.engine, "fake:team", folder="team", requires_trigger=False)
    register(h.engine, "fake:other", folder="other")
    ingest(h.engine, envelope("fake:team", "tell the other group hi"))
    h.server.add(
        Step(calls=[Call("send_message", {"text": "hi", "chat_jid": "fake:other"})]),
        Step(calls=[Call("send_message", {"text": "working on it"})]),
        Step(text="I can't message that chat."),
    )
    h.run("fake:team")
    assert h.tool_results(1) == [("denied: group 'team' may not message 'fake:other'", True)]
    (denied,) = audits(h.engine, "agent.tool_denied")
    assert (denied["decision"], denied["chat_jid"], denied["detail"]["tool"]) == (
        "deny",
        "fake:team",
        "send_message",
    )
    run_id = runs(h.engine)[0].id
    assert [(r.chat_jid, r.idempotency_key, r.text) for r in outbox_rows(h.engine)] == [
        ("fake:team", f"run:{run_id}:msg:1", "working on it"),
        ("fake:team", f"run:{run_id}:reply", "I can't message that chat."),
    ]


def test_main_may_message_any_chat(anthropic_h: Harness) -> None:
    h = anthropic_h
    register(h.engine, "fake:main", is_main=True, folder="main_g")
    ingest(h.engine, envelope("fake:main", "tell bob hi"))
    h.server.add(
        Step(calls=[Call("send_message", {"text": "hi bob", "chat_jid": "fake:bob"})]), Step(text="Done.")
    )
    h.run("fake:main")
    assert [(r.chat_jid, r.text) for r in outbox_rows(h.engine)] == [
        ("fake:bob", "hi bob"),
        ("fake:main", "Done."),
    ]
    assert "fake:bob" in h.published


def test_provider_failure_after_a_sent_message_is_not_repeated(anthropic_h: Harness) -> None:
    h = anthropic_h
    register(h.engine, "fake:main", is_main=True, folder="main_g")
    ingest(h.engine, envelope("fake:main", "do the thing"))
    h.server.add(Step(calls=[Call("send_message", {"text": "started"})]), Fail(400, "context too long"))
    h.run("fake:main")
    assert [r.status for r in runs(h.engine)] == ["failed"]
    assert [r.text for r in outbox_rows(h.engine)] == ["started"]
    with read_tx(h.engine) as conn:
        state = groups.get_state(conn, "fake:main")
    assert state.retry_at_ms is None and state.cursor_seq == runs(h.engine)[0].to_seq  # no rollback


def test_provider_failure_with_nothing_sent_rolls_back_for_retry(anthropic_h: Harness) -> None:
    h = anthropic_h
    register(h.engine, "fake:main", is_main=True, folder="main_g")
    ingest(h.engine, envelope("fake:main", "hello"))
    h.server.add(Fail(401, "invalid x-api-key"))
    h.run("fake:main")
    with read_tx(h.engine) as conn:
        state = groups.get_state(conn, "fake:main")
    assert state.cursor_seq == 0 and state.retry_count == 1 and outbox_rows(h.engine) == []


def test_follow_up_messages_join_the_running_loop(h: Harness) -> None:
    register(h.engine, "fake:main", is_main=True, folder="main_g")
    ingest(h.engine, envelope("fake:main", "count the files"))
    steps = iter(
        [
            Step(calls=[Call("list_files", {})]),
            Step(text="There are no files yet, and yes, milk is on the list."),
        ]
    )

    def responder(body: dict[str, Any]) -> Step:
        if len(h.server.requests) == 1:  # a message arrives while the first step runs
            ingest(h.engine, envelope("fake:main", "also: is milk on the list?"))
        return next(steps)

    h.server.responder = responder
    (h.tmp / "groups" / "main_g").mkdir(parents=True)
    h.run("fake:main")
    assert "is milk on the list?" in h.texts(1)  # joined at the next step boundary
    assert len(runs(h.engine)) == 1 and len(h.server.requests) == 2  # no second run for it
    assert [r.text for r in outbox_rows(h.engine)] == [
        "There are no files yet, and yes, milk is on the list."
    ]
    (run,) = runs(h.engine)
    assert run.message_count == 2
    with read_tx(h.engine) as conn:
        assert groups.get_state(conn, "fake:main").cursor_seq == run.to_seq
    assert audits(h.engine, "router.follow_up_joined")[0]["detail"]["count"] == 1


def test_untriggered_chatter_waits_until_a_trigger_joins_it_as_context(anthropic_h: Harness) -> None:
    h = anthropic_h
    register(h.engine, "fake:team", folder="team")
    ingest(h.engine, envelope("fake:team", "@Andy check the build"))
    script = iter(
        [
            Step(calls=[Call("list_files", {})]),
            Step(calls=[Call("list_files", {})]),
            Step(text="Build is fine; and lunch at noon works."),
        ]
    )

    def responder(body: dict[str, Any]) -> Step:
        n = len(h.server.requests)
        if n == 1:
            ingest(h.engine, envelope("fake:team", "anyone for lunch?"))  # no trigger: does not join
        if n == 2:
            ingest(h.engine, envelope("fake:team", "@Andy noon ok?"))  # triggers: joins with the chatter
        return next(script)

    h.server.responder = responder
    (h.tmp / "groups" / "team").mkdir(parents=True)
    h.run("fake:team")
    assert "anyone for lunch" not in h.texts(1)
    assert "anyone for lunch" in h.texts(2) and "noon ok?" in h.texts(2)
    assert len(runs(h.engine)) == 1


def test_session_history_persists_across_runs(h: Harness) -> None:
    register(h.engine, "fake:main", is_main=True, folder="main_g")
    ingest(h.engine, envelope("fake:main", "my name is Bob"))
    h.server.add(Step(text="Nice to meet you, Bob."), Step(text="You are Bob."))
    h.run("fake:main")
    ingest(h.engine, envelope("fake:main", "what is my name?"))
    h.run("fake:main")
    second = h.texts(1)
    assert "my name is Bob" in second and "Nice to meet you, Bob." in second and "what is my name?" in second


def test_compaction_summarizes_old_turns_and_archives_the_transcript(anthropic_h: Harness) -> None:
    h = anthropic_h
    register(h.engine, "fake:main", is_main=True, folder="main_g")
    summaries: list[str] = []

    def responder(body: dict[str, Any]) -> Step:
        if "You compress chat transcripts" in json.dumps(body.get("system", "")):
            summaries.append(json.dumps(body["messages"]))
            return Step(text="Bob likes tea and asked for a reminder at 5.")
        return Step(text="ok " + "x" * 2000)  # long answers fill the budget quickly

    h.server.responder = responder
    for word in ["I like tea", "remind me at 5", "thanks", "one more thing", "and another"]:
        ingest(h.engine, envelope("fake:main", word))
        h.run("fake:main", history_token_budget=1000, keep_recent_turns=2)
    assert summaries and "I like tea" in summaries[0]
    archived = list((h.tmp / "conversations" / "main_g").glob("*.md"))  # host-only, not the group folder
    assert any("I like tea" in path.read_text() for path in archived)
    assert not (h.tmp / "groups" / "main_g" / "conversations").exists()
    ingest(h.engine, envelope("fake:main", "what do I like?"))
    h.run("fake:main", history_token_budget=1000, keep_recent_turns=2)
    chats = [r for r in h.server.requests if "You compress" not in json.dumps(r.get("system", ""))]
    last = json.dumps(chats[-1]["messages"])
    assert "Bob likes tea and asked for a reminder at 5." in last  # coherent: the summary leads
    assert "what do I like?" in last
    assert "I like tea" not in last  # the old turn itself is gone
    assert audits(h.engine, "agent.compacted")


def test_corrupt_session_starts_fresh(anthropic_h: Harness) -> None:
    h = anthropic_h
    register(h.engine, "fake:main", is_main=True, folder="main_g")
    ingest(h.engine, envelope("fake:main", "first"))
    h.server.add(Step(text="one"), Step(text="two"))
    h.run("fake:main")
    with write_tx(h.engine) as conn:
        conn.execute(text("UPDATE session_turns SET tool_calls = '{not json', role = 'assistant'"))
    ingest(h.engine, envelope("fake:main", "second"))
    h.run("fake:main")
    assert "first" not in h.texts(1) and "second" in h.texts(1)
    assert audits(h.engine, "agent.session_reset")
    assert [r.text for r in outbox_rows(h.engine)] == ["one", "two"]


def test_daily_token_budget_exhaustion_gives_a_clear_reply(anthropic_h: Harness) -> None:
    h = anthropic_h
    register(h.engine, "fake:main", is_main=True, folder="main_g")
    ingest(h.engine, envelope("fake:main", "hi"))
    h.server.add(Step(text="hello", input_tokens=80, output_tokens=30))
    h.run("fake:main", daily_token_budget=100)
    ingest(h.engine, envelope("fake:main", "hi again"))
    h.run("fake:main", daily_token_budget=100)
    assert len(h.server.requests) == 1  # no model call once exhausted
    assert [r.text for r in outbox_rows(h.engine)] == ["hello", BUDGET_EXHAUSTED]


def test_step_limit_ends_the_run_with_a_note(anthropic_h: Harness) -> None:
    h = anthropic_h
    register(h.engine, "fake:main", is_main=True, folder="main_g")
    (h.tmp / "groups" / "main_g").mkdir(parents=True)
    ingest(h.engine, envelope("fake:main", "loop forever"))
    h.server.responder = lambda body: Step(text="still going", calls=[Call("list_files", {})])
    h.run("fake:main", max_steps=3)
    assert len(h.server.requests) == 3
    assert [r.text for r in outbox_rows(h.engine)] == [f"still going\n\n{STEP_LIMIT_NOTE}"]


def _queue_task(engine, task_id: str, context_mode: str) -> None:
    with write_tx(engine) as conn:
        conn.execute(
            insert(ScheduledTask.__table__).values(
                id=task_id,
                group_folder="main_g",
                chat_jid="fake:main",
                prompt=f"task {task_id}",
                schedule_type="once",
                schedule_value="2026-01-01T09:00:00",
                next_run=None,
                status="active",
                created_at="2026-01-01",
                context_mode=context_mode,
            )
        )
        conn.execute(
            insert(TaskQueueEntry.__table__).values(
                task_id=task_id,
                chat_jid="fake:main",
                scheduled_for="x",
                status="pending",
                claimed_at_ms=now_ms(),
            )
        )


def test_scheduled_tasks_share_history_in_group_mode_only(anthropic_h: Harness) -> None:
    h = anthropic_h
    register(h.engine, "fake:main", is_main=True, folder="main_g")
    ingest(h.engine, envelope("fake:main", "my secret word is banana"))
    h.server.responder = lambda body: Step(text="noted")
    h.run("fake:main")
    _queue_task(h.engine, "iso", "isolated")
    h.run("fake:main")
    assert "banana" not in h.texts(1) and "task iso" in h.texts(1)
    _queue_task(h.engine, "grp", "group")
    h.run("fake:main")
    assert "banana" in h.texts(2) and "task grp" in h.texts(2)
    assert "task iso" not in h.texts(2)  # the isolated run was not saved into the session


def test_task_tools_follow_the_authorization_table(anthropic_h: Harness) -> None:
    h = anthropic_h
    register(h.engine, "fake:team", folder="team", requires_trigger=False)
    register(h.engine, "fake:other", folder="other")
    ingest(h.engine, envelope("fake:team", "remind me daily"))
    h.server.add(
        Step(
            calls=[
                Call(
                    "schedule_task",
                    {"prompt": "standup", "schedule_type": "cron", "schedule_value": "0 9 * * *"},
                )
            ]
        ),
        Step(
            calls=[
                Call(
                    "schedule_task",
                    {
                        "prompt": "x",
                        "schedule_type": "interval",
                        "schedule_value": "60000",
                        "target_chat_jid": "fake:other",
                    },
                ),
                Call("schedule_task", {"prompt": "x", "schedule_type": "cron", "schedule_value": "not cron"}),
                Call("register_group", {"jid": "fake:new", "name": "n", "folder": "new", "trigger": "@Andy"}),
                Call("list_tasks", {}),
            ]
        ),
        Step(text="Scheduled."),
    )
    h.run("fake:team")
    (scheduled, ok_error) = h.tool_results(1)[0]
    assert not ok_error and scheduled.startswith("Task task-")
    results = h.tool_results(2)[1:]
    assert results[0] == ("denied: group 'team' may not schedule for 'fake:other'", True)
    assert results[1][1] and "invalid schedule" in results[1][0]
    assert results[2] == ("denied: only the main group may register groups", True)
    assert "standup" in results[3][0] and not results[3][1]
    with read_tx(h.engine) as conn:
        tasks = conn.execute(select(ScheduledTask.__table__)).all()
        assert groups.get_group(conn, "fake:new") is None
    assert [(t.group_folder, t.chat_jid, t.context_mode) for t in tasks] == [("team", "fake:team", "group")]
    assert len(audits(h.engine, "agent.tool_denied")) == 2
