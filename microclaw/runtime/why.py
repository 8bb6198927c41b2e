"""``microclaw-host why``: one message's whole story, told from the database.

`explain()` reads (never writes) what the pipeline recorded about a message: when and through
which connector it was stored, the sender-allowlist and trigger decisions (``message.dropped``
and ``router.not_triggered`` audit rows), each run whose batch included it (start, end, status,
error, model calls, tokens, cost, tool calls), each reply row (delivered, uncertain, failed and
why) and, when the story stops short, where it stopped and what would make it go on. The
queries are `microclaw.store.history`'s; this module only orders and words them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine

from microclaw.core.triggers import needs_trigger
from microclaw.store import groups, history
from microclaw.store.db import read_tx

_TOOL_KINDS = ("sandbox.", "agent.", "tool.", "egress.")


@dataclass(frozen=True)
class Step:
    ts_ms: int | None
    what: str

    def as_dict(self) -> dict[str, Any]:
        return {"ts_ms": self.ts_ms, "at": stamp(self.ts_ms), "what": self.what}


@dataclass
class Story:
    """What happened to a message: the steps in order, one verdict and what would move it on."""

    message_id: str
    chat_jid: str | None = None
    outcome: str = "unknown"  # answered | reply_failed | reply_uncertain | reply_pending | running
    #                           | retrying | run_failed | no_reply | not_triggered | dropped
    #                           | rejected | waiting | not_found
    verdict: str = ""
    next_step: str | None = None
    steps: list[Step] = field(default_factory=list)
    run_ids: list[int] = field(default_factory=list)
    outbox_ids: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "chat_jid": self.chat_jid,
            "outcome": self.outcome,
            "verdict": self.verdict,
            "next_step": self.next_step,
            "run_ids": self.run_ids,
            "outbox_ids": self.outbox_ids,
            "steps": [s.as_dict() for s in self.steps],
        }


def stamp(ts_ms: int | float | None) -> str:
    if ts_ms is None:
        return "-"
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def find(engine: Engine, chat_jid: str, substring: str) -> list[str]:
    """Ids of the chat's newest messages containing ``substring``, newest first."""
    with read_tx(engine) as conn:
        return history.find_message_ids(conn, chat_jid, substring)


def explain(engine: Engine, message_id: str, *, default_trigger: str = "@Andy") -> Story:
    story = Story(message_id)
    with read_tx(engine) as conn:
        msg = history.message(conn, message_id)
        ingest_rows = history.audit_for_message(conn, message_id)
        if msg is None:
            return _not_stored(story, ingest_rows)
        chat = story.chat_jid = msg["chat_jid"]
        seq = int(msg["seq"])
        info = history.chat(conn, chat) or {}
        sender = msg["sender_name"] or msg["sender"] or "?"
        story.steps.append(
            Step(
                msg["received_at_ms"],
                f"stored: seq {seq} from {sender} ({msg['sender']}) via {info.get('channel') or '?'}"
                f" in {chat}",
            )
        )
        for row in ingest_rows:
            story.steps.append(Step(row.ts_ms, f"{row.kind} ({row.decision}): {_brief(row.detail)}"))
        group = groups.get_group(conn, chat)
        state = groups.get_state(conn, chat)
        skipped = history.not_triggered(conn, chat, seq)
        for row in skipped:
            reason = row.detail.get("reasons", {}).get(message_id) or "no message in its batch triggered"
            story.steps.append(Step(row.ts_ms, f"not triggered: {reason}"))
        runs = history.runs_covering(conn, chat, seq)
        replies: list[dict[str, Any]] = []
        for run in runs:
            replies += _tell_run(conn, story, run, chat, group.folder if group else "")
    story.steps.sort(key=lambda s: s.ts_ms or 0)
    return _verdict(story, msg, group, state, skipped, runs, replies, default_trigger)


