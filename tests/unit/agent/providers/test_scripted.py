"""The scripted provider reads every user turn of the current step (prompt + joined follow-ups)."""

from __future__ import annotations

from microclaw.agent.providers.base import ChatTurn
from microclaw.agent.providers.scripted import ScriptedProvider

PROMPT = (
    '<messages>\n<message sender="A" time="t">one</message>\n'
    '<message sender="A" time="t">two</message>\n</messages>'
)
FOLLOW_UP = '<messages>\n<message sender="B" time="t">three &amp; more</message>\n</messages>'


def test_seen_lists_the_prompt_and_follow_ups_in_order() -> None:
    turns = [
        ChatTurn("user", "earlier"),
        ChatTurn("assistant", "ok"),
        ChatTurn("user", PROMPT),
        ChatTurn("user", FOLLOW_UP),
    ]
    assert ScriptedProvider("seen").complete("", turns, []).text == "seen: one | two | three & more"


def test_echo_repeats_the_newest_message() -> None:
    assert ScriptedProvider("echo").complete("", [ChatTurn("user", PROMPT)], []).text == "echo: two"
    assert (
        ScriptedProvider("echo").complete("", [ChatTurn("user", "plain text")], []).text == "echo: plain text"
    )
