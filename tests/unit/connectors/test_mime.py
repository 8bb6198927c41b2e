"""microclaw/connectors/mime.py: email bytes in, the text a person wrote out; replies that thread."""

from __future__ import annotations

from datetime import UTC, datetime
from email.message import EmailMessage

import pytest

from microclaw.connectors.mime import (
    MAX_REFERENCES,
    build_reply,
    fallback_message_id,
    html_to_text,
    make_message_id,
    msgids,
    normalize_text,
    parse_email,
    reply_references,
    reply_subject,
    thread_root,
    trim_quoted,
    valid_address,
)


def message(body: str = "Hello", **headers: str) -> EmailMessage:
    msg = EmailMessage()
    defaults = {"From": "Alice <Alice@Example.COM>", "To": "andy@example.test", "Subject": "Hi"}
    for name, value in {**defaults, **headers}.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(body)
    return msg


# --- headers --------------------------------------------------------------------------------


def test_headers_are_read_and_normalized() -> None:
    raw = (
        b"From: Alice <Alice@Example.COM>\r\n"
        b"To: andy@example.test\r\n"
        b"Message-ID: <m3@example.com>\r\n"
        b"Reply-To: Alice Work <alice@work.example>\r\n"
        b"Cc: Bob <BOB@example.com>, carol@example.com\r\n"
        b"In-Reply-To: <m2@example.com>\r\n"
        b"References: <m1@example.com>\r\n <m2@example.com>\r\n"
        b"Date: Tue, 07 Jan 2025 10:00:00 +0100\r\n"
        b"Subject:  Long\r\n   subject  \r\n"
        b"\r\nHello\r\n"
    )
    parsed = parse_email(raw)
    assert parsed.message_id == "<m3@example.com>"
    assert parsed.from_addr == "alice@example.com" and parsed.from_name == "Alice"
    assert parsed.reply_to == ("alice@work.example",)
    assert parsed.to == ("andy@example.test",)
    assert parsed.cc == ("bob@example.com", "carol@example.com")
    assert parsed.subject == "Long subject"
    assert parsed.date == datetime(2025, 1, 7, 9, 0, tzinfo=UTC)
    assert parsed.in_reply_to == "<m2@example.com>"
    assert parsed.references == ("<m1@example.com>", "<m2@example.com>")
    assert thread_root(parsed) == "<m1@example.com>"
    assert parsed.participants == (
        "alice@example.com",
        "alice@work.example",
        "andy@example.test",
        "bob@example.com",
        "carol@example.com",
    )


def test_reply_goes_to_from_when_there_is_no_reply_to_and_thread_root_falls_back() -> None:
    parsed = parse_email(bytes(message(Message_ID="<solo@example.com>")))
    assert parsed.reply_to == ("alice@example.com",)
    assert thread_root(parsed) == "<solo@example.com>"
    only_parent = parse_email(bytes(message(Message_ID="<c@x>", In_Reply_To="<p@x>")))
    assert thread_root(only_parent) == "<p@x>"


def test_malformed_input_never_raises() -> None:
    for raw in (
        b"",
        b"no headers at all",
        b"From: \r\nDate: yesterday\r\nSubject: =?bogus?=\r\n\r\n\xff\xfe",
    ):
        parsed = parse_email(raw)
        assert parsed.message_id is None and parsed.date is None


def test_fallback_message_id_is_stable_and_differs_per_message() -> None:
    a = bytes(message("one", Date="Tue, 07 Jan 2025 10:00:00 +0000"))
    b = bytes(message("one", Date="Tue, 07 Jan 2025 10:00:01 +0000"))
    assert fallback_message_id(a) == fallback_message_id(a)
    assert fallback_message_id(a) != fallback_message_id(b)
    assert fallback_message_id(a).startswith("<") and fallback_message_id(a).endswith("@microclaw.invalid>")


