"""The app database schema: SQLAlchemy 2 models, a superset of NanoClaw's tables.

NanoClaw's tables keep their names, columns and defaults (`chats`, `messages`,
`registered_groups`, `scheduled_tasks`, `task_run_logs`, `router_state`, `sessions`) so an
import is a copy, not a translation. MicroClaw adds: a monotonic `seq` on messages (cursors are
sequence numbers, never timestamps), per-group router state, leases with fencing tokens, runs,
the claimed-task queue, the outbox, the audit log, connector status, beat state, worker
heartbeats, component readiness, and paired devices with their pairing attempts. Times that
MicroClaw owns are integer milliseconds since the epoch (`*_ms`).

Alembic migrations under `alembic/versions/` create exactly these tables; a test compares them.
This module holds no queries; `table_of` hands repositories a typed `Table` for building them.
"""

from __future__ import annotations

from sqlalchemy import (
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy import (
    text as sql_text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


# --- NanoClaw tables (same names and columns) -------------------------------------------


class Chat(Base):
    __tablename__ = "chats"
    jid: Mapped[str] = mapped_column(Text, primary_key=True)
    name: Mapped[str | None] = mapped_column(Text)
    last_message_time: Mapped[str | None] = mapped_column(Text)
    channel: Mapped[str | None] = mapped_column(Text)
    is_group: Mapped[int | None] = mapped_column(Integer, server_default=sql_text("0"))


class Message(Base):
    __tablename__ = "messages"
    # MicroClaw stores the envelope's globally unique message_id here ("tg:<chat>:<msg>").
    id: Mapped[str] = mapped_column(Text, primary_key=True)
    chat_jid: Mapped[str] = mapped_column(Text, ForeignKey("chats.jid"), primary_key=True)
    sender: Mapped[str | None] = mapped_column(Text)
    sender_name: Mapped[str | None] = mapped_column(Text)
    content: Mapped[str | None] = mapped_column(Text)
    timestamp: Mapped[str | None] = mapped_column(Text)
    is_from_me: Mapped[int | None] = mapped_column(Integer)
    is_bot_message: Mapped[int | None] = mapped_column(Integer, server_default=sql_text("0"))
    reply_to_message_id: Mapped[str | None] = mapped_column(Text)
    reply_to_message_content: Mapped[str | None] = mapped_column(Text)
    reply_to_sender_name: Mapped[str | None] = mapped_column(Text)
    # MicroClaw: the global, monotonic arrival order; cursors compare this, never timestamps.
    seq: Mapped[int] = mapped_column(Integer, nullable=False, unique=True)
    received_at_ms: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (
        Index("idx_timestamp", "timestamp"),
        Index("ix_messages_chat_jid_seq", "chat_jid", "seq"),
    )


class RegisteredGroup(Base):
    __tablename__ = "registered_groups"
    jid: Mapped[str] = mapped_column(Text, primary_key=True)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    folder: Mapped[str] = mapped_column(Text, nullable=False, unique=True)
    trigger_pattern: Mapped[str] = mapped_column(Text, nullable=False)
    added_at: Mapped[str] = mapped_column(Text, nullable=False)
    container_config: Mapped[str | None] = mapped_column(Text)
    requires_trigger: Mapped[int | None] = mapped_column(Integer, server_default=sql_text("1"))
    is_main: Mapped[int | None] = mapped_column(Integer, server_default=sql_text("0"))


class ScheduledTask(Base):
    __tablename__ = "scheduled_tasks"
    id: Mapped[str] = mapped_column(Text, primary_key=True)
    group_folder: Mapped[str] = mapped_column(Text, nullable=False)
    chat_jid: Mapped[str] = mapped_column(Text, nullable=False)
    prompt: Mapped[str] = mapped_column(Text, nullable=False)
    schedule_type: Mapped[str] = mapped_column(Text, nullable=False)
    schedule_value: Mapped[str] = mapped_column(Text, nullable=False)
    next_run: Mapped[str | None] = mapped_column(Text)
    last_run: Mapped[str | None] = mapped_column(Text)
    last_result: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str | None] = mapped_column(Text, server_default=sql_text("'active'"))
    created_at: Mapped[str] = mapped_column(Text, nullable=False)
    context_mode: Mapped[str | None] = mapped_column(Text, server_default=sql_text("'isolated'"))
    script: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("idx_next_run", "next_run"), Index("idx_status", "status"))


