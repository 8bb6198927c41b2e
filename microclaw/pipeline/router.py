"""The router: drain one group's work, in order, under the group's lease.

`process_group()` is what a ``kick(group)`` task runs. It takes the group's lease (or returns
at once when another run holds it), recovers a run a crashed holder left behind, then loops:
due scheduled tasks first, then the messages since the group's cursor, until nothing is
pending; it releases the lease in the same transaction that proves nothing is pending, so a
message stored a moment later always finds the lease free and publishes a new kick.

A message run follows NanoClaw: the trigger rule is applied to the messages that are new since
the last look, the newest N messages since the cursor form the prompt, the cursor advances in
the transaction that records the run (before the agent starts), and on failure rolls back only
if nothing reached the user, with retries after 5/10/20/40/80 s and then a drop until the next
message (a run that a dead worker abandoned is retried at once the first time). Replies become
outbox rows in the transaction that finishes the run, fenced by the lease token, so a stale
holder can never add a reply. Scheduled-task runs are never retried;
what a finished or interrupted one leaves on its task is `microclaw.scheduler.completion`'s.

Orchestration only: the router decides and sequences; it holds no SQL. Rows are read and
written through their owners in `microclaw.store` (runs, task queue, tasks, group state,
messages, outbox, audit), the lease and the thread that renews it during an agent run are
`microclaw.pipeline.leases`. Does not talk to Celery or platforms: publishing is a callback,
the agent is a callable.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Connection, Engine

from microclaw.agent.loop import AgentRequest, AgentResult
from microclaw.core.formatting import format_messages, format_outbound, wrap_scheduled_prompt
from microclaw.core.groups import resolve_group_folder_path
from microclaw.core.senders import SenderAllowlist, is_trigger_allowed
from microclaw.core.triggers import group_trigger_pattern, is_trigger_message, needs_trigger
from microclaw.errors import LeaseLost
from microclaw.pipeline import leases
from microclaw.scheduler import completion
from microclaw.store import audit, groups, messages, outbox, runs, task_queue, tasks
from microclaw.store.db import now_ms, read_tx, write_tx
from microclaw.store.groups import Group, GroupStateRow
from microclaw.store.messages import StoredMessage
from microclaw.store.tasks import Task

logger = logging.getLogger(__name__)


# The agent gets the request and an ``on_step`` callback to call before each model step; the
# callback checks the lease and returns follow-up prompt blocks that join the run.
AgentFn = Callable[[AgentRequest, Callable[[], list[str]]], AgentResult]


@dataclass(frozen=True)
class RouterConfig:
    assistant_name: str
    default_trigger: str
    timezone: str
    groups_dir: Any  # Path
    max_messages_per_prompt: int = 10
    lease_ttl_ms: int = 60_000
    retry_delays_ms: tuple[int, ...] = (5_000, 10_000, 20_000, 40_000, 80_000)


@dataclass
class RouterDeps:
    engine: Engine
    config: RouterConfig
    agent: AgentFn
    publish_deliver: Callable[[str], object]
    worker: str
    allowlist: Callable[[], SenderAllowlist] | None = None
    # Shows "typing…" in the chat while a message run works (best effort, never blocks a run).
    publish_typing: Callable[[str], object] | None = None
    # Starts the group's container without waiting (folder, is_main) as a run begins, so it
    # boots while the first model call is in flight (best effort, never blocks a run).
    prepare_sandbox: Callable[[str, bool], object] | None = None


@dataclass(frozen=True)
class _MessageWork:
    run_id: int
    group: Group
    batch: list[StoredMessage]  # formatted into the prompt after the transaction commits


@dataclass(frozen=True)
class _TaskWork:
    run_id: int
    entry_id: int
    group: Group | None
    task: Task | None
    error: str | None  # set when the task cannot run (invalid folder, unknown group)


DrainOutcome = Literal["busy", "drained", "lost"]
Work = _TaskWork | _MessageWork


def _retry_due(state: GroupStateRow, now: int) -> bool:
    return state.retry_at_ms is not None and state.retry_at_ms <= now


def _any_triggers(deps: RouterDeps, group: Group, new: list[StoredMessage]) -> bool:
    """Whether one of ``new`` triggers the group: its trigger pattern, from a sender the
    allowlist lets trigger (``is_from_me`` always may)."""
    pattern = group_trigger_pattern(group.trigger, deps.config.default_trigger)
    allow = deps.allowlist() if deps.allowlist else None
    return any(
        is_trigger_message(
            m.content,
            pattern,
            is_from_me=m.is_from_me,
            trigger_allowed=True if allow is None else is_trigger_allowed(group.jid, m.sender or "", allow),
        )
        for m in new
    )


# At most this many message ids (with their reasons) go into one ``router.not_triggered`` row.
_NOT_TRIGGERED_IDS = 20


def _audit_not_triggered(
    conn: Connection, deps: RouterDeps, group: Group, new: list[StoredMessage], after: int, upto: int
) -> None:
    """One audit row per batch that did not trigger (not one per message): the seq range it
    covers and, for its first messages, why each one did not trigger (`microclaw-host why`)."""
    if not new:
        return
    pattern = group_trigger_pattern(group.trigger, deps.config.default_trigger)
    allow = deps.allowlist() if deps.allowlist else None
    reasons = {}
    for m in new[:_NOT_TRIGGERED_IDS]:
        if not pattern.search((m.content or "").strip()):
            reasons[m.id] = f"no trigger ({pattern.pattern!r} does not match the start of the text)"
        elif allow is not None and not is_trigger_allowed(group.jid, m.sender or "", allow):
            reasons[m.id] = "sender may not trigger (sender allowlist, trigger mode)"
        else:
            reasons[m.id] = "not a trigger"
    audit.record(
        conn,
        "router.not_triggered",
        chat_jid=group.jid,
        decision="skip",
        after_seq=after,
        to_seq=upto,
        count=len(new),
        reasons=reasons,
    )


def has_pending(conn: Connection, chat_jid: str, state: GroupStateRow, now: int) -> bool:
    """Whether the group has work: a claimed task, messages not yet looked at, or a due retry."""
    if task_queue.has_pending(conn, chat_jid):
        return True
    return _retry_due(state, now) or messages.max_seq(conn, chat_jid) > state.seen_seq


def process_group(deps: RouterDeps, chat_jid: str) -> DrainOutcome:
    """Drain the group's pending work if its lease is free. Safe to call any number of times."""
    name = leases.group_lease(chat_jid)
    with write_tx(deps.engine) as conn:
        token = leases.acquire(conn, name, deps.worker, ttl_ms=deps.config.lease_ttl_ms, now_ms=now_ms())
        if token is None:
            return "busy"
        groups.get_state(conn, chat_jid)
        groups.set_state(conn, chat_jid, kick_requested_ms=None)
        _recover_abandoned(conn, deps, chat_jid)
        work = _choose(conn, deps, chat_jid, token)
    logger.debug("lease taken", extra={"chat_jid": chat_jid, "token": token})
    try:
        while work is not None:
            if isinstance(work, _TaskWork):
                work = _run_task(deps, chat_jid, token, work)
            else:
                work = _run_messages(deps, chat_jid, token, work)
        return "drained"
    except LeaseLost:
        logger.warning("lease lost mid-drain; the new holder takes over", extra={"chat_jid": chat_jid})
        return "lost"
    except BaseException:
        # A bug or an interrupted worker: give the group back so the sweeper can re-kick it.
        try:
            with write_tx(deps.engine) as conn:
                leases.release(conn, name, token)
        except Exception:
            logger.exception("could not release lease; retrying", extra={"chat_jid": chat_jid})
            leases.release_later(deps.engine, name, token, give_up_after_s=deps.config.lease_ttl_ms / 1000)
        raise


