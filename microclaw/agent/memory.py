"""Memory for the agent: memory files, per-group sessions, compaction, and spend records.

- Memory files (contract §9.7): ``groups/<folder>/CLAUDE.md`` is the group's memory; for
  non-main groups ``groups/global/CLAUDE.md`` is appended read-only. Both go into the system
  prompt (capped); the agent edits its own through the sandbox file tools. Group folders are
  written by containers, so they are read through `microclaw.safefs`: a memory file that is a
  link (``CLAUDE.md -> /proc/self/environ``), sits under a linked directory or is not a regular
  file is skipped, never followed, with a warning and an ``fs.refused`` audit row.
- Sessions: the group's conversation (`microclaw.store.sessions`) is loaded before a run and
  the run's turns appended after it. Scheduled tasks use the group's session when their
  ``context_mode`` is ``group`` and a fresh, unsaved one when ``isolated``. A missing session
  starts fresh; a corrupt one is replaced by a fresh one (logged and audited).
- Compaction: when a session grows past ``history_token_budget`` (estimated tokens), the turns
  before the newest ``keep_recent_turns`` are summarized by the model, the whole transcript is
  archived as Markdown under ``<archive_dir>/<folder>/`` (``<data_dir>/conversations/``, which
  no container mounts; never inside the group folder), and the group moves to a new session
  holding the summary and the recent turns. A failed summary keeps the session as is.
- Spend: `record_usage` and `tokens_today` over `microclaw.store.usage`.

Does not call tools or decide when the loop stops (`microclaw.agent.loop` does).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine

from microclaw import safefs
from microclaw.agent.providers.base import BaseProvider, ChatTurn, Usage
from microclaw.core.groups import is_valid_group_folder
from microclaw.errors import UnsafePath
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


# Bytes read from a memory file at most: enough for MAX_MEMORY_CHARS of any UTF-8 text.
MAX_MEMORY_BYTES = MAX_MEMORY_CHARS * 4 + 1
OnRefused = Callable[[UnsafePath], None]


def memory_text(data: bytes | None) -> str | None:
    """A memory file's bytes as prompt text (capped), or None when missing or empty."""
    text = (data or b"").decode("utf-8", errors="replace").strip()
    if not text:
        return None
    if len(text) > MAX_MEMORY_CHARS:
        text = text[:MAX_MEMORY_CHARS] + "\n[... memory file truncated]"
    return text


def read_memory_file(
    groups_dir: Path, parts: tuple[str, ...], on_refused: OnRefused | None = None
) -> str | None:
    """``groups_dir/parts...`` as prompt text, read without following links (`safefs`).

    None when missing, unreadable or refused; a refusal goes to ``on_refused`` first.
    """
    try:
        return memory_text(safefs.read_file(groups_dir, parts, max_bytes=MAX_MEMORY_BYTES))
    except UnsafePath as exc:
        if on_refused is not None:
            on_refused(exc)
        return None
    except OSError:
        return None


def memory_sections(
    groups_dir: Path, folder: str, is_main: bool, *, on_refused: OnRefused | None = None
) -> list[tuple[str, str]]:
    """(title, text) for the memory files that go into this group's system prompt."""
    out: list[tuple[str, str]] = []
    if not is_main:
        shared = read_memory_file(groups_dir, ("global", MEMORY_FILE), on_refused)
        if shared:
            out.append(("Shared memory (read-only)", shared))
    own = (
        read_memory_file(groups_dir, (folder, MEMORY_FILE), on_refused)
        if is_valid_group_folder(folder)
        else None
    )
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
        archive_dir: Path,
        history_token_budget: int = 60_000,
        keep_recent_turns: int = 8,
    ) -> None:
        self.engine = engine
        self.groups_dir = Path(groups_dir)
        self.archive_dir = Path(archive_dir)
        self.history_token_budget = history_token_budget
        self.keep_recent_turns = keep_recent_turns

    # -- memory files -----------------------------------------------------------------------

    def sections(self, chat_jid: str, folder: str, is_main: bool) -> list[tuple[str, str]]:
        """`memory_sections` for a run, each refused file logged and audited."""
        return memory_sections(
            self.groups_dir,
            folder,
            is_main,
            on_refused=lambda exc: self.refused(exc, chat_jid, folder, "memory"),
        )

    def refused(self, exc: UnsafePath, chat_jid: str | None, folder: str, use: str) -> None:
        """Log and audit a path refused by `safefs`; the run goes on without it."""
        logger.warning(
            "refused %s file %s: %s",
            use,
            exc.path,
            exc.problem,
            extra={"group": folder, "chat_jid": chat_jid},
        )
        try:
            audit.record_now(
                self.engine,
                "fs.refused",
                chat_jid=chat_jid,
                decision="deny",
                group=folder,
                use=use,
                path=exc.path,
                problem=exc.problem,
            )
        except Exception:
            logger.warning("could not audit a refused path", exc_info=True, extra={"group": folder})

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
        archive = self._archive(chat_jid, folder, session.session_id, turns)
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

    def _archive(self, chat_jid: str, folder: str, session_id: str, turns: list[ChatTurn]) -> Path | None:
        """Write the transcript to ``<archive_dir>/<folder>/``, a new file, never through a link."""
        stamp = datetime.now(tz=UTC).strftime("%Y%m%d-%H%M%S")
        name = f"{stamp}-{session_id[:8]}.md"
        data = f"# Conversation {session_id}\n\n{transcript(turns)}\n".encode()
        try:
            if not is_valid_group_folder(folder):
                raise ValueError(f"invalid group folder {folder!r}")
            if not safefs.write_new_file(self.archive_dir, (folder, name), data):
                raise FileExistsError(name)
        except UnsafePath as exc:
            self.refused(exc, chat_jid, folder, "archive")
            return None
        except (OSError, ValueError):
            logger.warning(
                "could not archive the transcript before compaction", exc_info=True, extra={"group": folder}
            )
            return None
        return self.archive_dir / folder / name

    # -- spend ------------------------------------------------------------------------------

    def tokens_today(self, folder: str) -> int:
        with read_tx(self.engine) as conn:
            return usage.tokens_today(conn, folder)