@pytest.mark.parametrize(
    ("headers", "automated"),
    [
        ({}, False),
        ({"Auto_Submitted": "auto-replied"}, True),
        ({"Auto_Submitted": "no"}, False),
        ({"Precedence": "bulk"}, True),
        ({"From": "MAILER-DAEMON@mx.example.com"}, True),
    ],
)
def test_automated_mail_is_recognised(headers: dict[str, str], automated: bool) -> None:
    assert parse_email(bytes(message(**headers))).automated is automated


# --- body -----------------------------------------------------------------------------------


def test_alternative_prefers_plain_text() -> None:
    msg = message("plain wins")
    msg.add_alternative("<p>html loses</p>", subtype="html")
    assert parse_email(bytes(msg)).text == "plain wins"


def test_html_only_becomes_text_without_the_quoted_history() -> None:
    msg = message()
    msg.set_content(
        "<html><head><style>p{color:red}</style><script>x()</script></head><body>"
        "<p>Hi&nbsp;<b>Andy</b>,<br>line two</p><ul><li>one</li><li>two</li></ul>"
        '<blockquote type="cite">Apple Mail quote</blockquote>'
        '<div class="gmail_quote">On Mon wrote:<blockquote>old</blockquote></div></body></html>',
        subtype="html",
    )
    assert parse_email(bytes(msg)).text == "Hi Andy,\nline two\n\none\ntwo"


def test_html_to_text_handles_empty_and_broken_markup() -> None:
    assert html_to_text("") == ""
    assert html_to_text("<p>unclosed <b>bold") == "unclosed bold"


def test_attachments_are_named_and_not_read() -> None:
    msg = message("see attached")
    msg.add_attachment(b"%PDF", maintype="application", subtype="pdf", filename="report.pdf")
    msg.add_attachment("a,b\n1,2\n", subtype="csv", filename="data.csv")
    msg.add_attachment(b"\x00\x01", maintype="application", subtype="octet-stream")
    forwarded = message("inner body", Subject="Forwarded thing")
    msg.add_attachment(forwarded)
    parsed = parse_email(bytes(msg))
    assert parsed.attachments == (
        "report.pdf",
        "data.csv",
        "unnamed application/octet-stream",
        "Forwarded thing.eml",
    )
    assert parsed.text == (
        "see attached\n[Attachment: report.pdf]\n[Attachment: data.csv]\n"
        "[Attachment: unnamed application/octet-stream]\n[Attachment: Forwarded thing.eml]"
    )


def test_a_mail_that_is_only_an_attachment() -> None:
    msg = EmailMessage()
    msg["From"] = "scanner@example.com"
    msg.set_content(
        b"%PDF", maintype="application", subtype="pdf", disposition="attachment", filename="scan.pdf"
    )
    assert parse_email(bytes(msg)).text == "[Attachment: scan.pdf]"


def test_inline_image_in_related_html_is_named() -> None:
    msg = message("text version")
    msg.add_alternative("<p>html version <img src='cid:logo'></p>", subtype="html")
    html_part = msg.get_payload()[1]
    html_part.add_related(b"\x89PNG", maintype="image", subtype="png", cid="<logo>", filename="logo.png")
    assert parse_email(bytes(msg)).text == "text version\n[Attachment: logo.png]"


def test_charsets_and_lying_charsets() -> None:
    latin = b"From: a@b.c\r\nContent-Type: text/plain; charset=iso-8859-1\r\n\r\ncaf\xe9\r\n"
    assert parse_email(latin).text == "café"
    unknown = b"From: a@b.c\r\nContent-Type: text/plain; charset=x-no-such-charset\r\n\r\nplain ascii\r\n"
    assert parse_email(unknown).text == "plain ascii"
    wrong = b"From: a@b.c\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nbad \xff byte\r\n"
    assert parse_email(wrong).text == "bad \ufffd byte"


