"""Memory for the agent: memory files, per-group sessions, compaction, and spend records.

- Memory files (contract §9.7): ``groups/<folder>/CLAUDE.md`` is the group's memory; for
  non-main groups ``groups/global/CLAUDE.md`` is appended read-only. Both go into the system
  prompt (capped); the agent edits its own through the sandbox file tools.
- Sessions: the group's conversation (`microclaw.store.sessions`) is loaded before a run and
  the run's turns appended after it. Scheduled tasks use the group's session when their
  ``context_mode`` is ``group`` and a fresh, unsaved one when ``isolated``. A missing session
  starts fresh; a corrupt one is replaced by a fresh one (logged and audited).
- Compaction: when a session grows past ``history_token_budget`` (estimated tokens), the turns
  before the newest ``keep_recent_turns`` are summarized by the model, the whole transcript is
  archived as Markdown under ``groups/<folder>/conversations/``, and the group moves to a new
  session holding the summary and the recent turns. A failed summary keeps the session as is.
- Spend: `record_usage` and `tokens_today` over `microclaw.store.usage`.

Does not call tools or decide when the loop stops (`microclaw.agent.loop` does).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine

from microclaw.agent.providers.base import BaseProvider, ChatTurn, Usage
from microclaw.core.groups import resolve_group_folder_path
from microclaw.store import audit, runs, sessions, usage
from microclaw.store.db import read_tx, write_tx

logger = logging.getLogger(__name__)

MEMORY_FILE = "CLAUDE.md"
MAX_MEMORY_CHARS = 32_000
SUMMARY_PREFIX = "[Summary of our earlier conversation]\n"
SUMMARY_ACK = "Understood. I have the summary of our earlier conversation."
_SUMMARIZE = (
    "You compress chat transcripts. Summarize the conversation below so an assistant can continue "
    "it: keep names, decisions, facts, open requests, promised follow-ups, files and tasks created. "
    "Be concise; write plain text."
)


def read_memory_file(path: Path) -> str | None:
    """The file's text (capped), or None when it is missing or unreadable."""
    try:
        data = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    data = data.strip()
    if not data:
        return None
    if len(data) > MAX_MEMORY_CHARS:
        data = data[:MAX_MEMORY_CHARS] + "\n[... memory file truncated]"
    return data


def memory_sections(groups_dir: Path, folder: str, is_main: bool) -> list[tuple[str, str]]:
    """(title, text) for the memory files that go into this group's system prompt."""
    out: list[tuple[str, str]] = []
    if not is_main:
        shared = read_memory_file(groups_dir / "global" / MEMORY_FILE)
        if shared:
            out.append(("Shared memory (read-only)", shared))
    try:
        own = read_memory_file(resolve_group_folder_path(folder, groups_dir) / MEMORY_FILE)
    except ValueError:
        own = None
    if own:
        out.append(("This group's memory (your CLAUDE.md; edit it to remember things)", own))
    return out


def transcript(turns: list[ChatTurn]) -> str:
    """Turns as readable Markdown (archives and summary input)."""
    lines: list[str] = []
    for turn in turns:
        if turn.role == "tool":
            flag = " (error)" if turn.is_error else ""
            lines.append(f"**tool result{flag}** `{turn.tool_call_id}`:\n```\n{turn.content}\n```")
            continue
        lines.append(f"**{turn.role}**: {turn.content}")
        lines.extend(f"  - tool call `{c.id}` {c.name}({c.arguments})" for c in turn.tool_calls)
    return "\n\n".join(lines)


def split_for_compaction(turns: list[ChatTurn], keep_recent: int) -> int:
    """Index where the kept (recent) part starts: about ``keep_recent`` turns, starting at a
    user turn so no tool call is separated from its result. 0 means nothing to compact."""
    start = max(0, len(turns) - keep_recent)
    if start == 0:
        return 0
    for cut in range(start, 0, -1):  # keep a little more rather than split a tool exchange ...
        if turns[cut].role == "user":
            return cut
    for cut in range(start + 1, len(turns)):  # ... unless no user turn is that far back
        if turns[cut].role == "user":
            return cut
    return 0


@dataclass
class Session:
    """The history a run starts from, and where its new turns go (None: not saved)."""

    session_id: str | None
    history: list[ChatTurn]