def _choose(conn: Connection, deps: RouterDeps, chat_jid: str, token: int) -> Work | None:
    """The next piece of work, started; or None, with the lease released in this same
    transaction after proving nothing is pending (so no wake-up can be lost)."""
    for _ in range(4):  # choosing may first mark untriggered chatter as seen
        work = _next_task(conn, deps, chat_jid, token) or _next_messages(conn, deps, chat_jid, token)
        if work is not None:
            return work
        if not has_pending(conn, chat_jid, groups.get_state(conn, chat_jid), now_ms()):
            break
    else:
        logger.error("pending work that no step takes; releasing the group", extra={"chat_jid": chat_jid})
    groups.set_state(conn, chat_jid, kick_requested_ms=None)
    leases.release(conn, leases.group_lease(chat_jid), token)
    return None


# --- choosing work -------------------------------------------------------------------------


def _next_task(conn: Connection, deps: RouterDeps, chat_jid: str, token: int) -> _TaskWork | None:
    entry = task_queue.start_next(conn, chat_jid)
    if entry is None:
        return None
    task = tasks.get_task(conn, entry.task_id)
    run_id = runs.start(conn, chat_jid, "task", lease_token=token, worker=deps.worker, task_run_id=entry.id)
    if task is None:
        return _TaskWork(run_id, entry.id, None, None, "task no longer exists")
    try:
        resolve_group_folder_path(task.group_folder, deps.config.groups_dir)
    except ValueError as exc:
        tasks.update_task(conn, task.id, status="paused")
        return _TaskWork(run_id, entry.id, None, task, f"invalid group folder: {exc}")
    group = next((g for g in groups.all_groups(conn) if g.folder == task.group_folder), None)
    if group is None:
        return _TaskWork(run_id, entry.id, None, task, f"Group not found: {task.group_folder}")
    if group.jid != task.chat_jid or entry.chat_jid != task.chat_jid:
        # A task runs with its group's powers only in that group's own chat: a row pairing a
        # folder (main's, say) with another chat is refused and paused, never run.
        reason = (
            f"task chat {task.chat_jid!r} is not the chat registered to folder "
            f"{task.group_folder!r} ({group.jid!r}); the task is paused"
        )
        tasks.update_task(conn, task.id, status="paused")
        audit.record(
            conn, "router.task_refused", chat_jid=chat_jid, decision="deny", task_id=task.id, error=reason
        )
        return _TaskWork(run_id, entry.id, None, task, reason)
    return _TaskWork(run_id, entry.id, group, task, None)


