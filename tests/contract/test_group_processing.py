"""Contract §1.5, §3, §9.5 and checklist 11.6-11.8: the group processing rules on database leases.

In-process against `microclaw.pipeline.router.process_group` on a real SQLite file (the rules not already
pinned by tests/unit/test_router.py), then with real Celery worker processes: a router pool of
2 serving 3 busy groups, and a due scheduled task running before its group's messages.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert, select, update

from microclaw.agent.loop import AgentRequest, AgentResult
from microclaw.core.senders import AllowEntry, SenderAllowlist
from microclaw.envelope import make_envelope
from microclaw.errors import TransientProviderError
from microclaw.pipeline.inbound import ingest, ingest_and_kick
from microclaw.pipeline.router import process_group
from microclaw.scheduler.tick import claim_due_tasks, iso
from microclaw.store import groups, tasks
from microclaw.store.db import now_ms, read_tx, write_tx
from microclaw.store.models import GroupState, Message, Run, TaskQueueEntry
from tests.helpers import envelope, outbox_rows, register, router_deps, runs

T0 = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)


def state(engine, chat):
    with read_tx(engine) as conn:
        return groups.get_state(conn, chat)


def make_retry_due(engine, chat) -> None:
    with write_tx(engine) as conn:
        conn.execute(
            update(GroupState.__table__)
            .where(GroupState.__table__.c.chat_jid == chat)
            .values(retry_at_ms=now_ms() - 1)
        )


class Recorder:
    """An agent that records each request, optionally fails, optionally blocks until released."""

    def __init__(self, reply: str = "ok", fail: Callable[[AgentRequest], bool] | None = None) -> None:
        self.requests: list[AgentRequest] = []
        self.reply, self.fail = reply, fail
        self.gate: threading.Event | None = None
        self.entered = threading.Event()
        self.active = self.peak = 0
        self._lock = threading.Lock()

    def block_next(self) -> threading.Event:
        self.gate, self.entered = threading.Event(), threading.Event()
        return self.gate

    def __call__(self, request: AgentRequest, on_step: Callable[[], None]) -> AgentResult:
        with self._lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
            self.requests.append(request)
        try:
            self.entered.set()
            gate, self.gate = self.gate, None
            if gate is not None:
                assert gate.wait(10), "test never released the agent"
            if self.fail is not None and self.fail(request):
                raise TransientProviderError("model down")
            return AgentResult(text=self.reply)
        finally:
            with self._lock:
                self.active -= 1

    @property
    def kinds(self) -> list[str]:
        return ["task" if r.is_scheduled_task else "messages" for r in self.requests]


def in_background(fn: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    result: list[object] = []
    thread = threading.Thread(target=lambda: result.append(fn()))
    thread.start()
    return thread, result


def add_task(
    engine,
    task_id: str,
    chat: str,
    folder: str,
    *,
    schedule_type="once",
    value="2026-01-01T09:00:00",
    next_run="2026-01-01T09:00:00.000Z",
) -> None:
    with write_tx(engine) as conn:
        tasks.create_task(
            conn,
            id=task_id,
            group_folder=folder,
            chat_jid=chat,
            prompt=f"task {task_id}",
            schedule_type=schedule_type,
            schedule_value=value,
            next_run=next_run,
        )


# --- one run per group, tasks first, tasks alone ----------------------------------------------


def test_one_run_per_group_and_the_holder_drains_what_arrives_meanwhile(engine, tmp_path) -> None:
    register(engine, "fake:g", requires_trigger=False)
    ingest(engine, envelope("fake:g", "first"))
    agent = Recorder()
    deps = router_deps(engine, tmp_path, agent=agent)
    gate = agent.block_next()
    holder, outcome = in_background(lambda: process_group(deps, "fake:g"))
    assert agent.entered.wait(10)
    assert process_group(deps, "fake:g") == "busy"  # a second caller never starts a run
    assert ingest(engine, envelope("fake:g", "second")).kick is True  # the kick finds the lease taken...
    assert process_group(deps, "fake:g") == "busy"
    gate.set()
    holder.join(10)
    assert outcome == ["drained"]  # ...and the holder drains the new message before releasing
    assert agent.peak == 1
    assert ["first" in r.prompt and "second" not in r.prompt for r in agent.requests] == [True, False]
    assert "second" in agent.requests[1].prompt and "first" not in agent.requests[1].prompt
    assert [r.status for r in runs(engine)] == ["done", "done"]


def test_a_task_due_during_a_message_run_goes_before_the_next_messages(engine, tmp_path) -> None:
    register(engine, "fake:g", requires_trigger=False, folder="fake_g")
    add_task(engine, "t1", "fake:g", "fake_g")
    ingest(engine, envelope("fake:g", "before"))
    agent = Recorder()
    deps = router_deps(engine, tmp_path, agent=agent)
    gate = agent.block_next()
    holder, _ = in_background(lambda: process_group(deps, "fake:g"))
    assert agent.entered.wait(10)
    ingest(engine, envelope("fake:g", "while running"))
    assert claim_due_tasks(engine, timezone="UTC", now=T0 + timedelta(minutes=1)) == ["fake:g"]
    gate.set()
    holder.join(10)
    assert agent.kinds == ["messages", "task", "messages"]
    assert "task t1" in agent.requests[1].prompt
    assert "while running" in agent.requests[2].prompt and "before" not in agent.requests[2].prompt


def test_user_messages_never_join_a_task_run(engine, tmp_path) -> None:
    register(engine, "fake:g", requires_trigger=False, folder="fake_g")
    add_task(engine, "t1", "fake:g", "fake_g")
    claim_due_tasks(engine, timezone="UTC", now=T0)
    agent = Recorder(reply="task says hi")
    deps = router_deps(engine, tmp_path, agent=agent)
    gate = agent.block_next()
    holder, _ = in_background(lambda: process_group(deps, "fake:g"))
    assert agent.entered.wait(10)
    seq = ingest(engine, envelope("fake:g", "are you there?")).seq
    assert state(engine, "fake:g").cursor_seq == 0  # a task run never moves the message cursor
    gate.set()
    holder.join(10)
    task_req, msg_req = agent.requests
    assert task_req.is_scheduled_task and "are you there?" not in task_req.prompt
    assert (
        not msg_req.is_scheduled_task
        and "are you there?" in msg_req.prompt
        and "task t1" not in msg_req.prompt
    )
    assert [r.kind for r in runs(engine)] == ["task", "messages"]
    assert state(engine, "fake:g").cursor_seq == seq
    assert [r.text for r in outbox_rows(engine)] == ["task says hi", "task says hi"]


def test_tasks_run_in_claim_order_before_any_message(engine, tmp_path) -> None:
    register(engine, "fake:g", requires_trigger=False, folder="fake_g")
    ingest(engine, envelope("fake:g", "hello"))
    add_task(engine, "late", "fake:g", "fake_g", next_run="2026-01-01T09:00:02.000Z")
    add_task(engine, "early", "fake:g", "fake_g", next_run="2026-01-01T09:00:01.000Z")
    claim_due_tasks(engine, timezone="UTC", now=T0 + timedelta(seconds=5))
    agent = Recorder()
    process_group(router_deps(engine, tmp_path, agent=agent), "fake:g")
    assert agent.kinds == ["task", "task", "messages"]
    assert "task early" in agent.requests[0].prompt and "task late" in agent.requests[1].prompt


def test_a_claimed_slot_runs_once_however_often_it_is_claimed_or_kicked(engine, tmp_path) -> None:
    register(engine, "fake:g", requires_trigger=False, folder="fake_g")
    add_task(engine, "t1", "fake:g", "fake_g", schedule_type="interval", value="3600000")
    assert claim_due_tasks(engine, timezone="UTC", now=T0) == ["fake:g"]
    assert claim_due_tasks(engine, timezone="UTC", now=T0) == []  # next_run moved on: nothing due
    agent = Recorder()
    deps = router_deps(engine, tmp_path, agent=agent)
    gate = agent.block_next()
    holder, _ = in_background(lambda: process_group(deps, "fake:g"))
    assert agent.entered.wait(10)
    assert [process_group(deps, "fake:g") for _ in range(3)] == ["busy"] * 3
    gate.set()
    holder.join(10)
    process_group(deps, "fake:g")
    assert agent.kinds == ["task"]
    with read_tx(engine) as conn:
        entries = conn.execute(select(TaskQueueEntry.__table__)).all()
        task = tasks.get_task(conn, "t1")
    assert [(e.scheduled_for, e.status) for e in entries] == [("2026-01-01T09:00:00.000Z", "done")]
    # The run finished (on the real clock) long after its 10:00 slot: missed slots are skipped and
    # the schedule stays on its hourly grid.
    assert task is not None and task.next_run > datetime.now(tz=UTC).isoformat()[:19]
    assert task.next_run.endswith(":00:00.000Z")


def test_a_task_id_with_a_pending_run_is_not_queued_again(engine, tmp_path) -> None:
    register(engine, "fake:g", requires_trigger=False, folder="fake_g")
    add_task(engine, "t1", "fake:g", "fake_g", schedule_type="interval", value="60000")
    claim_due_tasks(engine, timezone="UTC", now=T0)  # slot 09:00 queued; the group is busy elsewhere
    claim_due_tasks(engine, timezone="UTC", now=T0 + timedelta(minutes=1, seconds=1))  # slot 09:01 comes due
    agent = Recorder()
    process_group(router_deps(engine, tmp_path, agent=agent), "fake:g")
    assert agent.kinds == ["task"]


def test_a_failed_task_is_logged_and_never_retried(engine, tmp_path) -> None:
    register(engine, "fake:g", requires_trigger=False, folder="fake_g")
    add_task(engine, "t1", "fake:g", "fake_g")
    claim_due_tasks(engine, timezone="UTC", now=T0)
    agent = Recorder(fail=lambda r: r.is_scheduled_task)
    deps = router_deps(engine, tmp_path, agent=agent)
    process_group(deps, "fake:g")
    process_group(deps, "fake:g")
    assert agent.kinds == ["task"]
    st = state(engine, "fake:g")
    assert (st.retry_count, st.retry_at_ms) == (0, None)
    with read_tx(engine) as conn:
        task = tasks.get_task(conn, "t1")
        logs = tasks.task_run_logs(conn, "t1")
    assert task is not None and (task.status, task.next_run, task.last_result) == (
        "completed",
        None,
        "Error: model down",
    )
    assert [(log.status, log.error) for log in logs] == [("error", "model down")]
    assert [r.status for r in runs(engine)] == ["failed"]


# --- retries and cursors ---------------------------------------------------------------------------


def test_rollback_goes_back_to_the_previous_run_not_to_the_start(engine, tmp_path) -> None:
    register(engine, "fake:g", requires_trigger=False)
    first = ingest(engine, envelope("fake:g", "one")).seq
    agent = Recorder(fail=lambda r: "two" in r.prompt)
    deps = router_deps(engine, tmp_path, agent=agent)
    process_group(deps, "fake:g")
    ingest(engine, envelope("fake:g", "two"))
    process_group(deps, "fake:g")
    st = state(engine, "fake:g")
    assert (st.cursor_seq, st.retry_count) == (first, 1)
    assert [r.text for r in outbox_rows(engine)] == ["ok"]


def test_a_new_message_during_backoff_is_answered_at_once_with_the_rolled_back_ones(engine, tmp_path) -> None:
    register(engine, "fake:g", requires_trigger=False)
    ingest(engine, envelope("fake:g", "lost in the outage"))
    calls = {"n": 0}

    def fail_once(request: AgentRequest) -> bool:
        calls["n"] += 1
        return calls["n"] == 1

    agent = Recorder(fail=fail_once)
    deps = router_deps(engine, tmp_path, agent=agent)
    process_group(deps, "fake:g")
    assert state(engine, "fake:g").retry_count == 1
    ingest(engine, envelope("fake:g", "hello again"))
    process_group(deps, "fake:g")  # the 5 s backoff has not elapsed
    assert len(agent.requests) == 2
    assert "lost in the outage" in agent.requests[1].prompt and "hello again" in agent.requests[1].prompt
    st = state(engine, "fake:g")
    assert (st.retry_count, st.retry_at_ms) == (0, None)


def test_after_a_drop_the_counter_starts_again_at_5_s(engine, tmp_path) -> None:
    register(engine, "fake:g", requires_trigger=False)
    ingest(engine, envelope("fake:g", "doomed"))
    agent = Recorder(fail=lambda r: True)
    deps = router_deps(engine, tmp_path, agent=agent)
    for _ in range(6):
        process_group(deps, "fake:g")
        if state(engine, "fake:g").retry_at_ms is not None:
            make_retry_due(engine, "fake:g")
    assert len(agent.requests) == 6 and state(engine, "fake:g").retry_count == 0
    ingest(engine, envelope("fake:g", "next"))
    start = now_ms()
    process_group(deps, "fake:g")
    st = state(engine, "fake:g")
    assert len(agent.requests) == 7 and st.retry_count == 1
    assert 5_000 <= st.retry_at_ms - start <= 6_000


def test_untriggered_chatter_during_backoff_waits_for_the_retry(engine, tmp_path) -> None:
    register(engine, "fake:team")
    ingest(engine, envelope("fake:team", "@Andy summarize"))
    calls = {"n": 0}

    def fail_once(request: AgentRequest) -> bool:
        calls["n"] += 1
        return calls["n"] == 1

    agent = Recorder(fail=fail_once)
    deps = router_deps(engine, tmp_path, agent=agent)
    process_group(deps, "fake:team")
    ingest(engine, envelope("fake:team", "lol"))
    process_group(deps, "fake:team")
    assert len(agent.requests) == 1


def test_after_a_drop_untriggered_chatter_does_not_restart_the_batch(engine, tmp_path) -> None:
    register(engine, "fake:team")
    ingest(engine, envelope("fake:team", "@Andy summarize"))
    agent = Recorder(fail=lambda r: len(agent.requests) <= 6)
    deps = router_deps(engine, tmp_path, agent=agent)
    for _ in range(6):
        process_group(deps, "fake:team")
        if state(engine, "fake:team").retry_at_ms is not None:
            make_retry_due(engine, "fake:team")
    assert len(agent.requests) == 6
    ingest(engine, envelope("fake:team", "lol"))
    process_group(deps, "fake:team")
    assert len(agent.requests) == 6
    ingest(engine, envelope("fake:team", "@Andy please"))
    process_group(deps, "fake:team")
    assert len(agent.requests) == 7 and "summarize" in agent.requests[-1].prompt


def test_a_triggering_message_after_a_drop_restarts_the_batch(engine, tmp_path) -> None:
    register(engine, "fake:team")
    ingest(engine, envelope("fake:team", "@Andy summarize"))
    agent = Recorder(fail=lambda r: len(agent.requests) <= 6)
    deps = router_deps(engine, tmp_path, agent=agent)
    for _ in range(7):
        process_group(deps, "fake:team")
        if state(engine, "fake:team").retry_at_ms is not None:
            make_retry_due(engine, "fake:team")
    assert len(agent.requests) == 6
    ingest(engine, envelope("fake:team", "@Andy please"))
    process_group(deps, "fake:team")
    assert len(agent.requests) == 7
    assert "summarize" in agent.requests[-1].prompt and "please" in agent.requests[-1].prompt
    assert [r.text for r in outbox_rows(engine)] == ["ok"]


# --- what a run sees -------------------------------------------------------------------------------


def test_a_group_without_a_cursor_recovers_it_from_the_last_bot_message(engine, tmp_path) -> None:
    register(engine, "fake:g", requires_trigger=False)
    for text, is_bot in [
        ("old question", False),
        ("Andy: old answer", False),
        ("flagged answer", True),
        ("new question", False),
    ]:
        ingest(
            engine,
            make_envelope(
                source="fake",
                message_id=f"fake:g:{text}",
                chat_id="fake:g",
                text=text,
                sender="u1",
                is_bot_message=is_bot,
            ),
        )
    agent = Recorder()
    process_group(router_deps(engine, tmp_path, agent=agent), "fake:g")
    (request,) = agent.requests
    assert "new question" in request.prompt
    assert "old question" not in request.prompt and "answer" not in request.prompt


def test_bot_messages_never_trigger(engine, tmp_path) -> None:
    register(engine, "fake:team")
    for text, is_bot in [("@Andy from the bot itself", True), ("Andy: @Andy prefixed", False)]:
        ingest(
            engine,
            make_envelope(
                source="fake",
                message_id=f"fake:team:{text}",
                chat_id="fake:team",
                text=text,
                sender="bot",
                is_bot_message=is_bot,
            ),
        )
    agent = Recorder()
    process_group(router_deps(engine, tmp_path, agent=agent), "fake:team")
    assert agent.requests == [] and runs(engine) == []


def test_sender_allowlist_gates_triggers_but_not_from_me(engine, tmp_path) -> None:
    register(engine, "fake:team")
    allow = SenderAllowlist(default=AllowEntry(allow=("boss",), mode="trigger"))
    agent = Recorder()
    deps = router_deps(engine, tmp_path, agent=agent)
    deps.allowlist = lambda: allow
    ingest(engine, envelope("fake:team", "@Andy do it", sender="intern"))
    process_group(deps, "fake:team")
    assert agent.requests == []  # stored as context, cannot trigger
    ingest(engine, envelope("fake:team", "@Andy from my own phone", sender="me", is_from_me=True))
    process_group(deps, "fake:team")
    assert len(agent.requests) == 1 and "do it" in agent.requests[0].prompt
    ingest(engine, envelope("fake:team", "@Andy now me", sender="boss"))
    process_group(deps, "fake:team")
    assert len(agent.requests) == 2 and "now me" in agent.requests[1].prompt


def test_an_unregistered_chat_never_runs(engine, tmp_path) -> None:
    with write_tx(engine) as conn:
        groups.get_state(conn, "fake:stranger")
        # ingest() never stores messages of unregistered chats; a group deregistered by hand leaves some.
        conn.execute(
            insert(Message.__table__).values(id="x", chat_jid="fake:stranger", content="@Andy hi", seq=1)
        )
    agent = Recorder()
    assert process_group(router_deps(engine, tmp_path, agent=agent), "fake:stranger") == "drained"
    assert agent.requests == [] and state(engine, "fake:stranger").seen_seq == 1


# --- real worker processes -------------------------------------------------------------------------


def peak_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    peak = current = 0
    for _, delta in events:
        current += delta
        peak = max(peak, current)
    return peak


@pytest.fixture
def stack(tmp_path: Path) -> Iterator:
    from tests.integration.stack import Stack

    built = Stack(tmp_path, MICROCLAW_AGENT__SCRIPTED_DELAY_S="0.25")
    yield built
    built.stop()


@pytest.mark.slow
def test_real_workers_pool_of_2_three_busy_groups_task_first(stack) -> None:
    try:
        _pool_of_2_three_busy_groups_task_first(stack)
    except AssertionError:
        print(stack.logs())
        raise


def _pool_of_2_three_busy_groups_task_first(stack) -> None:
    from tests.integration.stack import wait_for

    chats = [f"local:busy{i}" for i in range(3)]
    with write_tx(stack.engine) as conn:
        for i, chat in enumerate(chats):
            groups.register_group(
                conn, jid=chat, name=chat, folder=f"local_busy{i}", trigger="@Andy", requires_trigger=False
            )
        tasks.create_task(
            conn,
            id="morning",
            group_folder="local_busy0",
            chat_jid=chats[0],
            prompt="morning briefing",
            schedule_type="once",
            schedule_value="2026-01-01T09:00:00",
            next_run=iso(datetime.now(tz=UTC) - timedelta(minutes=1)),
        )
    # Before any worker runs: the task is claimed and busy0 already has a message waiting.
    assert claim_due_tasks(stack.engine, timezone="UTC") == [chats[0]]
    sent: dict[str, list[str]] = {chat: [] for chat in chats}

    def send(chat: str, text: str) -> None:
        env = make_envelope(
            source="local", message_id=f"{chat}:{text}", chat_id=chat, text=text, sender="u", sender_name="U"
        )
        ingest_and_kick(stack.engine, env, stack.kick)
        sent[chat].append(text)

    for chat in chats:
        send(chat, f"{chat} m0")
    stack.kick(chats[0])
    stack.router("router", 2)
    stack.outbound()
    stack.beat()
    stack.wait_workers(2)
    for wave in range(1, 4):  # keep all three groups busy while the pool can serve only two
        for chat in chats:
            send(chat, f"{chat} m{wave}")
        threading.Event().wait(0.3)

    def answered() -> bool:
        seen = dict.fromkeys(chats, "")
        for item in stack.mailbox.after(0, limit=10_000):
            seen[item.chat_id] = seen.get(item.chat_id, "") + item.text
        return all(sent[c][-1] in seen[c] for c in chats)

    wait_for(answered, 120, "every busy group's last message to be answered", interval=0.2)
    with read_tx(stack.engine) as conn:
        run_rows = conn.execute(select(Run.__table__).order_by(Run.__table__.c.started_at)).all()
    assert all(r.status == "done" and r.finished_at is not None for r in run_rows)
    assert peak_overlap([(r.started_at, r.finished_at) for r in run_rows]) == 2  # the cap, and it was reached
    for chat in chats:
        mine = [(r.started_at, r.finished_at) for r in run_rows if r.chat_jid == chat]
        assert mine and peak_overlap(mine) == 1, f"two runs of {chat} overlapped"
    busy0 = [r for r in run_rows if r.chat_jid == chats[0]]
    assert len(busy0) >= 2 and busy0[0].kind == "task", "the due task must run before busy0's messages"
    assert all(r.kind == "messages" and r.started_at >= busy0[0].finished_at for r in busy0[1:])


# --- task pre-check scripts (§4.6) -------------------------------------------------------------------


def test_a_pre_check_script_decides_whether_the_task_agent_wakes(engine, tmp_path) -> None:
    """Contract §4.4/§4.6/§2.2 through the router and the real agent; the sandbox call alone is an
    in-process double (the script's stdout by script text), the real container is covered in
    tests/integration/agent/test_task_precheck_sandbox.py."""
    from microclaw.agent.providers.base import BaseProvider, Completion
    from microclaw.config import AgentSettings
    from microclaw.core.formatting import wrap_scheduled_prompt
    from microclaw.runtime.wiring import build_agent
    from microclaw.sandbox.base import ExecResult
    from microclaw.store import audit

    outputs = {
        "sleep-script": (0, 'checking\n{"wakeAgent": false}\n'),
        "wake-script": (0, 'log line\n{"wakeAgent": true, "data": {"new": 2}}\n'),
        "broken-script": (1, '{"wakeAgent": true}\n'),
        "garbage-script": (0, "not json\n"),
    }

    class ScriptSandbox:
        def __init__(self) -> None:
            self.scripts: list[str] = []

        def exec(self, group, argv, *, timeout=None, tool=None, is_main=None):  # type: ignore[no-untyped-def]
            self.scripts.append(argv[-1])
            code, out = outputs[argv[-1]]
            return ExecResult(code, out.encode(), b"", False, 1, False, len(out), 0)

    class Model(BaseProvider):
        name = "recording"

        def __init__(self) -> None:
            self.prompts: list[str] = []

        @classmethod
        def from_settings(cls, settings):  # type: ignore[no-untyped-def]
            return cls()

        def complete(self, system, turns, tools):  # type: ignore[no-untyped-def]
            self.prompts.append(turns[-1].content)
            return Completion("2 new things")

    register(engine, "fake:g", requires_trigger=False, folder="fake_g")
    for task_id in outputs:
        add_task(engine, task_id, "fake:g", "fake_g")
        with write_tx(engine) as conn:
            tasks.update_task(conn, task_id, script=task_id)
    claim_due_tasks(engine, timezone="UTC", now=T0)
    model, sandbox = Model(), ScriptSandbox()
    agent = build_agent(
        AgentSettings(),
        model,
        assistant_name="Andy",
        engine=engine,
        groups_dir=tmp_path / "groups",
        archive_dir=tmp_path / "conversations",
        timezone="UTC",
        sandbox=sandbox,  # type: ignore[arg-type]
    )
    published: list[str] = []
    process_group(router_deps(engine, tmp_path, agent=agent, published=published), "fake:g")

    assert sorted(sandbox.scripts) == sorted(outputs)
    assert model.prompts == [wrap_scheduled_prompt("task wake-script", {"new": 2})]  # only the woken one
    assert [r.text for r in outbox_rows(engine)] == ["2 new things"]
    with read_tx(engine) as conn:
        for task_id in outputs:
            task = tasks.get_task(conn, task_id)
            logs = tasks.task_run_logs(conn, task_id)
            woken = task_id == "wake-script"
            assert task is not None and task.last_result == ("2 new things" if woken else "Completed")
            assert [(log.status, log.result, log.error) for log in logs] == [
                ("success", "2 new things" if woken else None, None)
            ]
        decisions = {
            r["detail"]["run_id"]: (r["decision"], r["detail"]["reason"])
            for r in audit.recent(conn, kind="scheduler.precheck")
        }
    assert sorted(decisions.values()) == [
        ("error", "exit code 1"),
        ("error", "last output line is not JSON"),
        ("skip", "wakeAgent false"),
        ("wake", "wakeAgent true"),
    ]
    assert [r.status for r in runs(engine)] == ["done"] * 4


def test_a_pre_check_script_without_a_sandbox_fails_the_run_and_is_not_retried(engine, tmp_path) -> None:
    """The offline agent (no sandbox) never runs the script on the host: the run is an error."""
    register(engine, "fake:g", requires_trigger=False, folder="fake_g")
    add_task(engine, "t1", "fake:g", "fake_g")
    with write_tx(engine) as conn:
        tasks.update_task(conn, "t1", script="echo '{\"wakeAgent\": true}'")
    claim_due_tasks(engine, timezone="UTC", now=T0)
    deps = router_deps(engine, tmp_path)  # the scripted (offline) agent, as the composition root builds it
    process_group(deps, "fake:g")
    process_group(deps, "fake:g")
    assert outbox_rows(engine) == []
    with read_tx(engine) as conn:
        task = tasks.get_task(conn, "t1")
        logs = tasks.task_run_logs(conn, "t1")
    assert task is not None and task.last_result is not None
    assert task.last_result.startswith("Error: sandbox unavailable: a task pre-check script runs only")
    assert [log.status for log in logs] == ["error"]
    assert [r.status for r in runs(engine)] == ["failed"]