class AgentMemory:
    """Sessions, compaction, memory files and spend for the agent, over the app database."""

    def __init__(
        self,
        engine: Engine,
        groups_dir: Path,
        *,
        history_token_budget: int = 60_000,
        keep_recent_turns: int = 8,
    ) -> None:
        self.engine = engine
        self.groups_dir = Path(groups_dir)
        self.history_token_budget = history_token_budget
        self.keep_recent_turns = keep_recent_turns

    # -- sessions ---------------------------------------------------------------------------

    def open(self, chat_jid: str, folder: str, *, is_scheduled_task: bool, run_id: int | None) -> Session:
        """The session a run continues: the group's, or a fresh unsaved one for isolated tasks."""
        with read_tx(self.engine) as conn:
            if is_scheduled_task:
                mode = runs.task_context_mode(conn, run_id) if run_id else None
                if mode != "group":
                    return Session(None, [])
            session_id = sessions.get_session_id(conn, folder)
            broken = None
            if session_id is not None:
                try:
                    return Session(session_id, sessions.load_turns(conn, session_id))
                except sessions.CorruptSession as exc:
                    logger.warning("corrupt session, starting fresh: %s", exc, extra={"chat_jid": chat_jid})
                    broken = exc.session_id
        with write_tx(self.engine) as conn:
            if broken is not None:
                audit.record(conn, "agent.session_reset", chat_jid=chat_jid, decision="fresh", session=broken)
            return Session(sessions.new_session(conn, folder), [])

    def finish(
        self,
        session: Session,
        turns: list[ChatTurn],
        *,
        run_id: int | None,
        chat_jid: str,
        folder: str,
        model: str | None,
        steps: int,
        spent: Usage,
        cost: float,
    ) -> None:
        """Append the run's turns to its session and record its spend, in one transaction."""
        with write_tx(self.engine) as conn:
            if session.session_id is not None and turns:
                sessions.append_turns(conn, session.session_id, turns)
            usage.record(
                conn,
                run_id=run_id,
                chat_jid=chat_jid,
                group_folder=folder,
                model=model,
                steps=steps,
                input_tokens=spent.input_tokens,
                output_tokens=spent.output_tokens,
                cost=cost,
            )

    def compact_if_needed(
        self, provider: BaseProvider, chat_jid: str, folder: str, session: Session
    ) -> Usage:
        """Summarize old turns when the session is over budget; returns the tokens it cost."""
        if session.session_id is None:
            return Usage()
        with read_tx(self.engine) as conn:
            if sessions.session_tokens(conn, session.session_id) <= self.history_token_budget:
                return Usage()
            turns = sessions.load_turns(conn, session.session_id)
        cut = split_for_compaction(turns, self.keep_recent_turns)
        if cut == 0:
            return Usage()
        try:
            completion = provider.complete(_SUMMARIZE, [ChatTurn("user", transcript(turns[:cut]))], [])
        except Exception as exc:
            logger.warning("compaction skipped: summary failed: %s", exc, extra={"chat_jid": chat_jid})
            return Usage()
        summary = (completion.text or "").strip()
        if not summary:
            return completion.usage
        archive = self._archive(folder, session.session_id, turns)
        seeded = [
            ChatTurn("user", SUMMARY_PREFIX + summary),
            ChatTurn("assistant", SUMMARY_ACK),
            *turns[cut:],
        ]
        with write_tx(self.engine) as conn:
            new_id = sessions.new_session(conn, folder, seeded)
            audit.record(
                conn,
                "agent.compacted",
                chat_jid=chat_jid,
                old_session=session.session_id,
                new_session=new_id,
                summarized_turns=cut,
                archive=str(archive) if archive else None,
            )
        logger.info("compacted %d turns into a summary", cut, extra={"chat_jid": chat_jid})
        return completion.usage

    def _archive(self, folder: str, session_id: str, turns: list[ChatTurn]) -> Path | None:
        try:
            directory = resolve_group_folder_path(folder, self.groups_dir) / "conversations"
            directory.mkdir(parents=True, exist_ok=True)
            stamp = datetime.now(tz=UTC).strftime("%Y%m%d-%H%M%S")
            path = directory / f"{stamp}-{session_id[:8]}.md"
            path.write_text(f"# Conversation {session_id}\n\n{transcript(turns)}\n", encoding="utf-8")
            return path
        except (OSError, ValueError):
            logger.warning("could not archive the transcript before compaction", exc_info=True)
            return None

    # -- spend ------------------------------------------------------------------------------

    def tokens_today(self, folder: str) -> int:
        with read_tx(self.engine) as conn:
            return usage.tokens_today(conn, folder)
