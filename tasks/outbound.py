"""``microclaw.deliver``: send one chat's pending replies in order (see `microclaw.pipeline.delivery`)."""

from __future__ import annotations

from typing import Any

from microclaw.errors import TransientStoreError
from microclaw.pipeline.delivery import deliver_chat
from microclaw.runtime import queues
from workers.app import app
from workers.context import context


@app.task(name=queues.DELIVER, ignore_result=True, bind=True, max_retries=5)
def deliver(self: Any, chat_jid: str) -> str:
    try:
        return deliver_chat(context().delivery_deps, chat_jid)
    except TransientStoreError as exc:
        raise self.retry(exc=exc, countdown=1) from exc