def _next_messages(conn: Connection, deps: RouterDeps, chat_jid: str, token: int) -> _MessageWork | None:
    cfg = deps.config
    now = now_ms()
    state = groups.get_state(conn, chat_jid)
    newest = messages.max_seq(conn, chat_jid)
    if not (_retry_due(state, now) or newest > state.seen_seq):
        return None
    group = groups.get_group(conn, chat_jid)
    if group is None:
        groups.set_state(conn, chat_jid, seen_seq=newest)
        return None
    # A due retry re-runs a batch that was already triggered; otherwise, like NanoClaw, only the
    # messages new since the last look can trigger (a failed batch waits for its retry).
    if needs_trigger(group.is_main, group.requires_trigger) and not _retry_due(state, now):
        new = messages.messages_after(conn, chat_jid, state.seen_seq, cfg.assistant_name)
        if not _any_triggers(deps, group, new):
            groups.set_state(conn, chat_jid, seen_seq=newest)
            _audit_not_triggered(conn, deps, group, new, state.seen_seq, newest)
            return None
    cursor = state.cursor_seq or messages.last_bot_seq(conn, chat_jid, cfg.assistant_name)
    batch, total = messages.newest_after(
        conn, chat_jid, cursor, cfg.assistant_name, cfg.max_messages_per_prompt
    )
    if not batch:
        groups.set_state(conn, chat_jid, seen_seq=newest, retry_at_ms=None, retry_count=0)
        return None
    if total > len(batch):
        logger.warning(
            "prompt limit: dropping %d older pending messages",
            total - len(batch),
            extra={"chat_jid": chat_jid, "limit": cfg.max_messages_per_prompt},
        )
        audit.record(
            conn,
            "router.backlog_dropped",
            chat_jid=chat_jid,
            decision="drop",
            dropped=total - len(batch),
            limit=cfg.max_messages_per_prompt,
        )
    run_id = runs.start(
        conn,
        chat_jid,
        "messages",
        lease_token=token,
        worker=deps.worker,
        prev_cursor_seq=state.cursor_seq,
        prev_seen_seq=state.seen_seq,
        to_seq=batch[-1].seq,
        message_count=len(batch),
    )
    groups.set_state(conn, chat_jid, cursor_seq=batch[-1].seq, seen_seq=newest)
    return _MessageWork(run_id, group, batch)


# --- running -------------------------------------------------------------------------------


def _call_agent(
    deps: RouterDeps, chat_jid: str, token: int, request: AgentRequest
) -> tuple[str | None, str | None]:
    """Run the agent with the lease kept alive; returns (text, error).

    Between agent steps the callback stops the run if the group was taken over and, for message
    runs, claims messages that arrived meanwhile (`_join_follow_ups`) so they join the run.
    """
    name = leases.group_lease(chat_jid)
    ttl = deps.config.lease_ttl_ms
    join_run = None if request.is_scheduled_task else request.run_id  # never join a task run

    typing = deps.publish_typing
    pulse = (lambda: typing(chat_jid)) if typing is not None and not request.is_scheduled_task else None
    with leases.LeaseKeeper(deps.engine, name, token, ttl, pulse) as keeper:

        def check_lease() -> list[str]:  # between agent steps
            if keeper.lost:
                raise LeaseLost(name, token)
            if join_run is None:
                return []
            return _join_follow_ups(deps, chat_jid, token, join_run)

        try:
            result = deps.agent(request, check_lease)
            text, error = result.text, None
        except LeaseLost:
            raise
        except Exception as exc:
            logger.warning("agent run failed: %s", exc, extra={"chat_jid": chat_jid}, exc_info=True)
            text, error = None, str(exc) or type(exc).__name__
    if keeper.lost:
        raise LeaseLost(name, token)
    return text, error


