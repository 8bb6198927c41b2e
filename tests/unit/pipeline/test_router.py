"""The router in-process, on a real SQLite file: trigger gating, cursors, retries, fencing."""

from __future__ import annotations

import contextlib

from sqlalchemy import insert, select, update

from microclaw.agent.loop import AgentResult
from microclaw.errors import TransientProviderError
from microclaw.pipeline import leases
from microclaw.pipeline.inbound import ingest
from microclaw.pipeline.router import process_group
from microclaw.store import audit, groups, task_queue, tasks
from microclaw.store.db import now_ms, read_tx, write_tx
from microclaw.store.models import GroupState, Lease, Run, ScheduledTask
from tests.helpers import envelope, outbox_rows, register, router_deps, runs


def state(engine, chat):
    with read_tx(engine) as conn:
        return groups.get_state(conn, chat)


def test_main_group_answers_without_trigger_and_advances_cursor(engine, tmp_path) -> None:
    register(engine, "fake:main", is_main=True)
    seq = ingest(engine, envelope("fake:main", "hello")).seq
    published: list[str] = []
    assert process_group(router_deps(engine, tmp_path, published=published), "fake:main") == "drained"
    rows = outbox_rows(engine)
    assert [(r.chat_jid, r.text, r.status) for r in rows] == [("fake:main", "echo: hello", "pending")]
    assert published == ["fake:main"]
    assert state(engine, "fake:main").cursor_seq == seq
    assert [r.status for r in runs(engine)] == ["done"]


def test_non_main_waits_for_trigger_and_keeps_chatter_as_context(engine, tmp_path) -> None:
    register(engine, "fake:team")
    ingest(engine, envelope("fake:team", "lunch?"))
    deps = router_deps(engine, tmp_path, agent=_capture_prompts(prompts := []))
    process_group(deps, "fake:team")
    assert prompts == [] and outbox_rows(engine) == []
    ingest(engine, envelope("fake:team", "hello @Andy"))  # not at the start: no trigger
    process_group(deps, "fake:team")
    assert prompts == []
    ingest(engine, envelope("fake:team", "@andy what do you think?"))
    process_group(deps, "fake:team")
    assert len(prompts) == 1
    assert "lunch?" in prompts[0] and "hello @Andy" in prompts[0] and "what do you think?" in prompts[0]


def test_requires_trigger_false_answers_everything(engine, tmp_path) -> None:
    register(engine, "fake:fam", requires_trigger=False)
    ingest(engine, envelope("fake:fam", "no trigger here"))
    process_group(router_deps(engine, tmp_path), "fake:fam")
    assert [r.text for r in outbox_rows(engine)] == ["echo: no trigger here"]


def _capture_prompts(prompts: list[str], reply: str | None = "ok"):
    def agent(request, on_step):
        prompts.append(request.prompt)
        return AgentResult(text=reply)

    return agent


def _flaky(fail_times: int, prompts: list[str]):
    calls = {"n": 0}

    def agent(request, on_step):
        calls["n"] += 1
        prompts.append(request.prompt)
        if calls["n"] <= fail_times:
            raise TransientProviderError("model down")
        return AgentResult(text="recovered")

    return agent


def _make_retry_due(engine, chat) -> None:
    with write_tx(engine) as conn:
        conn.execute(
            update(GroupState.__table__)
            .where(GroupState.__table__.c.chat_jid == chat)
            .values(retry_at_ms=now_ms() - 1)
        )


def test_failure_with_nothing_sent_rolls_back_and_backs_off(engine, tmp_path) -> None:
    register(engine, "fake:g", requires_trigger=False)
    seq = ingest(engine, envelope("fake:g", "first")).seq
    prompts: list[str] = []
    deps = router_deps(engine, tmp_path, agent=_flaky(1, prompts))
    before = now_ms()
    assert process_group(deps, "fake:g") == "drained"
    st = state(engine, "fake:g")
    assert (st.cursor_seq, st.seen_seq, st.retry_count) == (0, seq, 1)  # only the cursor rolls back
    assert 5_000 <= st.retry_at_ms - before <= 6_000
    assert outbox_rows(engine) == []
    process_group(deps, "fake:g")  # not due yet: nothing happens
    assert len(prompts) == 1
    _make_retry_due(engine, "fake:g")
    process_group(deps, "fake:g")
    assert len(prompts) == 2 and "first" in prompts[1]
    assert [r.text for r in outbox_rows(engine)] == ["recovered"]
    st = state(engine, "fake:g")
    assert (st.cursor_seq, st.retry_count, st.retry_at_ms) == (seq, 0, None)


