"""Host tools: actions the agent takes on the host, authorized by the running group only.

The acting group is the `ToolContext` (the group holding the lease), never a tool argument,
and every decision uses NanoClaw's rules in `microclaw.core.ipc` (contract §6):
``send_message`` to the group's own chat (main: any chat), scheduled-task tools on the group's
own tasks (main: all), ``register_group`` / ``refresh_groups`` for main only, and registering
never grants main. ``claim_device`` (MicroClaw's own: the pairing code an ESP32-S3 terminal
shows, as ``microclaw device claim`` does) is main only too. A refusal raises `PolicyDenied`
(the `Toolbox` returns it to the model and audits it) and changes nothing; an allowed action
is audited in the transaction that makes it.

Scheduling limits (`ScheduleLimits`, from ``[scheduler]``; for every group, main included): a
schedule that would run twice within ``min_interval`` is refused, and so is a new or resumed
task past the group's ``max_active_tasks`` (counted on the group that owns the task, which is
the target's group when main schedules for another chat). Both refusals are `PolicyDenied`. A
schedule whose arithmetic falls past the year 9999 is an invalid schedule (`ToolError`).

Writes made for a run are fenced by the run's lease token (read from its ``runs`` row), so a
worker that lost the group's lease cannot send or schedule anything. ``send_message`` rows go
to the outbox keyed ``run:<id>:msg:<n>``, which is what tells the router that output reached
the user (no rollback, no retry) if the run fails later.

Does not deliver messages (the outbound worker does; ``publish_deliver`` only wakes it) and
does not run tasks (the scheduler and router do).
"""

from __future__ import annotations

import logging
import secrets
import string
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from sqlalchemy import Connection, Engine

from microclaw import safefs
from microclaw.agent.tools.base import BaseTool, ToolContext, ToolError
from microclaw.core.groups import is_valid_group_folder
from microclaw.core.ipc import (
    can_claim_devices,
    can_manage_groups,
    can_manage_task,
    can_schedule_for,
    can_send_message,
    visible_tasks,
)
from microclaw.errors import PolicyDenied, UnsafePath
from microclaw.gateway.pairing import record_claim
from microclaw.pipeline import leases
from microclaw.scheduler.schedule import ScheduleLimits, check_min_interval, first_run
from microclaw.scheduler.tick import iso
from microclaw.store import audit, groups, messages, outbox, runs, tasks
from microclaw.store.db import now_ms, read_tx, write_tx

logger = logging.getLogger(__name__)

_B36 = string.digits + string.ascii_lowercase


class HostEnv:
    """What host tools need from the worker: the app database, the clock's zone, where group
    folders live, the lease TTL used when fencing, how to wake the outbound worker, and the
    scheduling limits (default: `ScheduleLimits`' defaults)."""

    def __init__(
        self,
        engine: Engine,
        *,
        timezone: str,
        groups_dir: Path,
        lease_ttl_ms: int = 60_000,
        publish_deliver: Callable[[str], object] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(tz=UTC),
        limits: ScheduleLimits | None = None,
    ) -> None:
        self.engine = engine
        self.timezone = timezone
        self.groups_dir = Path(groups_dir)
        self.lease_ttl_ms = lease_ttl_ms
        self.publish_deliver = publish_deliver
        self.clock = clock
        self.limits = limits or ScheduleLimits()

    def check_frequency(self, ctx: ToolContext, action: str, kind: str, value: str) -> None:
        """PolicyDenied when the schedule runs more often than the minimum interval allows."""
        try:
            check_min_interval(kind, value, self.limits.min_interval)
        except ValueError as exc:
            raise _deny(ctx, action, str(exc)) from None

    def check_capacity(self, conn: Connection, ctx: ToolContext, action: str, folder: str) -> None:
        """PolicyDenied when ``folder`` already has the most active tasks a group may have."""
        cap = self.limits.max_active_tasks
        if cap and tasks.count_active(conn, folder) >= cap:
            raise _deny(
                ctx,
                action,
                f"group {folder!r} already has {cap} active tasks (scheduler.max_active_tasks_per_group); "
                "pause or cancel one first",
            )

    def fence(self, conn: Connection, ctx: ToolContext) -> None:
        """Prove the run still holds its group's lease (first thing in every write)."""
        if ctx.run_id is None:
            return
        held = runs.lease_of(conn, ctx.run_id)
        if held is not None:
            chat_jid, token = held
            leases.fence(conn, leases.group_lease(chat_jid), token, ttl_ms=self.lease_ttl_ms, now_ms=now_ms())

    def publish(self, chat_jid: str) -> None:
        if self.publish_deliver is None:
            return
        try:
            self.publish_deliver(chat_jid)
        except Exception:
            logger.warning("deliver publish failed; the sweeper re-queues it", extra={"chat_jid": chat_jid})