def _not_stored(story: Story, rows: list[history.AuditRow]) -> Story:
    for row in rows:
        story.steps.append(Step(row.ts_ms, f"{row.kind} ({row.decision}): {_brief(row.detail)}"))
    dropped = next((r for r in rows if r.kind == "message.dropped"), None)
    rejected = next((r for r in rows if r.kind == "envelope.rejected"), None)
    if dropped is not None:
        story.outcome = "dropped"
        story.verdict = f"dropped at ingestion, never stored: {dropped.detail.get('reason', 'dropped')}"
        story.next_step = (
            "add the sender to the chat's allow list in the sender allowlist file "
            '(sender_allowlist_path), or set its mode to "trigger" to keep such messages as context'
        )
    elif rejected is not None:
        story.outcome = "rejected"
        story.verdict = f"refused at the edge, never stored: {rejected.detail.get('reason', '')}"
        story.next_step = "the connector sent an invalid envelope; see the reason above"
    else:
        story.outcome = "not_found"
        story.verdict = "no message with this id was stored and no decision about it was recorded"
        story.next_step = (
            "messages are stored only for registered groups: check the chat with `microclaw-host "
            "register-group`, and the id (ids look like tg:<chat>:<msg>; find one with --chat/--text)"
        )
    return story


def _tell_run(conn: Any, story: Story, run: dict[str, Any], chat: str, folder: str) -> list[dict[str, Any]]:
    run_id = int(run["id"])
    story.run_ids.append(run_id)
    started = int(run["started_at_ms"])
    finished = int(run["finished_at"] * 1000) if run["finished_at"] is not None else None
    story.steps.append(
        Step(
            started, f"run {run_id} started on {run['worker'] or '?'} with {run['message_count']} message(s)"
        )
    )
    end = finished if finished is not None else started + 24 * 3600 * 1000
    for row in history.audit_during(
        conn, chat_jid=chat, folder=folder, run_id=run_id, start_ms=started, end_ms=end
    ):
        if row.kind.startswith(_TOOL_KINDS):
            story.steps.append(Step(row.ts_ms, f"  {row.kind} ({row.decision or '-'}): {_brief(row.detail)}"))
    use = history.run_usage(conn, run_id)
    spend = (
        f"{use['steps']} model call(s), {use['input_tokens']} tokens in, {use['output_tokens']} out,"
        f" cost {use['cost']:.4f}" + (f" ({use['model']})" if use["model"] else "")
    )
    ended = f"run {run_id} {run['status']}"
    if run["error"]:
        ended += f": {run['error']}"
    story.steps.append(Step(finished or started, f"{ended}; {spend}"))
    replies = history.run_replies(conn, run_id)
    for reply in replies:
        story.outbox_ids.append(int(reply["id"]))
        story.steps.append(Step(reply["created_at_ms"], f"reply #{reply['id']} queued"))
        story.steps.append(Step(reply["delivered_at_ms"] or reply["created_at_ms"], _reply_line(reply)))
        for row in history.audit_for_outbox(conn, chat, int(reply["id"])):
            story.steps.append(Step(row.ts_ms, f"{row.kind} ({row.decision}): {_brief(row.detail)}"))
    return replies


def _reply_line(reply: dict[str, Any]) -> str:
    status, n = reply["status"], reply["attempts"]
    if status == "delivered":
        platform_id = reply["platform_message_id"]
        return f"reply #{reply['id']} delivered after {n} attempt(s) (platform id {platform_id})"
    error = f": {reply['last_error']}" if reply["last_error"] else ""
    if status == "pending" and reply["next_attempt_at_ms"]:
        return f"reply #{reply['id']} pending, attempt {n + 1} at {stamp(reply['next_attempt_at_ms'])}{error}"
    return f"reply #{reply['id']} {status} after {n} attempt(s){error}"