def test_retry_schedule_then_drop_until_next_message(engine, tmp_path) -> None:
    register(engine, "fake:g", requires_trigger=False)
    ingest(engine, envelope("fake:g", "doomed"))
    prompts: list[str] = []
    deps = router_deps(engine, tmp_path, agent=_flaky(6, prompts))
    delays = []
    for _ in range(6):
        start = now_ms()
        process_group(deps, "fake:g")
        st = state(engine, "fake:g")
        delays.append(None if st.retry_at_ms is None else round((st.retry_at_ms - start) / 1000))
        if st.retry_at_ms is not None:
            _make_retry_due(engine, "fake:g")
    assert delays == [5, 10, 20, 40, 80, None]
    assert len(prompts) == 6
    assert state(engine, "fake:g").retry_count == 0
    process_group(deps, "fake:g")  # dropped: no more attempts
    assert len(prompts) == 6
    with read_tx(engine) as conn:
        assert audit.recent(conn, kind="router.retries_exhausted")
    ingest(engine, envelope("fake:g", "again"))
    process_group(deps, "fake:g")
    assert len(prompts) == 7 and "doomed" in prompts[-1] and "again" in prompts[-1]
    assert [r.text for r in outbox_rows(engine)] == ["recovered"]


def test_failure_after_output_reached_the_outbox_does_not_roll_back(engine, tmp_path) -> None:
    register(engine, "fake:g", requires_trigger=False)
    seq = ingest(engine, envelope("fake:g", "hi")).seq

    def agent(request, on_step):
        with write_tx(engine) as conn:  # a host-side send_message during the run
            run_id = conn.execute(select(Run.__table__.c.id)).scalar_one()
            from microclaw.store import outbox

            outbox.add(conn, key=f"run:{run_id}:msg:1", chat_jid="fake:g", text="partial", run_id=run_id)
        raise TransientProviderError("died after sending")

    process_group(router_deps(engine, tmp_path, agent=agent), "fake:g")
    st = state(engine, "fake:g")
    assert (st.cursor_seq, st.retry_count, st.retry_at_ms) == (seq, 0, None)


def test_prompt_holds_newest_n_and_audits_the_rest(engine, tmp_path) -> None:
    register(engine, "fake:g", requires_trigger=False)
    for i in range(5):
        ingest(engine, envelope("fake:g", f"m{i}"))
    prompts: list[str] = []
    process_group(router_deps(engine, tmp_path, agent=_capture_prompts(prompts), max_messages=3), "fake:g")
    assert len(prompts) == 1
    assert "m0" not in prompts[0] and "m1" not in prompts[0]
    assert prompts[0].index("m2") < prompts[0].index("m3") < prompts[0].index("m4")
    with read_tx(engine) as conn:
        dropped = audit.recent(conn, kind="router.backlog_dropped")
    assert dropped[0]["detail"] == {"dropped": 2, "limit": 3}


def test_empty_or_internal_only_reply_sends_nothing(engine, tmp_path) -> None:
    register(engine, "fake:g", requires_trigger=False)
    ingest(engine, envelope("fake:g", "hi"))
    process_group(
        router_deps(engine, tmp_path, agent=_capture_prompts([], "<internal>thinking</internal>")), "fake:g"
    )
    assert outbox_rows(engine) == []
    assert [r.status for r in runs(engine)] == ["done"]


def test_busy_group_is_left_to_its_holder(engine, tmp_path) -> None:
    register(engine, "fake:g", requires_trigger=False)
    ingest(engine, envelope("fake:g", "hi"))
    with write_tx(engine) as conn:
        leases.acquire(conn, leases.group_lease("fake:g"), "other", ttl_ms=60_000, now_ms=now_ms())
    assert process_group(router_deps(engine, tmp_path), "fake:g") == "busy"
    assert runs(engine) == []