def _object(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required}


def _deny(ctx: ToolContext, action: str, reason: str) -> PolicyDenied:
    return PolicyDenied(action, reason, group=ctx.group_folder)


class _HostTool(BaseTool):
    def __init__(self, env: HostEnv) -> None:
        self.env = env


class SendMessageTool(_HostTool):
    name: ClassVar[str] = "send_message"
    description: ClassVar[str] = (
        "Send a message to the chat right away (e.g. progress updates before a long job). "
        "Only the main group may name another chat in chat_jid."
    )
    input_schema: ClassVar[dict[str, Any]] = _object(
        {
            "text": {"type": "string"},
            "chat_jid": {"type": "string", "description": "Target chat (main only)."},
        },
        ["text"],
    )

    def run(self, ctx: ToolContext, args: dict[str, Any]) -> str:
        body = args["text"]
        if not body.strip():
            raise ToolError("text must not be empty")
        target = args.get("chat_jid") or ctx.chat_jid
        with write_tx(self.env.engine) as conn:
            registered = groups.registered_folders(conn)
            if not can_send_message(ctx.group_folder, ctx.is_main, target, registered):
                raise _deny(ctx, "send_message", f"group {ctx.group_folder!r} may not message {target!r}")
            self.env.fence(conn, ctx)
            if ctx.run_id is not None:
                prefix = f"run:{ctx.run_id}:msg:"
                n = outbox.count_keyed(conn, ctx.run_id, prefix) + 1
                key = f"{prefix}{n}"
            else:
                key = f"agent:{uuid.uuid4().hex}:msg"
            outbox.add(conn, key=key, chat_jid=target, text=body, run_id=ctx.run_id)
            audit.record(
                conn, "agent.send_message", chat_jid=ctx.chat_jid, decision="allow", target=target, key=key
            )
        self.env.publish(target)
        return "Message sent."


class ScheduleTaskTool(_HostTool):
    name: ClassVar[str] = "schedule_task"
    description: ClassVar[str] = (
        "Schedule a prompt to run later: schedule_type 'cron' (5-field expression, local time), "
        "'interval' (milliseconds) or 'once' (local time like 2026-02-01T15:30:00, no zone). "
        "context_mode 'group' shares this chat's history, 'isolated' starts fresh. "
        "Only the main group may target another chat."
    )
    input_schema: ClassVar[dict[str, Any]] = _object(
        {
            "prompt": {"type": "string"},
            "schedule_type": {"type": "string", "enum": ["cron", "interval", "once"]},
            "schedule_value": {"type": "string"},
            "context_mode": {"type": "string", "enum": ["group", "isolated"]},
            "target_chat_jid": {"type": "string"},
            "script": {"type": "string"},
        },
        ["prompt", "schedule_type", "schedule_value"],
    )

    def run(self, ctx: ToolContext, args: dict[str, Any]) -> str:
        kind, value = args["schedule_type"], args["schedule_value"].strip()
        if kind == "once" and (value.endswith(("Z", "z")) or _has_offset(value)):
            raise ToolError("once: give a local time without a timezone, e.g. 2026-02-01T15:30:00")
        try:
            first = first_run(kind, value, self.env.clock(), self.env.timezone)
        except ValueError as exc:
            raise ToolError(f"invalid schedule: {exc}") from None
        self.env.check_frequency(ctx, "schedule_task", kind, value)
        target = args.get("target_chat_jid") or ctx.chat_jid
        task_id = f"task-{int(time.time() * 1000)}-{''.join(secrets.choice(_B36) for _ in range(6))}"
        with write_tx(self.env.engine) as conn:
            registered = groups.registered_folders(conn)
            if not can_schedule_for(ctx.group_folder, ctx.is_main, target, registered):
                raise _deny(
                    ctx, "schedule_task", f"group {ctx.group_folder!r} may not schedule for {target!r}"
                )
            self.env.check_capacity(conn, ctx, "schedule_task", registered[target])
            self.env.fence(conn, ctx)
            tasks.create_task(
                conn,
                id=task_id,
                group_folder=registered[target],
                chat_jid=target,
                prompt=args["prompt"],
                schedule_type=kind,
                schedule_value=value,
                next_run=iso(first),
                context_mode=args.get("context_mode") or "group",
                script=args.get("script"),
            )
            audit.record(
                conn, "agent.schedule_task", chat_jid=ctx.chat_jid, decision="allow", task_id=task_id
            )
        return f"Task {task_id} scheduled: {kind} - {value} (first run {iso(first)})"


def _has_offset(value: str) -> bool:
    tail = value[-6:]
    return len(tail) == 6 and tail[0] in "+-" and tail[3] == ":"