def _verdict(
    story: Story,
    msg: dict[str, Any],
    group: groups.Group | None,
    state: groups.GroupStateRow,
    skipped: list[history.AuditRow],
    runs: list[dict[str, Any]],
    replies: list[dict[str, Any]],
    default_trigger: str,
) -> Story:
    by_status: dict[str, list[dict[str, Any]]] = {}
    for reply in replies:
        by_status.setdefault(reply["status"], []).append(reply)
    last_run = runs[-1] if runs else None
    seq = int(msg["seq"])
    trigger = (
        (group.trigger if group and group.trigger.strip() else default_trigger) if group else default_trigger
    )
    if "delivered" in by_status:
        r = by_status["delivered"][-1]
        story.outcome, story.verdict = "answered", f"answered: reply #{r['id']} was delivered"
    elif "failed" in by_status:
        r = by_status["failed"][-1]
        story.outcome = "reply_failed"
        story.verdict = f"the reply #{r['id']} failed: {r['last_error'] or 'unknown error'}"
        story.next_step = (
            f"fix the cause, then `microclaw-host replies retry {r['id']}` (or `replies discard {r['id']}`)"
        )
    elif "uncertain" in by_status:
        r = by_status["uncertain"][-1]
        story.outcome = "reply_uncertain"
        story.verdict = (
            f"the reply #{r['id']} may or may not have arrived (a send was interrupted and the "
            "platform cannot deduplicate)"
        )
        story.next_step = (
            f"look in the chat; `microclaw-host replies retry {r['id']}` sends it again, "
            f"`replies discard {r['id']}` closes it"
        )
    elif by_status:
        r = next(iter(by_status.values()))[-1]
        story.outcome = "reply_pending"
        story.verdict = f"the reply #{r['id']} is {r['status']}, not delivered yet"
        story.next_step = "the outbound worker delivers it; check it is alive with `microclaw-host status`"
    elif last_run is not None and last_run["status"] == "running":
        story.outcome, story.verdict = "running", f"run {last_run['id']} is working on it now"
        story.next_step = "wait; if its worker died the next kick or the sweeper settles the run"
    elif last_run is not None and last_run["status"] in ("failed", "abandoned"):
        if state.retry_at_ms is not None and state.cursor_seq < seq:
            story.outcome = "retrying"
            story.verdict = (
                f"run {last_run['id']} {last_run['status']} ({last_run['error']}); retry "
                f"{state.retry_count} is due at {stamp(state.retry_at_ms)}"
            )
            story.next_step = "the router retries by itself; a new triggering message retries at once"
        else:
            story.outcome = "run_failed"
            story.verdict = (
                f"run {last_run['id']} {last_run['status']}: {last_run['error'] or 'no error recorded'}"
            )
            story.next_step = (
                "retries are exhausted; fix the cause (see `microclaw-host doctor`), then send a new "
                "triggering message"
            )
    elif last_run is not None:
        story.outcome = "no_reply"
        story.verdict = f"run {last_run['id']} finished without a reply (the agent's answer was empty)"
    elif skipped:
        reason = (
            skipped[-1].detail.get("reasons", {}).get(story.message_id, "no message in its batch triggered")
        )
        story.outcome, story.verdict = "not_triggered", f"not triggered: {reason}"
        if "allowlist" in reason:
            story.next_step = (
                f"add {msg['sender']!r} to the chat's allow list in the sender allowlist file "
                "(sender_allowlist_path)"
            )
        else:
            story.next_step = (
                f"start a message with {trigger!r}; this one stays as context for the next triggered batch"
            )
    elif group is not None and seq <= state.seen_seq and needs_trigger(group.is_main, group.requires_trigger):
        story.outcome = "not_triggered"
        story.verdict = "the router looked at it and it did not trigger (no reason was recorded then)"
        story.next_step = f"start a message with {trigger!r}"
    else:
        story.outcome = "waiting"
        kick = (
            f"; a kick was requested at {stamp(state.kick_requested_ms)}" if state.kick_requested_ms else ""
        )
        story.verdict = (
            f"stored, but the router has not taken it yet (group seen up to seq {state.seen_seq}){kick}"
        )
        story.next_step = (
            "the router worker picks it up; check it runs with `microclaw-host status` "
            "(`worker` in the Procfile)"
        )
    return story


def _brief(detail: dict[str, Any]) -> str:
    shown = {k: v for k, v in detail.items() if k not in {"reasons"}}
    return ", ".join(f"{k}={v}" for k, v in sorted(shown.items()))[:300]