def test_stale_holder_cannot_write_a_reply(engine, tmp_path) -> None:
    register(engine, "fake:g", requires_trigger=False)
    ingest(engine, envelope("fake:g", "hi"))

    def agent(request, on_step):
        # Meanwhile the lease expired and another worker took it over.
        with write_tx(engine) as conn:
            conn.execute(update(Lease.__table__).values(expires_at_ms=0))
            leases.acquire(conn, leases.group_lease("fake:g"), "usurper", ttl_ms=60_000, now_ms=now_ms())
        return AgentResult(text="too late")

    assert process_group(router_deps(engine, tmp_path, agent=agent), "fake:g") == "lost"
    assert outbox_rows(engine) == []


def test_run_abandoned_by_a_dead_worker_is_recovered(engine, tmp_path) -> None:
    register(engine, "fake:g", requires_trigger=False)
    seq = ingest(engine, envelope("fake:g", "hi")).seq
    with write_tx(engine) as conn:  # what a SIGKILLed worker leaves behind
        token = leases.acquire(conn, leases.group_lease("fake:g"), "dead", ttl_ms=1, now_ms=0)
        conn.execute(
            insert(Run.__table__).values(
                chat_jid="fake:g",
                kind="messages",
                lease_token=token,
                prev_cursor_seq=0,
                prev_seen_seq=0,
                to_seq=seq,
                status="running",
                started_at_ms=0,
                started_at=0.0,
                worker="dead",
            )
        )
        groups.get_state(conn, "fake:g")
        groups.set_state(conn, "fake:g", cursor_seq=seq, seen_seq=seq)
    deps = router_deps(engine, tmp_path, retry_delays_ms=(60_000, 60_000))
    # The worker died, the batch did not fail: the taker re-runs it at once (a restarted worker
    # answers within seconds), not after the first retry delay.
    process_group(deps, "fake:g")
    assert [r.status for r in runs(engine)] == ["abandoned", "done"]
    assert [r.text for r in outbox_rows(engine)] == ["echo: hi"]
    assert state(engine, "fake:g").retry_count == 0


def _abandon_running_run(engine, chat: str) -> None:
    """What a worker SIGKILLed mid-run leaves: its run 'running' under a lease of a gone holder."""
    lease = Lease.__table__
    with write_tx(engine) as conn:  # undo the release a dying worker may still manage
        conn.execute(
            update(lease)
            .where(lease.c.name == leases.group_lease(chat))
            .values(holder="dead", expires_at_ms=0)
        )


def test_a_run_abandoned_twice_in_a_row_backs_off_like_a_failure(engine, tmp_path) -> None:
    register(engine, "fake:loop", requires_trigger=False)
    ingest(engine, envelope("fake:loop", "poison"))
    killed: list[int] = []

    def dies(request, on_step):  # the worker dies in the run: nothing after this point happens
        killed.append(request.run_id)
        raise KeyboardInterrupt

    deps = router_deps(engine, tmp_path, agent=dies, retry_delays_ms=(60_000, 60_000))
    for _ in range(2):
        with contextlib.suppress(KeyboardInterrupt):
            process_group(deps, "fake:loop")
        _abandon_running_run(engine, "fake:loop")
    # First abandonment: re-run at once (the second kill). Second one: the usual backoff.
    assert len(killed) == 2
    process_group(deps, "fake:loop")
    assert len(killed) == 2
    st = state(engine, "fake:loop")
    assert st.retry_count == 2 and st.retry_at_ms is not None and st.retry_at_ms > now_ms() + 30_000
    assert [r.status for r in runs(engine)] == ["abandoned", "abandoned"]


def _queue_task(engine, task_id: str, folder: str, chat: str) -> None:
    """A once task whose run the tick has claimed (the queue entry is pending)."""
    with write_tx(engine) as conn:
        tasks.create_task(
            conn,
            id=task_id,
            group_folder=folder,
            chat_jid=chat,
            prompt="water the plants",
            schedule_type="once",
            schedule_value="2026-01-01T09:00:00",
            next_run=None,
            created_at="2026-01-01",
        )
        task_queue.claim(
            conn, task_id=task_id, chat_jid=chat, scheduled_for="2026-01-01T09:00:00.000Z", now_ms=now_ms()
        )


def test_due_task_runs_before_messages_and_once_completes(engine, tmp_path) -> None:
    register(engine, "fake:g", requires_trigger=False, folder="fake_g")
    ingest(engine, envelope("fake:g", "user message"))
    _queue_task(engine, "t1", "fake_g", "fake:g")
    prompts: list[str] = []
    process_group(router_deps(engine, tmp_path, agent=_capture_prompts(prompts, "done!")), "fake:g")
    assert len(prompts) == 2
    assert prompts[0].startswith("[SCHEDULED TASK - The following message was sent automatically")
    assert "water the plants" in prompts[0] and "user message" in prompts[1]
    with read_tx(engine) as conn:
        task = conn.execute(select(ScheduledTask.__table__)).one()
    assert (task.status, task.last_result) == ("completed", "done!")