def _join_follow_ups(deps: RouterDeps, chat_jid: str, token: int, run_id: int) -> list[str]:
    """Claim messages newer than the run's ``to_seq`` for the running agent (NanoClaw's piping).

    In one write transaction fenced by the lease: for a group that needs a trigger nothing is
    claimed until one of the new messages triggers, and then every pending message joins as
    context; the run's ``to_seq`` and the group's cursors advance, so a failed run rolls them
    back together. Returns the claimed batch formatted as one prompt block (or nothing).
    """
    cfg = deps.config
    with read_tx(deps.engine) as conn:  # the common case (nothing new) costs no write
        to_seq = runs.to_seq(conn, run_id)
        if to_seq is None or messages.max_seq(conn, chat_jid) <= to_seq:
            return []
    with write_tx(deps.engine) as conn:
        leases.fence(conn, leases.group_lease(chat_jid), token, ttl_ms=cfg.lease_ttl_ms, now_ms=now_ms())
        to_seq = runs.to_seq(conn, run_id)
        assert to_seq is not None  # the run was there a moment ago, and runs are never deleted
        group = groups.get_group(conn, chat_jid)
        if group is None:
            return []
        new = messages.messages_after(conn, chat_jid, to_seq, cfg.assistant_name)
        if not new:
            return []
        if needs_trigger(group.is_main, group.requires_trigger) and not _any_triggers(deps, group, new):
            return []  # stays pending as context for the next triggered batch
        batch, _total = messages.newest_after(
            conn, chat_jid, to_seq, cfg.assistant_name, cfg.max_messages_per_prompt
        )
        if not batch:
            return []
        last = batch[-1].seq
        runs.extend(conn, run_id, to_seq=last, added=len(batch))
        state = groups.get_state(conn, chat_jid)
        groups.set_state(conn, chat_jid, cursor_seq=last, seen_seq=max(state.seen_seq, last))
        audit.record(
            conn,
            "router.follow_up_joined",
            chat_jid=chat_jid,
            decision="join",
            run_id=run_id,
            count=len(batch),
        )
    logger.info("%d follow-up messages joined the running agent", len(batch), extra={"chat_jid": chat_jid})
    return [format_messages(batch, cfg.timezone)]


def _run_messages(deps: RouterDeps, chat_jid: str, token: int, work: _MessageWork) -> Work | None:
    if deps.publish_typing is not None:
        try:
            deps.publish_typing(chat_jid)
        except Exception:
            logger.debug("typing indicator not published", extra={"chat_jid": chat_jid}, exc_info=True)
    prompt = format_messages(work.batch, deps.config.timezone)
    request = AgentRequest(chat_jid, work.group.folder, work.group.is_main, prompt, run_id=work.run_id)
    _prepare_sandbox(deps, work.group)
    reply, error = _call_agent(deps, chat_jid, token, request)
    queued = False
    with write_tx(deps.engine) as conn:
        leases.fence(
            conn, leases.group_lease(chat_jid), token, ttl_ms=deps.config.lease_ttl_ms, now_ms=now_ms()
        )
        if error is None:
            queued = _add_reply(conn, chat_jid, work.run_id, reply)
            runs.finish(conn, work.run_id, "done")
            groups.set_state(conn, chat_jid, retry_count=0, retry_at_ms=None)
        else:
            _fail_message_run(conn, deps, chat_jid, work.run_id, error)
        following = _choose(conn, deps, chat_jid, token)
    if queued:
        _publish(deps, chat_jid)
    return following


def _prepare_sandbox(deps: RouterDeps, group: Group) -> None:
    if deps.prepare_sandbox is None:
        return
    try:
        deps.prepare_sandbox(group.folder, group.is_main)
    except Exception:
        logger.debug("early sandbox start not published", extra={"group": group.folder}, exc_info=True)


