"""Authorization of host-side agent tools (NanoClaw's IPC rules, contract §6.2-6.7).

The acting group is always the one that holds the group's lease (``source_folder``,
``is_main``), never anything found in tool arguments. These functions answer "may this group do
that?" over plain data:

=================================  ====  ========
Operation                          Main  Non-main
=================================  ====  ========
send to own chat                   yes   yes
send to other chats                yes   no
schedule for self                  yes   yes
schedule for others                yes   no
view tasks                         all   own
manage groups (register, refresh)  yes   no
claim a device's pairing code      yes   no
=================================  ====  ========

The last row is MicroClaw's own (devices are not in NanoClaw): claiming a code vouches for a
device and registers its chat as a group, so it is a group-management right.

Does not look anything up (callers pass the registered-group map and check that a task exists),
does not validate schedules (:mod:`microclaw.scheduler.schedule`) or folder names
(:mod:`microclaw.core.groups`), and does not log or audit a denial.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TypeVar

__all__ = [
    "can_manage_groups",
    "can_manage_task",
    "can_schedule_for",
    "can_send_message",
    "visible_tasks",
]

T = TypeVar("T")


def can_send_message(source_folder: str, is_main: bool, chat_jid: str, registered: Mapping[str, str]) -> bool:
    """True when the group may send a message to ``chat_jid``.

    ``registered`` maps chat jid -> group folder. Main may send anywhere, including chats that
    are not registered; any other group only to the chat registered to its own folder.
    """
    return is_main or registered.get(chat_jid) == source_folder


def can_schedule_for(
    source_folder: str, is_main: bool, target_jid: str, registered: Mapping[str, str]
) -> bool:
    """True when the group may schedule a task for ``target_jid``.

    The target must be a registered chat, even for main; a non-main group may only target the
    chat registered to its own folder.
    """
    target_folder = registered.get(target_jid)
    if target_folder is None:
        return False
    return is_main or target_folder == source_folder


def can_manage_task(source_folder: str, is_main: bool, task_group_folder: str) -> bool:
    """True when the group may pause, resume, cancel or update a task owned by ``task_group_folder``.

    Main manages every task; other groups only their own. The caller checks that the task exists.
    """
    return is_main or task_group_folder == source_folder


def can_manage_groups(is_main: bool) -> bool:
    """True when the group may register groups or refresh group metadata: main only."""
    return is_main


def can_claim_devices(is_main: bool) -> bool:
    """True when the group may claim a device's pairing code (which registers the device's chat
    as a group): main only, like managing groups."""
    return can_manage_groups(is_main)


def _task_folder(task: object) -> str | None:
    if isinstance(task, Mapping):
        folder = task.get("group_folder", task.get("groupFolder"))
    else:
        folder = getattr(task, "group_folder", None)
    return folder if isinstance(folder, str) else None


def visible_tasks(source_folder: str, is_main: bool, tasks: Iterable[T]) -> list[T]:
    """The tasks a group may see, in the given order: all for main, its own for the others.

    A task is a row-like object with ``group_folder`` or a mapping with ``group_folder``
    (or the snapshot's ``groupFolder``) key.
    """
    if is_main:
        return list(tasks)
    return [task for task in tasks if _task_folder(task) == source_folder]