class TaskRunLog(Base):
    __tablename__ = "task_run_logs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(Text, ForeignKey("scheduled_tasks.id"), nullable=False)
    run_at: Mapped[str] = mapped_column(Text, nullable=False)
    duration_ms: Mapped[int] = mapped_column(Integer, nullable=False)
    status: Mapped[str] = mapped_column(Text, nullable=False)
    result: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("idx_task_run_logs", "task_id", "run_at"),)


class RouterState(Base):
    __tablename__ = "router_state"
    key: Mapped[str] = mapped_column(Text, primary_key=True)
    value: Mapped[str] = mapped_column(Text, nullable=False)


class SessionRow(Base):
    __tablename__ = "sessions"
    group_folder: Mapped[str] = mapped_column(Text, primary_key=True)
    session_id: Mapped[str] = mapped_column(Text, nullable=False)


# --- MicroClaw tables ---------------------------------------------------------------------


class GroupState(Base):
    """Per-group router state: cursors, retry backoff and the coalesced-kick flag."""

    __tablename__ = "group_state"
    chat_jid: Mapped[str] = mapped_column(Text, primary_key=True)
    # Last seq fed to the agent (NanoClaw's lastAgentTimestamp, as a sequence number).
    cursor_seq: Mapped[int] = mapped_column(Integer, nullable=False, server_default=sql_text("0"))
    # Last seq the router has evaluated (trigger-checked); untriggered chatter stays as context.
    seen_seq: Mapped[int] = mapped_column(Integer, nullable=False, server_default=sql_text("0"))
    retry_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default=sql_text("0"))
    retry_at_ms: Mapped[int | None] = mapped_column(Integer)
    # When a kick was published and not yet picked up (NULL: none outstanding).
    kick_requested_ms: Mapped[int | None] = mapped_column(Integer)


class Lease(Base):
    """One row per leased resource ("group:<jid>", "outbox:<jid>"): holder, fencing token, expiry."""

    __tablename__ = "leases"
    name: Mapped[str] = mapped_column(Text, primary_key=True)
    holder: Mapped[str | None] = mapped_column(Text)
    token: Mapped[int] = mapped_column(Integer, nullable=False, server_default=sql_text("0"))
    expires_at_ms: Mapped[int] = mapped_column(Integer, nullable=False, server_default=sql_text("0"))
    acquired_at_ms: Mapped[int | None] = mapped_column(Integer)


class Run(Base):
    """One agent run for a group: what it consumed, and whether anything reached the user."""

    __tablename__ = "runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    chat_jid: Mapped[str] = mapped_column(Text, nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)  # "messages" | "task"
    task_run_id: Mapped[int | None] = mapped_column(Integer)
    lease_token: Mapped[int] = mapped_column(Integer, nullable=False)
    prev_cursor_seq: Mapped[int] = mapped_column(Integer, nullable=False, server_default=sql_text("0"))
    prev_seen_seq: Mapped[int] = mapped_column(Integer, nullable=False, server_default=sql_text("0"))
    to_seq: Mapped[int] = mapped_column(Integer, nullable=False, server_default=sql_text("0"))
    message_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default=sql_text("0"))
    status: Mapped[str] = mapped_column(String(16), nullable=False)  # running | done | failed | abandoned
    started_at_ms: Mapped[int] = mapped_column(Integer, nullable=False)
    # Wall-clock with sub-millisecond precision, for overlap checks across processes.
    started_at: Mapped[float] = mapped_column(Float, nullable=False)
    finished_at: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    worker: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_runs_chat_jid_status", "chat_jid", "status"),)