def _run_task(deps: RouterDeps, chat_jid: str, token: int, work: _TaskWork) -> Work | None:
    started = time.monotonic()
    reply: str | None = None
    error = work.error
    if error is None and work.group is not None and work.task is not None:
        request = AgentRequest(
            chat_jid,
            work.group.folder,
            work.group.is_main,
            wrap_scheduled_prompt(work.task.prompt),
            is_scheduled_task=True,
            run_id=work.run_id,
            # The agent callable runs a pre-check script in the sandbox first (§4.6); one that
            # keeps the agent asleep returns no text: nothing is sent, the run logs "Completed".
            script=work.task.script or None,
            task_prompt=work.task.prompt,
        )
        _prepare_sandbox(deps, work.group)
        reply, error = _call_agent(deps, chat_jid, token, request)
    queued = False
    with write_tx(deps.engine) as conn:
        leases.fence(
            conn, leases.group_lease(chat_jid), token, ttl_ms=deps.config.lease_ttl_ms, now_ms=now_ms()
        )
        if reply is not None:
            queued = _add_reply(conn, chat_jid, work.run_id, reply)
        completion.finish_task_run(
            conn,
            run_id=work.run_id,
            entry_id=work.entry_id,
            task_id=work.task.id if work.task is not None else None,
            text=reply,
            error=error,
            duration_ms=int((time.monotonic() - started) * 1000),
            timezone=deps.config.timezone,
        )
        following = _choose(conn, deps, chat_jid, token)
    if queued:
        _publish(deps, chat_jid)
    return following


def _add_reply(conn: Connection, chat_jid: str, run_id: int, text: str | None) -> bool:
    cleaned = format_outbound(text or "")
    if not cleaned:
        return False
    return outbox.add(conn, key=f"run:{run_id}:reply", chat_jid=chat_jid, text=cleaned, run_id=run_id)


def _fail_message_run(
    conn: Connection, deps: RouterDeps, chat_jid: str, run_id: int, error: str, *, abandoned: bool = False
) -> None:
    """NanoClaw's rule: roll the cursor back only if nothing reached the user, then back off.

    A run ``abandoned`` by a dead worker (not a failure of the run itself) is retried at once the
    first time, so a restarted worker answers within seconds; when it is abandoned again (a
    message that kills its worker) the usual backoff applies, and the retries still run out."""
    run = runs.get(conn, run_id)
    assert run is not None  # started in an earlier transaction of this lease; runs are never deleted
    runs.finish(conn, run_id, "failed", error)
    if outbox.count_for_run(conn, run_id):
        groups.set_state(conn, chat_jid, retry_count=0, retry_at_ms=None)
        return
    # Only the cursor rolls back; seen_seq stays, so the batch is retried by the timer (or by a
    # new triggering message), not re-triggered by chatter that arrives meanwhile.
    state = groups.get_state(conn, chat_jid)
    delays = deps.config.retry_delays_ms
    attempt = state.retry_count + 1
    if attempt > len(delays):
        logger.error(
            "max retries exceeded, dropping messages until the next one arrives",
            extra={"chat_jid": chat_jid, "error": error},
        )
        audit.record(conn, "router.retries_exhausted", chat_jid=chat_jid, decision="drop", error=error)
        groups.set_state(conn, chat_jid, retry_count=0, retry_at_ms=None, cursor_seq=run.prev_cursor_seq)
        return
    delay = 0 if abandoned and attempt == 1 else delays[attempt - 1]
    logger.warning("run failed; retry %d in %.0f s", attempt, delay / 1000, extra={"chat_jid": chat_jid})
    groups.set_state(
        conn, chat_jid, retry_count=attempt, retry_at_ms=now_ms() + delay, cursor_seq=run.prev_cursor_seq
    )


def _recover_abandoned(conn: Connection, deps: RouterDeps, chat_jid: str) -> None:
    """Settle runs a crashed holder left 'running' (we just took the lease, so none is live)."""
    for run in runs.running(conn, chat_jid):
        logger.warning("recovering run %s abandoned by %s", run.id, run.worker, extra={"chat_jid": chat_jid})
        if run.kind == "task":
            completion.settle_interrupted(
                conn, run_id=run.id, entry_id=run.task_run_id, timezone=deps.config.timezone
            )
        else:
            _fail_message_run(conn, deps, chat_jid, run.id, "worker stopped during the run", abandoned=True)
            runs.finish(conn, run.id, "abandoned", "worker stopped")


def _publish(deps: RouterDeps, chat_jid: str) -> None:
    try:
        deps.publish_deliver(chat_jid)
    except Exception:
        logger.warning(
            "deliver publish failed; the sweeper re-queues it", extra={"chat_jid": chat_jid}, exc_info=True
        )
