"""Group folders are written by containers: links planted there must not reach host secrets.

Runs go through the real router (`process_group`) and the real agent (`build_agent`: memory
files, sessions, compaction) against the fake Anthropic API on loopback, on real SQLite. The
attack: the agent (told to by a prompt injection) plants ``CLAUDE.md -> /proc/self/environ`` or
a link to a file of secrets in its group folder, or in ``groups/global`` (main may write it);
on the next run the host would read the link into the system prompt and hand every secret in
the worker's environment to the model. The Docker test plants the link from inside a real
sandbox container, through the bind mount, exactly as an agent would.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from microclaw.agent.providers.anthropic import AnthropicProvider
from microclaw.config import AgentSettings
from microclaw.pipeline.inbound import ingest
from microclaw.pipeline.router import process_group
from microclaw.runtime.wiring import build_agent
from microclaw.store import audit
from microclaw.store.db import read_tx
from tests.helpers import envelope, outbox_rows, register, router_deps
from tests.integration.agent.fakes import FakeAnthropic, Step
from tests.integration.sandbox.conftest import docker_client, make_sandbox, sandbox_image  # noqa: F401

FAKE_SECRET = "MICROCLAW_FAKE_SECRET=hunter2-must-never-reach-the-model"


def environ_entries() -> list[str]:
    """This process's environment as /proc/self/environ shows it (what the link would leak)."""
    raw = Path("/proc/self/environ").read_bytes().split(b"\0")
    return [e.decode(errors="replace") for e in raw if len(e) > 6]


def run_once(engine, server: FakeAnthropic, groups_dir: Path, chat: str, **settings: Any) -> str:
    provider = AnthropicProvider(api_key="k", base_url=server.base_url, timeout_s=5, max_retries=0)
    agent = build_agent(
        AgentSettings(max_retries=0, **settings),
        provider,
        assistant_name="Andy",
        engine=engine,
        groups_dir=groups_dir,
        archive_dir=groups_dir.parent / "conversations",
        timezone="UTC",
        sandbox=None,
        lease_ttl_ms=30_000,
    )
    return process_group(router_deps(engine, groups_dir.parent, agent=agent), chat)


def systems(server: FakeAnthropic) -> list[str]:
    return [json.dumps(body.get("system", "")) + str(body.get("system", "")) for body in server.requests]


def refusals(engine) -> list[dict[str, Any]]:
    with read_tx(engine) as conn:
        return audit.recent(conn, kind="fs.refused", limit=100)


def assert_nothing_leaked(server: FakeAnthropic) -> None:
    sent = "\n".join(json.dumps(body) for body in server.requests) + "\n".join(systems(server))
    assert "hunter2" not in sent
    leaked = [e for e in environ_entries() if e in sent or json.dumps(e)[1:-1] in sent]
    assert leaked == [], f"environment entries reached the model: {[e.split('=')[0] for e in leaked]}"


@pytest.fixture
def server() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as fake:
        yield fake


@pytest.fixture
def groups_dir(tmp_path: Path) -> Path:
    for folder in ("main_g", "team", "global"):
        (tmp_path / "groups" / folder).mkdir(parents=True)
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "host.env").write_text(FAKE_SECRET + "\n")
    return tmp_path / "groups"


def test_claude_md_linked_to_proc_self_environ_never_reaches_the_prompt(engine, server, groups_dir) -> None:
    link = groups_dir / "main_g" / "CLAUDE.md"
    link.symlink_to("/proc/self/environ")
    assert environ_entries() and environ_entries()[0] in link.read_text(errors="replace")  # it is live
    register(engine, "fake:main", is_main=True, folder="main_g")
    ingest(engine, envelope("fake:main", "hello"))
    server.add(Step(text="Hi!"))

    assert run_once(engine, server, groups_dir, "fake:main") == "drained"

    assert [row.text for row in outbox_rows(engine)] == ["Hi!"]  # the run carried on
    assert len(server.requests) == 1
    assert_nothing_leaked(server)
    [row] = refusals(engine)
    assert (row["decision"], row["chat_jid"]) == ("deny", "fake:main")
    assert row["detail"] == {
        "group": "main_g",
        "use": "memory",
        "path": "main_g/CLAUDE.md",
        "problem": "is a symbolic link",
    }


