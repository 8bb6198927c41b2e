"""The sweeper: finds work whose wake-up was lost and wakes it again.

Celery carries only idempotent wake-ups, and on the SQLite broker a SIGKILLed worker loses the
messages it had reserved. So beat runs `sweep()` every few seconds; it returns:
- groups to kick: pending work (new messages, a due retry, a claimed task, a run left
  ``running`` by a dead holder) and no live lease, whose kick is not already outstanding or was
  requested longer than ``stale_after_ms`` ago; a group whose lease holder is provably gone
  (`leases.reclaim`: a killed process on this host) has its lease freed and is kicked at once,
  without waiting out the lease TTL or the outstanding kick (which the dead holder may have
  dropped as "busy");
- chats to deliver: a due pending reply and no live outbox lease.
It marks the kicks it asks for as outstanding. "Pending work" is the router's own
`has_pending` rule; the rows it looks at are read through their owners in `microclaw.store`.
Publishing is the caller's job.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine

from microclaw.pipeline import leases
from microclaw.pipeline.router import has_pending
from microclaw.store import groups, outbox, runs, task_queue
from microclaw.store.db import now_ms, write_tx


@dataclass(frozen=True)
class SweepResult:
    kick: list[str]
    deliver: list[str]


def sweep(engine: Engine, *, stale_after_ms: int) -> SweepResult:
    """Decide which groups to re-kick and which chats to re-deliver."""
    now = now_ms()
    to_kick: list[str] = []
    to_deliver: list[str] = []
    with write_tx(engine) as conn:
        candidates = groups.chats_with_state(conn)
        candidates |= task_queue.chats_with_open(conn)
        candidates |= runs.chats_with_running(conn)
        for chat in sorted(candidates):
            reclaimed = leases.reclaim(conn, leases.group_lease(chat))
            if not reclaimed and leases.is_live(conn, leases.group_lease(chat), now_ms=now):
                continue
            state = groups.get_state(conn, chat)
            stranded = runs.has_running(conn, chat)
            if not (stranded or has_pending(conn, chat, state, now)):
                continue
            # A request "in the future" means the clock stepped back: treat it as stale.
            asked = state.kick_requested_ms
            outstanding = asked is not None and 0 <= now - asked < stale_after_ms
            if outstanding and not reclaimed:
                continue
            groups.set_state(conn, chat, kick_requested_ms=now)
            to_kick.append(chat)
        for chat in outbox.chats_with_due(
            conn, now, stale_after_ms=stale_after_ms
        ) + outbox.chats_with_stranded(conn, now - stale_after_ms):
            if chat not in to_deliver and not leases.is_live(conn, leases.outbox_lease(chat), now_ms=now):
                to_deliver.append(chat)
    return SweepResult(to_kick, to_deliver)