class ListTasksTool(_HostTool):
    name: ClassVar[str] = "list_tasks"
    description: ClassVar[str] = "List scheduled tasks (the main group sees all, others their own)."
    input_schema: ClassVar[dict[str, Any]] = _object({}, [])

    def run(self, ctx: ToolContext, args: dict[str, Any]) -> str:
        with read_tx(self.env.engine) as conn:
            rows = visible_tasks(ctx.group_folder, ctx.is_main, tasks.get_all_tasks(conn))
        if not rows:
            return "No scheduled tasks found."
        return "\n".join(
            f"- [{t.id}] {t.prompt[:50]}... ({t.schedule_type}: {t.schedule_value}) - {t.status}, "
            f"next: {t.next_run or 'N/A'}"
            for t in rows
        )


class _ManageTaskTool(_HostTool):
    input_schema: ClassVar[dict[str, Any]] = _object({"task_id": {"type": "string"}}, ["task_id"])
    verb: ClassVar[str]

    def run(self, ctx: ToolContext, args: dict[str, Any]) -> str:
        task_id = args["task_id"]
        with write_tx(self.env.engine) as conn:
            task = tasks.get_task(conn, task_id)
            if task is None:
                raise ToolError(f"no task {task_id!r}")
            if not can_manage_task(ctx.group_folder, ctx.is_main, task.group_folder):
                raise _deny(ctx, self.name, f"task {task_id!r} belongs to another group")
            self.env.fence(conn, ctx)
            result = self.apply(conn, ctx, task, args)
            audit.record(conn, f"agent.{self.name}", chat_jid=ctx.chat_jid, decision="allow", task_id=task_id)
        return result

    def apply(self, conn: Connection, ctx: ToolContext, task: tasks.Task, args: dict[str, Any]) -> str:
        raise NotImplementedError


class PauseTaskTool(_ManageTaskTool):
    name: ClassVar[str] = "pause_task"
    description: ClassVar[str] = "Pause a scheduled task."

    def apply(self, conn: Connection, ctx: ToolContext, task: tasks.Task, args: dict[str, Any]) -> str:
        tasks.update_task(conn, task.id, status="paused")
        return f"Task {task.id} paused."


class ResumeTaskTool(_ManageTaskTool):
    name: ClassVar[str] = "resume_task"
    description: ClassVar[str] = "Resume a paused task (its next run time is unchanged)."

    def apply(self, conn: Connection, ctx: ToolContext, task: tasks.Task, args: dict[str, Any]) -> str:
        if task.status != "active":
            self.env.check_capacity(conn, ctx, self.name, task.group_folder)
        tasks.update_task(conn, task.id, status="active")
        return f"Task {task.id} resumed."


class CancelTaskTool(_ManageTaskTool):
    name: ClassVar[str] = "cancel_task"
    description: ClassVar[str] = "Cancel (delete) a scheduled task and its run history."

    def apply(self, conn: Connection, ctx: ToolContext, task: tasks.Task, args: dict[str, Any]) -> str:
        tasks.delete_task(conn, task.id)
        return f"Task {task.id} cancelled."


class UpdateTaskTool(_ManageTaskTool):
    name: ClassVar[str] = "update_task"
    description: ClassVar[str] = (
        "Change a task's prompt, script or schedule; a new cron/interval schedule counts from now."
    )
    input_schema: ClassVar[dict[str, Any]] = _object(
        {
            "task_id": {"type": "string"},
            "prompt": {"type": "string"},
            "schedule_type": {"type": "string", "enum": ["cron", "interval", "once"]},
            "schedule_value": {"type": "string"},
            "script": {"type": "string"},
        },
        ["task_id"],
    )

    def apply(self, conn: Connection, ctx: ToolContext, task: tasks.Task, args: dict[str, Any]) -> str:
        patch: dict[str, Any] = {k: args[k] for k in ("prompt", "script") if k in args}
        if "schedule_type" in args or "schedule_value" in args:
            kind = args.get("schedule_type", task.schedule_type)
            value = args.get("schedule_value", task.schedule_value).strip()
            try:
                first = first_run(kind, value, self.env.clock(), self.env.timezone)
            except ValueError as exc:
                raise ToolError(f"invalid schedule: {exc}") from None
            self.env.check_frequency(ctx, self.name, kind, value)
            patch.update(schedule_type=kind, schedule_value=value)
            if kind != "once":  # NanoClaw: once is not recomputed on update
                patch["next_run"] = iso(first)
        if not patch:
            raise ToolError("nothing to update: give prompt, script, schedule_type or schedule_value")
        tasks.update_task(conn, task.id, **patch)
        return f"Task {task.id} updated ({', '.join(sorted(patch))})."