def test_links_to_secret_files_in_own_and_global_memory_are_skipped(engine, server, groups_dir) -> None:
    secrets = groups_dir.parent / "secrets"
    (groups_dir / "team" / "CLAUDE.md").symlink_to(secrets / "host.env")
    (groups_dir / "global" / "CLAUDE.md").symlink_to("/proc/self/environ")  # planted by main
    register(engine, "fake:team", folder="team", requires_trigger=False)
    ingest(engine, envelope("fake:team", "what do you remember?"))
    server.add(Step(text="Nothing yet."))

    assert run_once(engine, server, groups_dir, "fake:team") == "drained"

    assert_nothing_leaked(server)
    assert [row.text for row in outbox_rows(engine)] == ["Nothing yet."]
    assert {r["detail"]["path"] for r in refusals(engine)} == {"team/CLAUDE.md", "global/CLAUDE.md"}


def test_a_linked_directory_above_the_memory_file_is_not_followed(engine, server, groups_dir) -> None:
    shutil.rmtree(groups_dir / "global")
    (groups_dir / "global").symlink_to(groups_dir.parent / "secrets")
    (groups_dir.parent / "secrets" / "CLAUDE.md").write_text(FAKE_SECRET)
    register(engine, "fake:team", folder="team", requires_trigger=False)
    ingest(engine, envelope("fake:team", "hi"))
    server.add(Step(text="Hello."))

    assert run_once(engine, server, groups_dir, "fake:team") == "drained"

    assert_nothing_leaked(server)
    assert [r["detail"]["path"] for r in refusals(engine)] == ["global"]


def test_real_memory_files_still_reach_the_prompt(engine, server, groups_dir) -> None:
    (groups_dir / "team" / "CLAUDE.md").write_text("Bob likes tea.")
    (groups_dir / "global" / "CLAUDE.md").write_text("Everyone: be kind.")
    register(engine, "fake:team", folder="team", requires_trigger=False)
    ingest(engine, envelope("fake:team", "hi"))
    server.add(Step(text="Hello."))
    run_once(engine, server, groups_dir, "fake:team")
    [system] = systems(server)
    assert "Bob likes tea." in system and "Everyone: be kind." in system
    assert refusals(engine) == []


def test_compaction_archives_never_land_behind_a_conversations_link(engine, server, groups_dir) -> None:
    elsewhere = groups_dir.parent / "elsewhere"
    elsewhere.mkdir()
    (groups_dir / "main_g" / "conversations").symlink_to(elsewhere)
    (groups_dir / "team" / "conversations").mkdir()
    (groups_dir / "main_g" / "conversations-other").symlink_to(groups_dir / "team" / "conversations")
    register(engine, "fake:main", is_main=True, folder="main_g")

    def responder(body: dict[str, Any]) -> Step:
        if "You compress chat transcripts" in json.dumps(body.get("system", "")):
            return Step(text="Bob likes tea.")
        return Step(text="ok " + "x" * 2000)  # long answers fill the budget quickly

    server.responder = responder
    for word in ["I like tea", "remind me at 5", "thanks", "one more thing"]:
        ingest(engine, envelope("fake:main", word))
        run_once(engine, server, groups_dir, "fake:main", history_token_budget=1000, keep_recent_turns=2)

    with read_tx(engine) as conn:
        assert audit.recent(conn, kind="agent.compacted")
    assert list(elsewhere.iterdir()) == []
    assert list((groups_dir / "team" / "conversations").iterdir()) == []
    archived = list((groups_dir.parent / "conversations" / "main_g").glob("*.md"))
    assert archived and any("I like tea" in p.read_text() for p in archived)


@pytest.mark.docker
def test_a_link_planted_from_inside_a_real_container_is_not_followed(
    engine,
    server,
    make_sandbox,  # noqa: F811
) -> None:
    sb = make_sandbox()
    planted = sb.service.exec(
        "alpha",
        [
            "sh",
            "-c",
            "ln -s /proc/self/environ /workspace/group/CLAUDE.md"
            " && mkdir -p /workspace/group/x && ln -s /etc /workspace/group/conversations"
            " && ls -l /workspace/group/CLAUDE.md",
        ],
    )
    assert planted.exit_code == 0, planted.stderr
    groups_dir = sb.config.groups_dir
    link = groups_dir / "alpha" / "CLAUDE.md"
    assert link.is_symlink() and environ_entries()[0] in link.read_text(errors="replace")  # live on the host
    register(engine, "fake:alpha", folder="alpha", requires_trigger=False)
    ingest(engine, envelope("fake:alpha", "hello"))
    server.add(Step(text="Hi!"))

    assert run_once(engine, server, groups_dir, "fake:alpha") == "drained"

    assert_nothing_leaked(server)
    assert [row.text for row in outbox_rows(engine)] == ["Hi!"]
    assert [(r["detail"]["group"], r["detail"]["path"]) for r in refusals(engine)] == [
        ("alpha", "alpha/CLAUDE.md")
    ]