def test_typing_is_shown_for_message_runs_only_and_never_blocks(engine, tmp_path) -> None:
    register(engine, "fake:g", requires_trigger=False, folder="fake_g")
    ingest(engine, envelope("fake:g", "hi"))
    typing: list[str] = []
    deps = router_deps(engine, tmp_path)
    deps.publish_typing = typing.append
    process_group(deps, "fake:g")
    assert typing == ["fake:g"]

    def broken(_chat: str) -> None:
        raise OSError("broker down")

    deps.publish_typing = broken
    ingest(engine, envelope("fake:g", "again"))
    process_group(deps, "fake:g")
    assert [r.text for r in outbox_rows(engine)] == ["echo: hi", "echo: again"]


def test_message_runs_keep_typing_alive_through_the_lease_keeper_task_runs_do_not(
    engine, tmp_path, monkeypatch
) -> None:
    """The keeper's pulse is the typing refresh (its timing: tests/unit/pipeline/test_leases.py)."""
    pulses: list = []

    class RecordingKeeper(leases.LeaseKeeper):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            pulses.append(args[4] if len(args) > 4 else kwargs.get("pulse"))

    monkeypatch.setattr(leases, "LeaseKeeper", RecordingKeeper)
    register(engine, "fake:g", requires_trigger=False, folder="fake_g")
    _queue_task(engine, "t1", "fake_g", "fake:g")
    ingest(engine, envelope("fake:g", "hi"))
    typing: list[str] = []
    deps = router_deps(engine, tmp_path)
    deps.publish_typing = typing.append
    process_group(deps, "fake:g")
    task_pulse, message_pulse = pulses
    assert task_pulse is None
    typing.clear()
    message_pulse()
    assert typing == ["fake:g"]


def test_task_run_abandoned_by_a_dead_worker_is_settled_not_retried(engine, tmp_path) -> None:
    register(engine, "fake:g", requires_trigger=False, folder="fake_g")
    _queue_task(engine, "t1", "fake_g", "fake:g")
    with write_tx(engine) as conn:  # a worker started the task run, then was SIGKILLed
        token = leases.acquire(conn, leases.group_lease("fake:g"), "dead", ttl_ms=1, now_ms=0)
        entry = task_queue.start_next(conn, "fake:g")
        conn.execute(
            insert(Run.__table__).values(
                chat_jid="fake:g",
                kind="task",
                task_run_id=entry.id,
                lease_token=token,
                status="running",
                started_at_ms=0,
                started_at=0.0,
                worker="dead",
            )
        )
    prompts: list[str] = []
    assert (
        process_group(router_deps(engine, tmp_path, agent=_capture_prompts(prompts)), "fake:g") == "drained"
    )
    assert prompts == []  # task runs are never retried
    assert [r.status for r in runs(engine)] == ["abandoned"]
    with read_tx(engine) as conn:
        (log,) = tasks.task_run_logs(conn, "t1")
        assert task_queue.get(conn, entry.id).status == "done"
    assert log.status == "error" and "interrupted" in log.error


def test_a_run_starts_its_groups_container_before_the_agent_and_never_waits_for_it(engine, tmp_path) -> None:
    register(engine, "fake:g", requires_trigger=False, folder="fake_g")
    ingest(engine, envelope("fake:g", "hi"))
    order: list[object] = []
    deps = router_deps(engine, tmp_path)
    agent = deps.agent

    def agent_after(request, on_step):
        order.append("agent")
        return agent(request, on_step)

    deps.agent = agent_after
    deps.prepare_sandbox = lambda folder, is_main: order.append((folder, is_main))
    process_group(deps, "fake:g")
    assert order == [("fake_g", False), "agent"]

    def broken(_folder: str, _is_main: bool) -> None:
        raise OSError("broker down")

    deps.prepare_sandbox = broken
    ingest(engine, envelope("fake:g", "again"))
    process_group(deps, "fake:g")
    assert [r.text for r in outbox_rows(engine)] == ["echo: hi", "echo: again"]
