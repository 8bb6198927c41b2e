"""Memory files and transcript archives against hostile group folders, on real files and SQLite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from microclaw.agent.memory import MAX_MEMORY_CHARS, AgentMemory, memory_sections
from microclaw.agent.providers.base import ChatTurn
from microclaw.agent.providers.scripted import ScriptedProvider
from microclaw.store import audit, sessions
from microclaw.store.db import read_tx, write_tx

SECRET = "MICROCLAW_FAKE_SECRET=hunter2-do-not-leak"


@pytest.fixture
def groups(tmp_path: Path) -> Path:
    (tmp_path / "groups" / "g").mkdir(parents=True)
    (tmp_path / "groups" / "global").mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret").write_text(SECRET)
    (tmp_path / "outside" / "CLAUDE.md").write_text(SECRET)
    return tmp_path / "groups"


def refusals(engine) -> list[dict]:
    with read_tx(engine) as conn:
        return audit.recent(conn, kind="fs.refused")


def test_a_linked_memory_file_is_skipped_and_audited(engine, groups: Path) -> None:
    outside = groups.parent / "outside"
    (groups / "g" / "CLAUDE.md").symlink_to(outside / "secret")
    (groups / "global" / "CLAUDE.md").symlink_to("/proc/self/environ")
    memory = AgentMemory(engine, groups, archive_dir=groups.parent / "conversations")
    assert memory.sections("fake:g", "g", False) == []
    rows = refusals(engine)
    assert {(r["detail"]["path"], r["detail"]["group"], r["decision"]) for r in rows} == {
        ("g/CLAUDE.md", "g", "deny"),
        ("global/CLAUDE.md", "g", "deny"),
    }
    assert all(r["chat_jid"] == "fake:g" and r["detail"]["use"] == "memory" for r in rows)


def test_a_linked_group_folder_is_not_followed(engine, groups: Path) -> None:
    (groups / "linked").symlink_to(groups.parent / "outside")
    (groups / "global").rmdir()
    (groups / "global").symlink_to(groups.parent / "outside")
    assert memory_sections(groups, "linked", False) == []
    memory = AgentMemory(engine, groups, archive_dir=groups.parent / "conversations")
    assert memory.sections("fake:l", "linked", False) == []
    assert {r["detail"]["path"] for r in refusals(engine)} == {"linked", "global"}


def test_a_real_memory_file_still_reads_and_a_huge_one_is_capped(engine, groups: Path) -> None:
    (groups / "global" / "CLAUDE.md").write_text("Everyone: be kind.")
    (groups / "g" / "CLAUDE.md").write_text("x" * (MAX_MEMORY_CHARS * 10))
    sections = memory_sections(groups, "g", False)
    assert sections[0] == ("Shared memory (read-only)", "Everyone: be kind.")
    assert sections[1][1].endswith("[... memory file truncated]")
    assert len(sections[1][1]) < MAX_MEMORY_CHARS + 100


def test_a_fifo_memory_file_does_not_block_the_run(engine, groups: Path) -> None:
    os.mkfifo(groups / "g" / "CLAUDE.md")
    memory = AgentMemory(engine, groups, archive_dir=groups.parent / "conversations")
    assert memory.sections("fake:g", "g", True) == []
    assert refusals(engine)[0]["detail"]["problem"] == "is not a regular file or directory"


def _compact(engine, memory: AgentMemory, folder: str) -> None:
    turns = [ChatTurn("user" if i % 2 == 0 else "assistant", f"turn {i} " + "y" * 400) for i in range(12)]
    with write_tx(engine) as conn:
        sid = sessions.new_session(conn, folder, turns)
    session = memory.open(f"fake:{folder}", folder, is_scheduled_task=False, run_id=None)
    assert session.session_id == sid
    memory.compact_if_needed(ScriptedProvider("echo"), f"fake:{folder}", folder, session)


def test_transcripts_are_archived_outside_the_group_folder(engine, groups: Path) -> None:
    archive = groups.parent / "conversations"
    (groups / "g" / "conversations").symlink_to(groups.parent / "outside")  # what the old code followed
    memory = AgentMemory(engine, groups, archive_dir=archive, history_token_budget=100, keep_recent_turns=2)
    _compact(engine, memory, "g")
    archived = list((archive / "g").glob("*.md"))
    assert len(archived) == 1 and "turn 0" in archived[0].read_text()
    assert sorted(p.name for p in (groups.parent / "outside").iterdir()) == ["CLAUDE.md", "secret"]


def test_a_linked_archive_folder_is_refused_and_compaction_goes_on(engine, groups: Path) -> None:
    archive = groups.parent / "conversations"
    archive.mkdir()
    (archive / "g").symlink_to(groups.parent / "outside")
    memory = AgentMemory(engine, groups, archive_dir=archive, history_token_budget=100, keep_recent_turns=2)
    _compact(engine, memory, "g")
    assert sorted(p.name for p in (groups.parent / "outside").iterdir()) == ["CLAUDE.md", "secret"]
    assert [r["detail"]["use"] for r in refusals(engine)] == ["archive"]
    with read_tx(engine) as conn:
        compacted = audit.recent(conn, kind="agent.compacted")
    assert compacted and compacted[0]["detail"]["archive"] is None