class TaskQueueEntry(Base):
    """A due scheduled-task run, claimed by the beat tick exactly once per (task, slot)."""

    __tablename__ = "task_queue"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(Text, nullable=False)
    chat_jid: Mapped[str] = mapped_column(Text, nullable=False)
    scheduled_for: Mapped[str] = mapped_column(Text, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)  # pending | running | done
    claimed_at_ms: Mapped[int] = mapped_column(Integer, nullable=False)
    finished_at_ms: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (
        UniqueConstraint("task_id", "scheduled_for"),
        Index("ix_task_queue_chat_jid_status", "chat_jid", "status"),
    )


class OutboxEntry(Base):
    """A reply to deliver. Written before anything is sent; delivered at most once."""

    __tablename__ = "outbox"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    idempotency_key: Mapped[str] = mapped_column(Text, nullable=False, unique=True)
    chat_jid: Mapped[str] = mapped_column(Text, nullable=False)
    text: Mapped[str] = mapped_column(Text, nullable=False)
    run_id: Mapped[int | None] = mapped_column(Integer)
    # pending | sending | delivered | failed | uncertain | discarded (by an operator)
    status: Mapped[str] = mapped_column(String(16), nullable=False, server_default=sql_text("'pending'"))
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default=sql_text("0"))
    next_attempt_at_ms: Mapped[int] = mapped_column(Integer, nullable=False, server_default=sql_text("0"))
    created_at_ms: Mapped[int] = mapped_column(Integer, nullable=False)
    claimed_at_ms: Mapped[int | None] = mapped_column(Integer)
    delivered_at_ms: Mapped[int | None] = mapped_column(Integer)
    platform_message_id: Mapped[str | None] = mapped_column(Text)
    last_error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_outbox_status_chat_jid", "status", "chat_jid"),)


class AuditEntry(Base):
    """Policy and tool decisions, rejected input, dropped work: one row each."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ts_ms: Mapped[int] = mapped_column(Integer, nullable=False)
    kind: Mapped[str] = mapped_column(Text, nullable=False)  # e.g. "envelope.rejected"
    chat_jid: Mapped[str | None] = mapped_column(Text)
    message_id: Mapped[str | None] = mapped_column(Text)
    decision: Mapped[str | None] = mapped_column(Text)  # allow | deny | drop | error
    detail: Mapped[str | None] = mapped_column(Text)  # JSON

    __table_args__ = (Index("ix_audit_log_kind_ts_ms", "kind", "ts_ms"),)


class ConnectorStatus(Base):
    __tablename__ = "connector_status"
    name: Mapped[str] = mapped_column(Text, primary_key=True)
    state: Mapped[str] = mapped_column(Text, nullable=False)  # active | skipped | error | stopped
    detail: Mapped[str | None] = mapped_column(Text)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_event_at_ms: Mapped[int | None] = mapped_column(Integer)
    updated_at_ms: Mapped[int] = mapped_column(Integer, nullable=False)


class BeatState(Base):
    """Celery beat's schedule state (last run per entry), instead of a shelve file."""

    __tablename__ = "beat_state"
    name: Mapped[str] = mapped_column(Text, primary_key=True)
    last_run_at: Mapped[float] = mapped_column(Float, nullable=False)
    total_run_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default=sql_text("0"))


class WorkerHeartbeat(Base):
    """Liveness of Celery processes (broadcast inspection does not work on the SQLite broker)."""

    __tablename__ = "worker_heartbeats"
    name: Mapped[str] = mapped_column(Text, primary_key=True)
    role: Mapped[str] = mapped_column(Text, nullable=False)
    pid: Mapped[int] = mapped_column(Integer, nullable=False)
    started_at_ms: Mapped[int] = mapped_column(Integer, nullable=False)
    last_seen_ms: Mapped[int] = mapped_column(Integer, nullable=False)


