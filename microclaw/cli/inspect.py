"""``microclaw-host why`` and ``microclaw-host replies``: read the story of a message from the
database, and act on replies that failed or are uncertain. They need the database only, not a
running host. The work is `microclaw.runtime.why`'s and `microclaw.runtime.replies`'s.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

import click
from rich.table import Table
from sqlalchemy import Engine

from microclaw.cli.common import console, fail, load_settings_or_exit
from microclaw.config import Settings
from microclaw.logs import configure_logging


@contextmanager
def _engine(settings: Settings) -> Iterator[Engine]:
    from microclaw.runtime.wiring import app_engine, bootstrap_database

    bootstrap_database(settings)
    engine = app_engine(settings)
    try:
        yield engine
    finally:
        engine.dispose()


@click.command(help="Tell what happened to a message: stored, triggered, run, replied (or where it stopped).")
@click.argument("message_id", required=False)
@click.option("--chat", "chat_jid", help="Find the message in this chat (with --text).")
@click.option("--text", "substring", help="A piece of the message's text (case-insensitive).")
@click.option("--json", "as_json", is_flag=True, help="Print the story as JSON.")
def why(message_id: str | None, chat_jid: str | None, substring: str | None, as_json: bool) -> None:
    from microclaw.runtime.why import explain, find

    settings = load_settings_or_exit()
    configure_logging("WARNING", "text")
    if not message_id and not (chat_jid and substring):
        fail("give a MESSAGE_ID, or --chat JID and --text SUBSTRING to find it", code=2)
    with _engine(settings) as engine:
        if not message_id:
            assert chat_jid and substring
            found = find(engine, chat_jid, substring)
            if not found:
                fail(f"no message in {chat_jid} contains {substring!r}")
            message_id = found[0]
            if len(found) > 1 and not as_json:
                console.print(f"[dim]{len(found)} messages match; the newest is told ({', '.join(found)})[/]")
        story = explain(engine, message_id, default_trigger=settings.trigger)
    if as_json:
        console.print_json(json.dumps(story.as_dict()))
        return
    console.print(f"[bold]{story.message_id}[/] ({story.chat_jid or 'chat unknown'})")
    for step in story.steps:
        console.print(f"  {step.as_dict()['at']}  {step.what}", highlight=False)
    console.print(f"[bold]{story.outcome}[/]: {story.verdict}", highlight=False)
    if story.next_step:
        console.print(f"next: {story.next_step}", highlight=False)


@click.group(help="Replies that failed or are uncertain: list, retry, discard (audited).")
def replies() -> None:
    pass


@replies.command("list", help="List failed and uncertain replies.")
@click.option("--json", "as_json", is_flag=True)
def list_replies(as_json: bool) -> None:
    from microclaw.runtime.replies import problem_replies
    from microclaw.runtime.why import stamp

    settings = load_settings_or_exit()
    configure_logging("WARNING", "text")
    with _engine(settings) as engine:
        rows = problem_replies(engine)
    if as_json:
        console.print_json(json.dumps(rows))
        return
    if not rows:
        console.print("no failed or uncertain replies")
        return
    table = Table(title="replies needing a decision")
    for col in ("id", "status", "chat", "created", "attempts", "last error", "text"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            str(r["id"]),
            str(r["status"]),
            str(r["chat_jid"]),
            stamp(r["created_at_ms"]),
            str(r["attempts"]),
            str(r["last_error"] or ""),
            str(r["preview"]),
        )
    console.print(table)
    console.print("retry: microclaw-host replies retry ID    discard: microclaw-host replies discard ID")


@replies.command("retry", help="Send a failed or uncertain reply again.")
@click.argument("reply_id", type=int)
def retry(reply_id: int) -> None:
    from microclaw.runtime.replies import ReplyActionError, retry_reply

    settings = load_settings_or_exit()
    configure_logging("WARNING", "text")
    with _engine(settings) as engine:
        try:
            # No publish from here (a broker that is down must not hang the CLI): the sweeper
            # finds the row due within sweep_interval_s and hands it to the outbound worker.
            chat = retry_reply(engine, reply_id)
        except ReplyActionError as exc:
            fail(str(exc))
    console.print(f"reply #{reply_id} queued again for {chat}; the outbound worker sends it within seconds")


@replies.command("discard", help="Close a failed or uncertain reply without sending it.")
@click.argument("reply_id", type=int)
def discard(reply_id: int) -> None:
    from microclaw.runtime.replies import ReplyActionError, discard_reply

    settings = load_settings_or_exit()
    configure_logging("WARNING", "text")
    with _engine(settings) as engine:
        try:
            chat = discard_reply(engine, reply_id)
        except ReplyActionError as exc:
            fail(str(exc))
    console.print(f"reply #{reply_id} for {chat} discarded")


@click.command(
    help="Check every precondition (Python, data dir, database, broker, Docker, sandbox, "
    "connectors, provider, clock, disk, allowlists); exit 1 when one fails."
)
@click.option("--json", "as_json", is_flag=True)
def doctor(as_json: bool) -> None:
    import sys

    from microclaw.runtime.doctor import failed, run_checks

    settings = load_settings_or_exit()
    configure_logging("ERROR", "text")
    checks = run_checks(settings)
    if as_json:
        console.print_json(json.dumps([c.as_dict() for c in checks]))
    else:
        marks = {True: "[green]ok  [/]", False: "[red]FAIL[/]", None: "[dim]--  [/]"}
        for c in checks:
            console.print(f"{marks[c.ok]} {c.name}: {c.detail}", highlight=False, soft_wrap=True)
            if c.ok is False and c.fix:
                console.print(f"     fix: {c.fix}", highlight=False, soft_wrap=True)
    bad = failed(checks)
    if bad:
        if not as_json:
            console.print(f"[red]{len(bad)} check(s) failed[/]")
        sys.exit(1)
