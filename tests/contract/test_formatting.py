"""Contract §2 and checklist 11.4-11.5: prompt layout, escaping, local times, outbound cleaning."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

import pytest

from microclaw.core.formatting import (
    SCHEDULED_TASK_PREAMBLE,
    escape_xml,
    format_local_time,
    format_messages,
    format_outbound,
    strip_internal_tags,
    wrap_scheduled_prompt,
)


@dataclass
class Msg:
    sender_name: str | None
    content: str | None
    timestamp: str | datetime
    reply_to_message_id: str | None = None
    reply_to_message_content: str | None = None
    reply_to_sender_name: str | None = None


class BareMsg:
    """A message-like object without any reply attributes at all."""

    def __init__(self, sender_name: str, content: str, timestamp: str) -> None:
        self.sender_name = sender_name
        self.content = content
        self.timestamp = timestamp


# -- escape_xml -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("a & b", "a &amp; b"),
        ("<b>", "&lt;b&gt;"),
        ('say "hi"', "say &quot;hi&quot;"),
        ("it's", "it's"),  # single quotes are not escaped
        ("&lt;", "&amp;lt;"),  # & first, so existing entities are escaped again
        ('<a href="x">&</a>', "&lt;a href=&quot;x&quot;&gt;&amp;&lt;/a&gt;"),
        ("plain", "plain"),
        ("", ""),
        (None, ""),
    ],
)
def test_escape_xml(raw: str | None, escaped: str) -> None:
    assert escape_xml(raw) == escaped


# -- format_local_time ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ts", "tz", "expected"),
    [
        ("2024-01-01T00:00:00.000Z", "UTC", "Jan 1, 2024, 12:00 AM"),
        ("2024-01-01T12:00:00.000Z", "UTC", "Jan 1, 2024, 12:00 PM"),
        ("2024-01-01T13:05:00.000Z", "UTC", "Jan 1, 2024, 1:05 PM"),
        ("2024-01-01T11:59:59.999Z", "UTC", "Jan 1, 2024, 11:59 AM"),
        ("2024-12-31T23:59:00Z", "UTC", "Dec 31, 2024, 11:59 PM"),
        ("2024-01-01T00:00:00.000Z", "America/New_York", "Dec 31, 2023, 7:00 PM"),
        ("2024-07-01T00:00:00.000Z", "America/New_York", "Jun 30, 2024, 8:00 PM"),  # EDT
        ("2024-01-01T00:00:00.000Z", "Asia/Kolkata", "Jan 1, 2024, 5:30 AM"),
        ("2024-03-15T09:07:00+02:00", "UTC", "Mar 15, 2024, 7:07 AM"),
        ("2024-01-01T00:00:00", "UTC", "Jan 1, 2024, 12:00 AM"),  # no offset: UTC
    ],
)
def test_format_local_time(ts: str, tz: str, expected: str) -> None:
    assert format_local_time(ts, tz) == expected


def test_format_local_time_accepts_datetimes() -> None:
    assert format_local_time(datetime(2024, 1, 1, tzinfo=UTC), "Europe/Paris") == "Jan 1, 2024, 1:00 AM"
    plus_two = timezone(timedelta(hours=2))
    assert format_local_time(datetime(2024, 1, 1, 2, 0, tzinfo=plus_two), "UTC") == "Jan 1, 2024, 12:00 AM"
    assert format_local_time(datetime(2024, 1, 1), "UTC") == "Jan 1, 2024, 12:00 AM"  # naive: UTC


@pytest.mark.parametrize("tz", ["Not/AZone", "", "utc", "../etc/passwd"])
def test_format_local_time_invalid_timezone_falls_back_to_utc(tz: str) -> None:
    assert format_local_time("2024-01-01T00:00:00.000Z", tz) == "Jan 1, 2024, 12:00 AM"


def test_format_local_time_uses_a_plain_space_before_meridiem() -> None:
    rendered = format_local_time("2024-01-01T00:00:00.000Z", "UTC")
    assert rendered.endswith(" AM")
    assert "\u202f" not in rendered


def test_format_local_time_unparseable_timestamp() -> None:
    assert format_local_time("yesterday", "UTC") == "Invalid Date"


# -- format_messages --------------------------------------------------------------------------


def test_empty_batch_layout_is_exact() -> None:
    assert format_messages([], "UTC") == '<context timezone="UTC" />\n<messages>\n\n</messages>'


def test_single_message_layout_is_exact() -> None:
    msgs = [Msg("Alice", "@Andy hello", "2024-01-01T00:00:00.000Z")]
    assert format_messages(msgs, "UTC") == (
        '<context timezone="UTC" />\n'
        "<messages>\n"
        '<message sender="Alice" time="Jan 1, 2024, 12:00 AM">@Andy hello</message>\n'
        "</messages>"
    )


def test_messages_are_joined_by_newlines_in_the_given_order() -> None:
    msgs = [
        Msg("Alice", "first", "2024-01-01T00:00:00.000Z"),
        Msg("Bob", "second", "2024-01-01T00:01:00.000Z"),
        Msg("Alice", "third", "2024-01-01T00:02:00.000Z"),
    ]
    assert format_messages(msgs, "UTC") == (
        '<context timezone="UTC" />\n'
        "<messages>\n"
        '<message sender="Alice" time="Jan 1, 2024, 12:00 AM">first</message>\n'
        '<message sender="Bob" time="Jan 1, 2024, 12:01 AM">second</message>\n'
        '<message sender="Alice" time="Jan 1, 2024, 12:02 AM">third</message>\n'
        "</messages>"
    )


def test_times_are_rendered_in_the_given_timezone() -> None:
    out = format_messages([Msg("A", "x", "2024-01-01T00:00:00.000Z")], "America/New_York")
    assert out.startswith('<context timezone="America/New_York" />\n')
    assert 'time="Dec 31, 2023, 7:00 PM"' in out


def test_invalid_timezone_is_kept_in_header_but_times_use_utc() -> None:
    out = format_messages([Msg("A", "x", "2024-01-01T00:00:00.000Z")], "Mars/Olympus")
    assert out.startswith('<context timezone="Mars/Olympus" />\n')
    assert 'time="Jan 1, 2024, 12:00 AM"' in out


def test_header_timezone_is_escaped() -> None:
    assert format_messages([], 'A&B"<>').startswith('<context timezone="A&amp;B&quot;&lt;&gt;" />\n')


def test_sender_and_content_are_escaped() -> None:
    msgs = [Msg('Eve "<3" & co', "<script>alert('x')</script> & \"q\"", "2024-01-01T00:00:00.000Z")]
    assert format_messages(msgs, "UTC") == (
        '<context timezone="UTC" />\n'
        "<messages>\n"
        '<message sender="Eve &quot;&lt;3&quot; &amp; co" time="Jan 1, 2024, 12:00 AM">'
        "&lt;script&gt;alert('x')&lt;/script&gt; &amp; &quot;q&quot;</message>\n"
        "</messages>"
    )


def test_quoted_reply_layout_is_exact() -> None:
    msg = Msg(
        "Bob",
        "yes, do it",
        "2024-01-01T00:00:00.000Z",
        reply_to_message_id="m-41",
        reply_to_message_content="shall I <deploy>?",
        reply_to_sender_name="Andy & co",
    )
    assert format_messages([msg], "UTC") == (
        '<context timezone="UTC" />\n'
        "<messages>\n"
        '<message sender="Bob" time="Jan 1, 2024, 12:00 AM" reply_to="m-41">'
        '\n  <quoted_message from="Andy &amp; co">shall I &lt;deploy&gt;?</quoted_message>'
        "yes, do it</message>\n"
        "</messages>"
    )


def test_reply_id_alone_gives_only_the_attribute() -> None:
    msg = Msg("Bob", "ok", "2024-01-01T00:00:00.000Z", reply_to_message_id='id"1')
    out = format_messages([msg], "UTC")
    assert '<message sender="Bob" time="Jan 1, 2024, 12:00 AM" reply_to="id&quot;1">ok</message>' in out
    assert "quoted_message" not in out


@pytest.mark.parametrize(
    ("content", "sender"),
    [("quoted text", None), (None, "Alice"), ("", "Alice"), ("quoted text", "")],
)
def test_quote_needs_both_content_and_sender(content: str | None, sender: str | None) -> None:
    msg = Msg(
        "Bob",
        "ok",
        "2024-01-01T00:00:00.000Z",
        reply_to_message_id="m-1",
        reply_to_message_content=content,
        reply_to_sender_name=sender,
    )
    out = format_messages([msg], "UTC")
    assert "quoted_message" not in out
    assert 'reply_to="m-1">ok</message>' in out


def test_quote_without_reply_id_has_no_reply_attribute() -> None:
    msg = Msg(
        "Bob", "ok", "2024-01-01T00:00:00.000Z", reply_to_message_content="q", reply_to_sender_name="Alice"
    )
    out = format_messages([msg], "UTC")
    assert (
        '<message sender="Bob" time="Jan 1, 2024, 12:00 AM">'
        '\n  <quoted_message from="Alice">q</quoted_message>ok</message>' in out
    )
    assert "reply_to" not in out


def test_message_like_objects_without_reply_attributes() -> None:
    out = format_messages([BareMsg("Alice", "hi", "2024-01-01T00:00:00.000Z")], "UTC")
    assert '<message sender="Alice" time="Jan 1, 2024, 12:00 AM">hi</message>' in out


def test_datetime_timestamps_are_accepted() -> None:
    out = format_messages([Msg("A", "x", datetime(2024, 1, 1, 15, 30, tzinfo=UTC))], "UTC")
    assert 'time="Jan 1, 2024, 3:30 PM"' in out


def test_missing_sender_name_and_content_render_empty() -> None:
    out = format_messages([Msg(None, None, "2024-01-01T00:00:00.000Z")], "UTC")
    assert '<message sender="" time="Jan 1, 2024, 12:00 AM"></message>' in out


def test_multiline_content_is_kept_verbatim() -> None:
    out = format_messages([Msg("A", "line 1\nline 2", "2024-01-01T00:00:00.000Z")], "UTC")
    assert ">line 1\nline 2</message>" in out


# -- outbound cleaning ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "cleaned"),
    [
        ("hello <internal>x</internal> world", "hello  world"),  # inner whitespace kept
        ("<internal>thinking</internal>Answer", "Answer"),
        ("  <internal>a</internal> Answer \n", "Answer"),  # whole string trimmed
        ("a<internal>1</internal>b<internal>2</internal>c", "abc"),  # every block, non-greedy
        ("<internal>multi\nline\n</internal>\nDone", "Done"),
        ("<internal>a</internal>keep</internal>", "keep</internal>"),  # non-greedy: first close only
        ("no tags here", "no tags here"),
        ("<internal>unclosed", "<internal>unclosed"),
        ("<INTERNAL>x</INTERNAL>", "<INTERNAL>x</INTERNAL>"),  # tag match is case-sensitive
    ],
)
def test_strip_internal_tags(raw: str, cleaned: str) -> None:
    assert strip_internal_tags(raw) == cleaned


@pytest.mark.parametrize(
    "raw", ["", "   ", "<internal>only thoughts</internal>", "\n<internal>a</internal>\n"]
)
def test_format_outbound_empty_means_send_nothing(raw: str) -> None:
    assert format_outbound(raw) == ""


def test_format_outbound_strips_and_trims() -> None:
    assert format_outbound(" <internal>plan</internal> Here you go. ") == "Here you go."


# -- scheduled task prompt --------------------------------------------------------------------


def test_scheduled_task_preamble_text() -> None:
    assert SCHEDULED_TASK_PREAMBLE == (
        "[SCHEDULED TASK - The following message was sent automatically and is not coming "
        "directly from the user or group.]"
    )


def test_wrap_scheduled_prompt_without_script() -> None:
    assert wrap_scheduled_prompt("Send the daily summary") == (
        "[SCHEDULED TASK - The following message was sent automatically and is not coming "
        "directly from the user or group.]\n\nSend the daily summary"
    )


def test_wrap_scheduled_prompt_with_script_output() -> None:
    out = wrap_scheduled_prompt("Summarise the new PRs", {"count": 2, "titles": ["a", "é"], "ok": True})
    assert out == (
        "[SCHEDULED TASK]\n\n"
        "Script output:\n"
        "{\n"
        '  "count": 2,\n'
        '  "titles": [\n'
        '    "a",\n'
        '    "é"\n'
        "  ],\n"
        '  "ok": true\n'
        "}\n\n"
        "Instructions:\n"
        "Summarise the new PRs"
    )


def test_wrap_scheduled_prompt_with_empty_script_output() -> None:
    assert wrap_scheduled_prompt("p", {}) == "[SCHEDULED TASK]\n\nScript output:\n{}\n\nInstructions:\np"