class ComponentStatus(Base):
    """Readiness of a component that is not a connector (the sandbox), written by its own process.

    ``detail`` is JSON (reason, backend, image, worker, ...); a row whose ``updated_at_ms`` is
    older than a few of its reporting intervals means the process stopped reporting.
    """

    __tablename__ = "component_status"
    name: Mapped[str] = mapped_column(Text, primary_key=True)
    state: Mapped[str] = mapped_column(Text, nullable=False)  # ready | unavailable | stopped
    detail: Mapped[str | None] = mapped_column(Text)
    updated_at_ms: Mapped[int] = mapped_column(Integer, nullable=False)


class SessionTurn(Base):
    """One turn of a group's agent conversation (``sessions.session_id`` names the live one).

    ``role`` is user / assistant / tool; ``tool_calls`` is JSON (assistant turns that asked for
    tools); ``tokens`` is the estimate compaction budgets with.
    """

    __tablename__ = "session_turns"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(Text, nullable=False)
    role: Mapped[str] = mapped_column(String(16), nullable=False)
    content: Mapped[str] = mapped_column(Text, nullable=False)
    tool_call_id: Mapped[str | None] = mapped_column(Text)
    tool_calls: Mapped[str | None] = mapped_column(Text)
    is_error: Mapped[int] = mapped_column(Integer, nullable=False, server_default=sql_text("0"))
    tokens: Mapped[int] = mapped_column(Integer, nullable=False, server_default=sql_text("0"))
    created_at_ms: Mapped[int] = mapped_column(Integer, nullable=False)

    __table_args__ = (Index("ix_session_turns_session_id_id", "session_id", "id"),)


class AgentUsage(Base):
    """Tokens and cost of one agent run, per group and UTC day (spend control)."""

    __tablename__ = "agent_usage"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int | None] = mapped_column(Integer)
    chat_jid: Mapped[str] = mapped_column(Text, nullable=False)
    group_folder: Mapped[str] = mapped_column(Text, nullable=False)
    day: Mapped[str] = mapped_column(Text, nullable=False)  # YYYY-MM-DD, UTC
    model: Mapped[str | None] = mapped_column(Text)
    steps: Mapped[int] = mapped_column(Integer, nullable=False, server_default=sql_text("0"))
    input_tokens: Mapped[int] = mapped_column(Integer, nullable=False, server_default=sql_text("0"))
    output_tokens: Mapped[int] = mapped_column(Integer, nullable=False, server_default=sql_text("0"))
    cost: Mapped[float] = mapped_column(Float, nullable=False, server_default=sql_text("0"))
    created_at_ms: Mapped[int] = mapped_column(Integer, nullable=False)

    __table_args__ = (Index("ix_agent_usage_group_folder_day", "group_folder", "day"),)


