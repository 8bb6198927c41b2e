"""``microclaw-worker``: MicroClaw's Celery worker (and beat) without the ``celery`` umbrella command.

``celery -A workers.app worker`` imports every installed Celery CLI plugin before it starts:
flower (with tornado and prometheus_client), click-repl (with prompt_toolkit) and redis, about
20 MB of memory and a few tenths of a CPU-second in each process that never uses them. This
runs Celery's own ``worker`` command (and ``beat``) on `workers.app.app` directly:

- ``microclaw-worker [celery worker options]`` is ``celery -A workers.app worker [options]``;
- ``microclaw-worker beat [celery beat options]`` is ``celery -A workers.app beat [options]``.

``celery -A workers.app ...`` keeps working for everything else (inspect, control, flower).
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    from celery.bin.base import CLIContext

    if args[:1] == ["beat"]:
        from celery.bin.beat import beat as command

        kind, args, prog = "beat", args[1:], "microclaw-worker beat"
    else:
        from celery.bin.worker import worker as command

        kind, prog = "worker", "microclaw-worker"
    from workers.app import app

    command.params.extend(app.user_options.get(kind, []))
    command.main(args=args, prog_name=prog, obj=CLIContext(app=app, no_color=False, workdir=None))


if __name__ == "__main__":
    main()