# --- quoted history -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Sounds good.\n\nOn Mon, Jan 6, 2025 at 10:00 AM Andy <a@x> wrote:\n> Meet at 3?\n", "Sounds good."),
        ("Danke!\n\nAm 06.01.2025 um 10:00 schrieb Andy <a@x>:\n> Wollen wir?\n", "Danke!"),
        ("Merci !\n\nLe lun. 6 janv. 2025 à 10:00, Andy <a@x> a écrit :\n> On y va ?\n", "Merci !"),
        ("Yes.\n\n-----Original Message-----\nFrom: Andy\nSent: Monday\nSubject: hi\n\nold\n", "Yes."),
        ("Top answer.\n\n> quoted one\n> quoted two\n", "Top answer."),
        ("No quotes here.\n--\nAlice", "No quotes here.\n--\nAlice"),
    ],
)
def test_quoted_history_is_trimmed(text: str, expected: str) -> None:
    assert trim_quoted(text) == expected


def test_inline_answers_between_quotes_are_kept() -> None:
    text = "> Question one?\nAnswer one.\n> Question two?\nAnswer two."
    assert trim_quoted(text) == text


def test_text_that_is_all_quote_is_kept() -> None:
    text = "> forwarded line one\n> forwarded line two"
    assert trim_quoted(text) == text


def test_normalize_text() -> None:
    assert normalize_text("a  \r\n\r\n\r\n\r\nb\rc\x00\n\n") == "a\n\nb\nc"


# --- replies --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("Plans", "Re: Plans"),
        ("Re: Plans", "Re: Plans"),
        ("RE: Re: re:Plans", "Re: Plans"),
        ("AW: Plans", "Re: Plans"),
        ("Re[2]: Plans", "Re: Plans"),
        ("SV: Fwd: Plans", "Re: Fwd: Plans"),
        ("", "Re:"),
    ],
)
def test_reply_subject(subject: str, expected: str) -> None:
    assert reply_subject(subject) == expected


def test_reply_references_keep_the_root_and_the_newest() -> None:
    assert reply_references([], "<p@x>") == ["<p@x>"]
    assert reply_references(["<a@x>", "<b@x>"], "<b@x>") == ["<a@x>", "<b@x>"]
    long = [f"<{i}@x>" for i in range(40)]
    refs = reply_references(long, "<new@x>")
    assert len(refs) == MAX_REFERENCES and refs[0] == "<0@x>" and refs[-1] == "<new@x>"


def test_build_reply_threads_and_round_trips() -> None:
    mid = make_message_id("run:7:reply", "andy@example.test")
    assert (
        mid
        == make_message_id("run:7:reply", "andy@example.test")
        != make_message_id("x", "andy@example.test")
    )
    msg = build_reply(
        from_address="andy@example.test",
        from_name="Andy",
        to=["alice@example.com"],
        cc=["bob@example.com"],
        subject="Re: Plans",
        text="Three works.\nCheers",
        message_id=mid,
        in_reply_to="<m2@x>",
        references=["<m1@x>"],
    )
    assert msg["From"] == "Andy <andy@example.test>"
    assert msg["Cc"] == "bob@example.com"
    assert msg["In-Reply-To"] == "<m2@x>" and msg["References"] == "<m1@x> <m2@x>"
    parsed = parse_email(bytes(msg))
    assert parsed.text == "Three works.\nCheers" and parsed.message_id == mid
    assert parsed.automated  # Auto-Submitted: a second MicroClaw never answers it (no mail loops)
    fresh = build_reply(
        from_address="andy@example.test",
        from_name="",
        to=["c@x.y"],
        subject="Hello",
        text="hi",
        message_id=mid,
    )
    assert (
        fresh["In-Reply-To"] is None and fresh["References"] is None and fresh["From"] == "andy@example.test"
    )


def test_msgids_and_valid_address() -> None:
    assert msgids("<a@x> junk <b@y>\r\n\t<c@z>") == ("<a@x>", "<b@y>", "<c@z>")
    assert msgids(None) == ()
    assert valid_address("alice@example.com")
    for bad in ("", "alice", "@example.com", "alice@", "a b@example.com", "<a@x>", "a@x,b@y"):
        assert not valid_address(bad), bad
