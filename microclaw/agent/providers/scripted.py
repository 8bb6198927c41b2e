"""Deterministic, offline providers: `ScriptedProvider` for smoke runs, tests and benchmarks,
and `UnconfiguredProvider`, which answers every message with how to configure a real model.

Scripted modes: ``echo`` replies ``echo: <last message>``; ``seen`` replies ``seen: a | b | c``
listing every message content in the prompt (tests use it to prove order, no loss and no
duplicates); ``fail`` raises a transient error (to exercise retries). ``delay_s`` simulates
model latency. No network, no randomness.
"""

from __future__ import annotations

import html
import re
import time
from typing import Any, ClassVar, Self

from microclaw.agent.providers.base import BaseProvider, ChatTurn, Completion
from microclaw.config import AgentSettings
from microclaw.errors import TransientProviderError

_MESSAGE = re.compile(
    r"<message [^>]*>(?:\n  <quoted_message[^>]*>.*?</quoted_message>)?(.*?)</message>", re.S
)

SETUP_HELP = (
    "I'm running, but no language model is configured yet, so I can't answer properly. "
    "Set MICROCLAW_AGENT__PROVIDER (for example 'anthropic' or 'openai') and the matching API key "
    "(ANTHROPIC_API_KEY or OPENAI_API_KEY) in your environment or .env, then restart MicroClaw. "
    "To try things offline, set MICROCLAW_AGENT__PROVIDER=scripted."
)


def message_contents(prompt: str) -> list[str]:
    """The unescaped contents of each <message> in a formatted prompt, in order."""
    return [html.unescape(m) for m in _MESSAGE.findall(prompt)]


class ScriptedProvider(BaseProvider):
    name: ClassVar[str] = "scripted"

    def __init__(self, mode: str = "echo", delay_s: float = 0.0) -> None:
        if mode not in {"echo", "seen", "fail"}:
            raise ValueError(f"unknown scripted mode {mode!r}")
        self.mode = mode
        self.delay_s = delay_s

    @classmethod
    def from_settings(cls, settings: AgentSettings) -> Self:
        return cls(mode=settings.scripted_mode, delay_s=settings.scripted_delay_s)

    def complete(self, system: str, turns: list[ChatTurn], tools: list[dict[str, Any]]) -> Completion:
        if self.delay_s:
            time.sleep(self.delay_s)
        # This step's input: every user turn since the model last spoke (the prompt plus any
        # follow-up messages that joined the run).
        pending: list[str] = []
        for turn in reversed(turns):
            if turn.role != "user":
                break
            pending.insert(0, turn.content)
        contents = [c for block in pending for c in (message_contents(block) or [block])] or [""]
        if self.mode == "fail":
            raise TransientProviderError("scripted failure")
        if self.mode == "seen":
            return Completion(text="seen: " + " | ".join(contents))
        return Completion(text=f"echo: {contents[-1]}")


class UnconfiguredProvider(BaseProvider):
    name: ClassVar[str] = "none"

    @classmethod
    def from_settings(cls, settings: AgentSettings) -> Self:
        return cls()

    def complete(self, system: str, turns: list[ChatTurn], tools: list[dict[str, Any]]) -> Completion:
        return Completion(text=SETUP_HELP)
