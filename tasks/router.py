"""``microclaw.kick``: drain one group's pending work under its lease (see `microclaw.pipeline.router`)."""

from __future__ import annotations

from typing import Any

from microclaw.errors import TransientStoreError
from microclaw.pipeline.router import process_group
from microclaw.runtime import queues
from workers.app import app
from workers.context import context


@app.task(name=queues.KICK, ignore_result=True, bind=True, max_retries=5)
def kick(self: Any, chat_jid: str) -> str:
    try:
        return process_group(context().router_deps, chat_jid)
    except TransientStoreError as exc:  # database busy for 30 s: try again shortly
        raise self.retry(exc=exc, countdown=1) from exc
