"""The durable path of one message, from a connector to a reply sent exactly once.

```
connector (host) --Envelope--> inbound.ingest: store once + flag the group --> publish kick(group)
worker: router.process_group(group)
          leases.acquire(group) -> due task runs first, then messages since the cursor
          -> trigger policy (core/) -> prompt -> agent (agent/, tools in sandbox/)
          -> reply -> outbox row, in the transaction that finishes the run (fenced by the lease)
          -> leases.release(group) only after proving nothing is pending
outbound worker: delivery.deliver_chat(chat) under the chat's outbox lease -> connector.send
beat: sweeper.sweep re-kicks groups and chats whose wake-up was lost
```

Modules: `inbound` (storing an envelope and waking its group), `leases` (fenced database
leases and the renewal thread that keeps one alive while an agent runs), `router` (draining one
group: choosing work, running it, finishing it; orchestration only, its SQL lives in `store/`
and what happens to a task after its run in `scheduler/`), `delivery` (sending one chat's
outbox in order, at most once), `sweeper` (finding lost wake-ups and stranded replies).

Nothing here talks to Celery or a platform directly: publishing is a callback, the agent is a
callable, connectors are handed in. The database, not the broker, is the source of truth.
"""
