"""Processes and their wiring: imported only by entry points (the CLI, ``workers/``, ``tasks/``).

`wiring` is the one composition root (settings -> engine, connectors, router and delivery
dependencies, the agent, the sandbox service); `queues` names every queue and task;
`celery_app` builds the Celery app and publishes wake-ups; `host` is the host process
(connector loops, the localhost HTTP surface of `control`); `status` builds the status
snapshot and the health verdict; `smoke` pushes one message through the whole path offline.
"""