class Device(Base):
    """A paired terminal: its client certificate's serial and SHA-256 fingerprint (the gateway
    refuses any other certificate for this id), its chat, and what it last reported.

    ``status`` is ``active`` or ``revoked``; a revoked row keeps its fingerprint so the old
    certificate stays refused, and pairing again replaces both.
    """

    __tablename__ = "devices"
    device_id: Mapped[str] = mapped_column(Text, primary_key=True)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    chat_jid: Mapped[str] = mapped_column(Text, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    cert_serial: Mapped[str] = mapped_column(Text, nullable=False)
    cert_fingerprint: Mapped[str] = mapped_column(Text, nullable=False)
    paired_at_ms: Mapped[int] = mapped_column(Integer, nullable=False)
    revoked_at_ms: Mapped[int | None] = mapped_column(Integer)
    online: Mapped[int] = mapped_column(Integer, nullable=False, server_default=sql_text("0"))
    last_seen_ms: Mapped[int | None] = mapped_column(Integer)
    fw_version: Mapped[str | None] = mapped_column(Text)
    model_version: Mapped[str | None] = mapped_column(Text)
    capabilities: Mapped[str | None] = mapped_column(Text)  # JSON list
    board: Mapped[str | None] = mapped_column(Text)  # from device.hello; OTA matches it


class DevicePairing(Base):
    """One pairing attempt: the code a device shows, its claim by the user, and the single-use
    token the device then trades for a certificate. Secrets are stored as SHA-256 hashes."""

    __tablename__ = "device_pairings"
    code: Mapped[str] = mapped_column(Text, primary_key=True)
    device_id: Mapped[str] = mapped_column(Text, nullable=False)
    secret_hash: Mapped[str] = mapped_column(Text, nullable=False)
    created_at_ms: Mapped[int] = mapped_column(Integer, nullable=False)
    expires_at_ms: Mapped[int] = mapped_column(Integer, nullable=False)
    claimed_at_ms: Mapped[int | None] = mapped_column(Integer)
    name: Mapped[str | None] = mapped_column(Text)
    token_hash: Mapped[str | None] = mapped_column(Text)
    token_expires_at_ms: Mapped[int | None] = mapped_column(Integer)
    used_at_ms: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (Index("ix_device_pairings_device_id", "device_id"),)


class OtaRelease(Base):
    """A published firmware image or model bundle: its signed manifest (canonical JSON and the
    detached ed25519 signature, base64), its rollout (percent, the stages it went through as a
    JSON list) and whether it is halted and why."""

    __tablename__ = "ota_releases"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    board: Mapped[str] = mapped_column(Text, nullable=False)
    version: Mapped[str] = mapped_column(Text, nullable=False)
    sha256: Mapped[str] = mapped_column(Text, nullable=False)
    size: Mapped[int] = mapped_column(Integer, nullable=False)
    min_version: Mapped[str] = mapped_column(Text, nullable=False)
    manifest: Mapped[str] = mapped_column(Text, nullable=False)
    signature: Mapped[str] = mapped_column(Text, nullable=False)
    public_key: Mapped[str] = mapped_column(Text, nullable=False)  # hex, of the signing key
    percent: Mapped[float] = mapped_column(Float, nullable=False, server_default=sql_text("0"))
    stages: Mapped[str] = mapped_column(Text, nullable=False, server_default=sql_text("'[]'"))
    halted: Mapped[int] = mapped_column(Integer, nullable=False, server_default=sql_text("0"))
    halt_reason: Mapped[str | None] = mapped_column(Text)
    halted_at_ms: Mapped[int | None] = mapped_column(Integer)
    created_at_ms: Mapped[int] = mapped_column(Integer, nullable=False)
    updated_at_ms: Mapped[int] = mapped_column(Integer, nullable=False)

    __table_args__ = (UniqueConstraint("kind", "board", "version"),)


class OtaResult(Base):
    """What a device reported after installing a release (its latest report counts): ``ok``
    as reported, ``counted_ok`` after the canary limits, the cohort stage it belongs to."""

    __tablename__ = "ota_results"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    release_id: Mapped[int] = mapped_column(ForeignKey("ota_releases.id"), nullable=False)
    device_id: Mapped[str] = mapped_column(Text, nullable=False)
    ok: Mapped[int] = mapped_column(Integer, nullable=False)
    counted_ok: Mapped[int] = mapped_column(Integer, nullable=False)
    reason: Mapped[str | None] = mapped_column(Text)
    metrics: Mapped[str | None] = mapped_column(Text)  # JSON object
    stage: Mapped[float | None] = mapped_column(Float)
    reported_at_ms: Mapped[int] = mapped_column(Integer, nullable=False)

    __table_args__ = (UniqueConstraint("release_id", "device_id"),)


def table_of(model: type[Base]) -> Table:
    """The model's `Table`, typed as one.

    ``Model.__table__`` is typed as a ``FromClause``, which ``insert``/``update``/``delete``
    reject under a type checker; the metadata's entry is the same object, typed ``Table``.
    """
    return Base.metadata.tables[model.__tablename__]