class RegisterGroupTool(_HostTool):
    name: ClassVar[str] = "register_group"
    description: ClassVar[str] = (
        "Main group only: register a chat as a group the assistant serves. folder: letters, digits, "
        "'-' and '_' (convention <channel>_<name>)."
    )
    input_schema: ClassVar[dict[str, Any]] = _object(
        {
            "jid": {"type": "string"},
            "name": {"type": "string"},
            "folder": {"type": "string"},
            "trigger": {"type": "string"},
            "requires_trigger": {"type": "boolean"},
        },
        ["jid", "name", "folder", "trigger"],
    )

    def run(self, ctx: ToolContext, args: dict[str, Any]) -> str:
        if not can_manage_groups(ctx.is_main):
            raise _deny(ctx, "register_group", "only the main group may register groups")
        folder = args["folder"]
        if not is_valid_group_folder(folder):
            raise ToolError(f"invalid folder {folder!r}")
        with write_tx(self.env.engine) as conn:
            self.env.fence(conn, ctx)
            existing = groups.get_group(conn, args["jid"])
            try:
                groups.register_group(
                    conn,
                    jid=args["jid"],
                    name=args["name"],
                    folder=folder,
                    trigger=args["trigger"],
                    requires_trigger=bool(args.get("requires_trigger", False)),
                    is_main=bool(existing and existing.is_main),  # registering never grants main
                    container_config=existing.container_config if existing else None,
                )
            except ValueError as exc:  # the folder is another chat's: nothing was written
                raise ToolError(str(exc)) from None
            audit.record(
                conn, "agent.register_group", chat_jid=ctx.chat_jid, decision="allow", jid=args["jid"]
            )
        try:
            safefs.ensure_dir(self.env.groups_dir, [folder, "logs"])
        except UnsafePath as exc:  # the toolbox audits the denial; the model hears why
            logger.warning("refused group folder %s: %s", exc.path, exc.problem, extra={"group": folder})
            exc.group = folder
            raise
        return f"Group {args['name']} registered ({args['jid']} -> {folder})."


class RefreshGroupsTool(_HostTool):
    name: ClassVar[str] = "refresh_groups"
    description: ClassVar[str] = "Main group only: list known group chats and whether each is registered."
    input_schema: ClassVar[dict[str, Any]] = _object({}, [])

    def run(self, ctx: ToolContext, args: dict[str, Any]) -> str:
        if not can_manage_groups(ctx.is_main):
            raise _deny(ctx, "refresh_groups", "only the main group may refresh groups")
        with read_tx(self.env.engine) as conn:
            registered = groups.registered_folders(conn)
            chats = [c for c in messages.get_all_chats(conn) if c.is_group and c.jid != "__group_sync__"]
        lines = [
            f"- {c.jid} ({c.name}) last activity {c.last_message_time or 'unknown'}"
            f"{' [registered: ' + registered[c.jid] + ']' if c.jid in registered else ''}"
            for c in chats
        ]
        return "\n".join(lines) if lines else "No group chats known yet."


class ClaimDeviceTool(_HostTool):
    name: ClassVar[str] = "claim_device"
    description: ClassVar[str] = (
        "Main group only: pair the device (an ESP32-S3 terminal) that shows this pairing code, "
        "giving it a name; the device then fetches its certificate and its chat dev:<id> becomes a "
        "group. Only claim a code the user read off their own device."
    )
    input_schema: ClassVar[dict[str, Any]] = _object(
        {
            "code": {"type": "string", "description": "The code on the device's screen, e.g. ABCD-EFGH."},
            "name": {"type": "string", "description": "A name for the device (1-64 characters)."},
        },
        ["code", "name"],
    )

    def run(self, ctx: ToolContext, args: dict[str, Any]) -> str:
        if not can_claim_devices(ctx.is_main):
            raise _deny(ctx, "claim_device", "only the main group may claim devices")
        name = args["name"].strip()
        if not name or len(name) > 64:
            raise ToolError("name must be 1-64 characters")
        code = args["code"].strip()
        if not code or len(code) > 32:
            raise ToolError("code must be 1-32 characters (as shown on the device)")
        with write_tx(self.env.engine) as conn:
            self.env.fence(conn, ctx)
            row, refusal = record_claim(
                conn, code, name=name, now_ms=now_ms(), chat_jid=ctx.chat_jid, via="agent"
            )
        if refusal is not None:
            raise ToolError(f"{refusal.detail} ({refusal.code})")
        assert row is not None
        return f"Claimed: device {row.device_id} will pair as {name!r} when it next asks."


HOST_TOOLS: tuple[type[_HostTool], ...] = (
    SendMessageTool,
    ScheduleTaskTool,
    ListTasksTool,
    PauseTaskTool,
    ResumeTaskTool,
    CancelTaskTool,
    UpdateTaskTool,
    RegisterGroupTool,
    RefreshGroupsTool,
    ClaimDeviceTool,
)


def host_tools(env: HostEnv) -> list[BaseTool]:
    """One instance of every host tool, bound to ``env``."""
    return [cls(env) for cls in HOST_TOOLS]
