"""Persistence: SQLAlchemy models, engine set-up, migrations and one repository per table family.

`db` holds engines, transactions (`write_tx` / `read_tx`), lock retries and `migrate`; `models`
the schema (no queries). Every table has exactly one owning module, and only that module holds
SQL for it; everything else calls the owner's functions inside a transaction it opened:

    table                                            owner
    -----------------------------------------------  ------------------------------------
    chats, messages                                  store.messages
    registered_groups, group_state, router_state*    store.groups
    scheduled_tasks, task_run_logs                   store.tasks
    task_queue                                       store.task_queue
    runs                                             store.runs
    outbox                                           store.outbox
    audit_log                                        store.audit
    sessions, session_turns                          store.sessions
    agent_usage                                      store.usage
    connector_status, component_status,              store.status
      worker_heartbeats, beat_state
    devices, device_pairings                         store.devices
    ota_releases, ota_results                        store.ota
    leases                                           microclaw.pipeline.leases (see below)

    * NanoClaw's table, kept for parity and unused: MicroClaw's cursors live in group_state.

Two deliberate exceptions. ``leases`` is owned by `microclaw.pipeline.leases`: its statements
are the lease protocol itself (acquire, fence, release, liveness), which the architecture places
in the pipeline. `microclaw.importer.nanoclaw` copies a NanoClaw database into NanoClaw's
tables in bulk with statements of its own (a one-off migration tool, not a running process).

Hot statements are prebuilt ``text()``: building SQLAlchemy Core expressions per call cost ~4x
executing them (docs/architecture.md, "SQLite, measured"). Repositories decide no policy and
run inside the caller's transaction (`audit.record_now` alone opens its own).
"""
