"""Host tools on a real SQLite file: NanoClaw's authorization table and task semantics."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from microclaw.agent.providers.base import ToolCall
from microclaw.agent.tools.base import Toolbox, ToolContext, ToolResult
from microclaw.agent.tools.host import HostEnv, host_tools
from microclaw.scheduler.schedule import ScheduleLimits
from microclaw.store import audit, groups, tasks
from microclaw.store.db import read_tx, write_tx
from tests.helpers import outbox_rows, register

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MAIN = ToolContext("fake:main", "main_g", True)
TEAM = ToolContext("fake:team", "team", False)


@pytest.fixture
def box(engine, tmp_path: Path) -> Toolbox:
    register(engine, "fake:main", folder="main_g", is_main=True)
    register(engine, "fake:team", folder="team")
    env = HostEnv(engine, timezone="UTC", groups_dir=tmp_path / "groups", clock=lambda: NOW)
    return Toolbox(host_tools(env), audit=lambda kind, **f: audit.record_now(engine, kind, **f))


def use(box: Toolbox, ctx: ToolContext, tool: str, **args: Any) -> ToolResult:
    return box.execute(ctx, ToolCall("1", tool, args))


def task_id(result: ToolResult) -> str:
    assert not result.is_error, result.content
    return result.content.split()[1]


def test_schedule_validates_and_computes_the_first_run(box: Toolbox, engine) -> None:
    tid = task_id(
        use(box, TEAM, "schedule_task", prompt="p", schedule_type="interval", schedule_value="60000")
    )
    with read_tx(engine) as conn:
        task = tasks.get_task(conn, tid)
    assert task is not None
    assert (task.group_folder, task.next_run, task.context_mode) == (
        "team",
        "2026-03-01T12:01:00.000Z",
        "group",
    )
    for value in ("0", "abc"):
        bad = use(box, TEAM, "schedule_task", prompt="p", schedule_type="interval", schedule_value=value)
        assert bad.is_error and "invalid schedule" in bad.content
    zoned = use(
        box, TEAM, "schedule_task", prompt="p", schedule_type="once", schedule_value="2026-03-02T10:00:00Z"
    )
    assert zoned.is_error and "without a timezone" in zoned.content


def test_groups_manage_only_their_own_tasks_and_main_manages_all(box: Toolbox, engine) -> None:
    mine = task_id(
        use(box, TEAM, "schedule_task", prompt="p", schedule_type="cron", schedule_value="0 9 * * *")
    )
    theirs = task_id(
        use(box, MAIN, "schedule_task", prompt="q", schedule_type="cron", schedule_value="0 9 * * *")
    )
    assert use(box, TEAM, "pause_task", task_id=theirs).content.startswith("denied:")
    assert not use(box, TEAM, "pause_task", task_id=mine).is_error
    assert "paused" in use(box, TEAM, "list_tasks").content
    assert theirs not in use(box, TEAM, "list_tasks").content
    assert theirs in use(box, MAIN, "list_tasks").content and mine in use(box, MAIN, "list_tasks").content
    assert not use(box, MAIN, "resume_task", task_id=mine).is_error
    assert use(box, TEAM, "cancel_task", task_id="nope").content == "no task 'nope'"
    updated = use(box, TEAM, "update_task", task_id=mine, schedule_type="interval", schedule_value="120000")
    assert not updated.is_error
    with read_tx(engine) as conn:
        task = tasks.get_task(conn, mine)
    assert task is not None and (task.status, task.next_run) == ("active", "2026-03-01T12:02:00.000Z")
    assert not use(box, MAIN, "cancel_task", task_id=mine).is_error
    with read_tx(engine) as conn:
        assert tasks.get_task(conn, mine) is None


def test_register_group_is_main_only_and_never_grants_main(box: Toolbox, engine, tmp_path: Path) -> None:
    args = {"jid": "fake:main", "name": "renamed", "folder": "main_g", "trigger": "@Andy"}
    assert use(box, TEAM, "register_group", **args).content.startswith("denied:")
    assert not use(box, MAIN, "register_group", **args).is_error
    new = {"jid": "fake:new", "name": "new", "folder": "fake_new", "trigger": "@Andy"}
    assert not use(box, MAIN, "register_group", **new).is_error
    assert use(box, MAIN, "register_group", **{**new, "folder": "../x"}).content == "invalid folder '../x'"
    with read_tx(engine) as conn:
        main, created = groups.get_group(conn, "fake:main"), groups.get_group(conn, "fake:new")
    assert main is not None and main.is_main and main.name == "renamed"  # re-registering keeps main
    assert created is not None and not created.is_main and created.requires_trigger is False
    assert (tmp_path / "groups" / "fake_new" / "logs").is_dir()
    assert use(box, TEAM, "refresh_groups").content.startswith("denied:")
    assert not use(box, MAIN, "refresh_groups").is_error


def test_register_group_never_creates_folders_through_a_planted_link(
    box: Toolbox, engine, tmp_path: Path
) -> None:
    # main's container cannot write groups/ itself, but a folder may already be a link (an
    # import, a hand edit) or hold one at logs/: the host must not mkdir through either.
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "groups" / "team").mkdir(parents=True)
    (tmp_path / "groups" / "team" / "logs").symlink_to(outside / "made-by-host")
    (tmp_path / "groups" / "linked").symlink_to(outside)
    for folder in ("team", "linked"):
        args = {"jid": f"fake:{folder}", "name": folder, "folder": folder, "trigger": "@Andy"}
        result = use(box, MAIN, "register_group", **args)
        assert result.is_error and result.content.startswith("denied:") and "symbolic link" in result.content
    assert list(outside.iterdir()) == []
    with read_tx(engine) as conn:
        denied = audit.recent(conn, kind="agent.tool_denied")
    assert [r["detail"]["tool"] for r in denied] == ["register_group", "register_group"]


def test_register_group_with_another_chats_folder_is_a_clear_error_that_changes_nothing(
    box: Toolbox, engine
) -> None:
    with read_tx(engine) as conn:
        before = {(g.jid, g.folder) for g in groups.all_groups(conn)}
    taken = next(folder for _, folder in before)
    args = {"jid": "fake:intruder", "name": "x", "folder": taken, "trigger": "@Andy"}
    result = use(box, MAIN, "register_group", **args)
    assert result.is_error and f"folder {taken!r} is already used by" in result.content
    with read_tx(engine) as conn:
        assert {(g.jid, g.folder) for g in groups.all_groups(conn)} == before


def test_send_message_authorization_and_audit(box: Toolbox, engine) -> None:
    assert use(box, TEAM, "send_message", text="hi", chat_jid="fake:main").content.startswith("denied:")
    assert use(box, TEAM, "send_message", text="   ").content == "text must not be empty"
    assert not use(box, TEAM, "send_message", text="to myself").is_error
    assert not use(box, MAIN, "send_message", text="anywhere", chat_jid="tg:123").is_error
    assert [(r.chat_jid, r.text) for r in outbox_rows(engine)] == [
        ("fake:team", "to myself"),
        ("tg:123", "anywhere"),
    ]
    with write_tx(engine) as conn:
        kinds = [r["kind"] for r in audit.recent(conn)]
    assert kinds.count("agent.send_message") == 2 and kinds.count("agent.tool_denied") == 1


# --- scheduling limits and far-future schedules (security) --------------------------------------


def limited_box(engine, tmp_path: Path, **limits: Any) -> Toolbox:
    env = HostEnv(
        engine, timezone="America/New_York", groups_dir=tmp_path / "groups", clock=lambda: NOW,
        limits=ScheduleLimits(**limits),
    )  # fmt: skip
    return Toolbox(host_tools(env), audit=lambda kind, **f: audit.record_now(engine, kind, **f))


def active_tasks(engine, folder: str) -> int:
    with read_tx(engine) as conn:
        return tasks.count_active(conn, folder)


def test_a_schedule_more_frequent_than_the_minimum_is_refused(box: Toolbox, engine) -> None:
    for kind, value in [("interval", "1000"), ("interval", "59999"), ("cron", "* * * * * *")]:
        result = use(box, TEAM, "schedule_task", prompt="spam", schedule_type=kind, schedule_value=value)
        assert result.content.startswith("denied:") and "scheduler.min_interval_s" in result.content
    assert active_tasks(engine, "team") == 0
    ok = task_id(
        use(box, TEAM, "schedule_task", prompt="p", schedule_type="cron", schedule_value="* * * * *")
    )
    spam = use(box, TEAM, "update_task", task_id=ok, schedule_type="interval", schedule_value="1000")
    assert spam.content.startswith("denied:") and "scheduler.min_interval_s" in spam.content
    with read_tx(engine) as conn:
        unchanged = tasks.get_task(conn, ok)
    assert unchanged is not None and (unchanged.schedule_type, unchanged.schedule_value) == (
        "cron",
        "* * * * *",
    )
    # Main is limited too: its agent reads untrusted text like any other.
    assert use(
        box, MAIN, "schedule_task", prompt="p", schedule_type="interval", schedule_value="1000"
    ).content.startswith("denied:")


def test_active_tasks_per_group_are_capped(engine, tmp_path: Path) -> None:
    register(engine, "fake:main", folder="main_g", is_main=True)
    register(engine, "fake:team", folder="team")
    capped = limited_box(engine, tmp_path, max_active_tasks=2)
    args = {"prompt": "p", "schedule_type": "interval", "schedule_value": "3600000"}
    first, _second = (task_id(use(capped, TEAM, "schedule_task", **args)) for _ in range(2))
    third = use(capped, TEAM, "schedule_task", **args)
    assert third.content.startswith("denied:") and "max_active_tasks_per_group" in third.content
    # Main scheduling for the team counts against the team (the task is the team's).
    assert use(capped, MAIN, "schedule_task", target_chat_jid="fake:team", **args).content.startswith(
        "denied:"
    )
    assert active_tasks(engine, "team") == 2
    assert not use(capped, TEAM, "pause_task", task_id=first).is_error
    task_id(use(capped, TEAM, "schedule_task", **args))  # a slot was freed
    assert use(capped, TEAM, "resume_task", task_id=first).content.startswith("denied:")
    assert active_tasks(engine, "team") == 2
    with write_tx(engine) as conn:
        kinds = [r["kind"] for r in audit.recent(conn)]
    assert kinds.count("agent.tool_denied") == 3


@pytest.mark.parametrize(
    ("kind", "value"),
    [("once", "9999-12-31T23:00:00"), ("interval", "315537897600000"), ("interval", "86399999999999999")],
)
def test_a_schedule_past_year_9999_is_a_clear_error(engine, tmp_path: Path, kind: str, value: str) -> None:
    register(engine, "fake:team", folder="team")
    box = limited_box(engine, tmp_path)
    result = use(box, TEAM, "schedule_task", prompt="p", schedule_type=kind, schedule_value=value)
    assert result.is_error and result.content.startswith("invalid schedule:"), result.content
    assert "internal error" not in result.content
    assert active_tasks(engine, "team") == 0


# --- claim_device (MicroClaw's own; main only) -------------------------------------------------


def _pairing(engine, code: str, device_id: str, *, expires_in_ms: int = 300_000) -> None:
    from microclaw.store import devices
    from microclaw.store.db import now_ms

    with write_tx(engine) as conn:
        devices.add_pairing(
            conn,
            code=code,
            device_id=device_id,
            secret_hash="0" * 64,
            now_ms=now_ms(),
            expires_at_ms=now_ms() + expires_in_ms,
        )


def _claimed(engine, code: str) -> tuple[int | None, str | None]:
    from microclaw.store import devices

    with read_tx(engine) as conn:
        row = devices.get_pairing(conn, code)
    assert row is not None
    return row.claimed_at_ms, row.name


def test_claim_device_is_main_only_and_refusals_are_audited(box: Toolbox, engine) -> None:
    _pairing(engine, "ABCDEFGH", "kitchen-1")
    denied = use(box, TEAM, "claim_device", code="ABCD-EFGH", name="Kitchen")
    assert denied.is_error and denied.content.startswith("denied:")
    assert _claimed(engine, "ABCDEFGH") == (None, None)  # nothing changed
    with read_tx(engine) as conn:
        rows = audit.recent(conn, kind="agent.tool_denied")
        claims = audit.recent(conn, kind="device.claim")
    assert [(r["detail"]["tool"], r["chat_jid"]) for r in rows] == [("claim_device", "fake:team")]
    assert claims == []

    done = use(box, MAIN, "claim_device", code="abcd-efgh", name=" Kitchen ")
    assert not done.is_error and "kitchen-1" in done.content
    claimed_at, name = _claimed(engine, "ABCDEFGH")
    assert claimed_at is not None and name == "Kitchen"
    with read_tx(engine) as conn:
        claims = audit.recent(conn, kind="device.claim")
    assert [(c["decision"], c["chat_jid"], c["detail"]["via"]) for c in claims] == [
        ("allow", "fake:main", "agent")
    ]


def test_claim_device_refuses_unknown_expired_and_claimed_codes_like_the_cli(box: Toolbox, engine) -> None:
    _pairing(engine, "ABCDEFGH", "kitchen-1")
    _pairing(engine, "EXPIRED2", "porch-1", expires_in_ms=-1)
    assert not use(box, MAIN, "claim_device", code="ABCDEFGH", name="Kitchen").is_error
    again = use(box, MAIN, "claim_device", code="ABCDEFGH", name="Other")
    assert again.is_error and "already_claimed" in again.content
    assert _claimed(engine, "ABCDEFGH")[1] == "Kitchen"
    unknown = use(box, MAIN, "claim_device", code="ZZZZZZZZ", name="X")
    assert unknown.is_error and "unknown_code" in unknown.content
    expired = use(box, MAIN, "claim_device", code="EXPIRED2", name="X")
    assert expired.is_error and "code_expired" in expired.content
    assert _claimed(engine, "EXPIRED2") == (None, None)
    blank = use(box, MAIN, "claim_device", code="ABCDEFGH", name="  ")
    assert blank.is_error and "name" in blank.content
    with read_tx(engine) as conn:
        decisions = [c["decision"] for c in audit.recent(conn, kind="device.claim")]
    assert sorted(decisions) == ["allow", "deny", "deny", "deny"]
