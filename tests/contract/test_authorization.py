"""Contract §6.3-6.7 and checklist 11.10: what the group holding the lease may do."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from microclaw.core.ipc import (
    can_claim_devices,
    can_manage_groups,
    can_manage_task,
    can_schedule_for,
    can_send_message,
    visible_tasks,
)

# chat jid -> group folder
REGISTERED = {
    "tg:1": "main",
    "tg:2": "family",
    "dc:3": "work",
}


@pytest.mark.parametrize(
    ("source", "is_main", "jid", "expected"),
    [
        ("main", True, "tg:1", True),  # main: own chat
        ("main", True, "tg:2", True),  # main: other chats
        ("main", True, "tg:999", True),  # main: even unregistered chats
        ("family", False, "tg:2", True),  # non-main: own chat
        ("family", False, "dc:3", False),  # non-main: another group's chat
        ("family", False, "tg:1", False),  # non-main: main's chat
        ("family", False, "tg:999", False),  # non-main: unregistered chat
        ("ghost", False, "tg:2", False),  # a folder with no chat at all
    ],
)
def test_can_send_message(source: str, is_main: bool, jid: str, expected: bool) -> None:
    assert can_send_message(source, is_main, jid, REGISTERED) is expected


@pytest.mark.parametrize(
    ("source", "is_main", "jid", "expected"),
    [
        ("main", True, "tg:1", True),  # schedule for self
        ("main", True, "dc:3", True),  # schedule for others
        ("main", True, "tg:999", False),  # target must be registered, even for main
        ("family", False, "tg:2", True),  # non-main: self
        ("family", False, "dc:3", False),  # non-main: others
        ("family", False, "tg:999", False),
    ],
)
def test_can_schedule_for(source: str, is_main: bool, jid: str, expected: bool) -> None:
    assert can_schedule_for(source, is_main, jid, REGISTERED) is expected


def test_is_main_flag_is_what_counts_not_the_folder_name() -> None:
    # A group whose folder is called "main" but is not flagged main has no main rights.
    assert can_send_message("main", False, "tg:2", REGISTERED) is False
    assert can_schedule_for("main", False, "tg:2", REGISTERED) is False
    assert can_manage_task("main", False, "family") is False
    assert can_manage_groups(False) is False


@pytest.mark.parametrize(
    ("source", "is_main", "task_folder", "expected"),
    [
        ("main", True, "main", True),
        ("main", True, "family", True),  # main manages every task
        ("family", False, "family", True),  # own task
        ("family", False, "work", False),  # another group's task
        ("family", False, "main", False),
    ],
)
def test_can_manage_task(source: str, is_main: bool, task_folder: str, expected: bool) -> None:
    assert can_manage_task(source, is_main, task_folder) is expected


def test_only_main_manages_groups() -> None:
    assert can_manage_groups(True) is True
    assert can_manage_groups(False) is False


def test_only_main_claims_devices() -> None:
    # MicroClaw's own rule (no NanoClaw counterpart): claiming registers the device's chat.
    assert can_claim_devices(True) is True
    assert can_claim_devices(False) is False


@dataclass
class Task:
    id: str
    group_folder: str


TASKS = [Task("t1", "main"), Task("t2", "family"), Task("t3", "work"), Task("t4", "family")]


def test_main_sees_all_tasks() -> None:
    assert [t.id for t in visible_tasks("main", True, TASKS)] == ["t1", "t2", "t3", "t4"]


def test_non_main_sees_only_its_own_tasks_in_order() -> None:
    assert [t.id for t in visible_tasks("family", False, TASKS)] == ["t2", "t4"]
    assert visible_tasks("nobody", False, TASKS) == []


def test_visible_tasks_accepts_snapshot_mappings() -> None:
    rows = [
        {"id": "a", "groupFolder": "family"},
        {"id": "b", "group_folder": "family"},
        {"id": "c", "groupFolder": "work"},
    ]
    assert [r["id"] for r in visible_tasks("family", False, rows)] == ["a", "b"]
    assert [r["id"] for r in visible_tasks("main", True, iter(rows))] == ["a", "b", "c"]
