"""The provider interface: one LLM API behind `BaseProvider.complete()`.

A provider turns a system prompt, a conversation and tool schemas into one `Completion`
(text and/or tool calls, plus token usage). It never runs tools, never touches the store and
never reads settings itself: `from_settings` receives the agent settings slice at an entry
point. Each provider translates its SDK's exceptions into `TransientProviderError` (retry) or
`PermanentProviderError` (give up) at its own edge.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from microclaw.config import AgentSettings


@dataclass(frozen=True)
class ToolCall:
    """A tool the model asked to run. ``error`` is set when its arguments could not be parsed
    (then ``arguments`` is empty and ``raw_arguments`` holds what the model sent)."""

    id: str
    name: str
    arguments: dict[str, Any]
    error: str | None = None
    raw_arguments: str | None = None


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.input_tokens + other.input_tokens, self.output_tokens + other.output_tokens)

    @property
    def total(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True)
class Completion:
    """What the model said: final ``text`` when ``tool_calls`` is empty."""

    text: str | None
    tool_calls: tuple[ToolCall, ...] = ()
    usage: Usage = field(default_factory=Usage)
    stop_reason: str = "end_turn"


@dataclass(frozen=True)
class ChatTurn:
    """One turn of the conversation, provider-neutral.

    ``user``: text from the chat (or the router). ``assistant``: the model's text and the tool
    calls it asked for. ``tool``: the result of one tool call (``tool_call_id``), with
    ``is_error`` when the tool failed or was refused.
    """

    role: str  # "user" | "assistant" | "tool"
    content: str
    tool_call_id: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    is_error: bool = False


def retry_after(exc: BaseException) -> float | None:
    """Seconds from a ``retry-after`` / ``retry-after-ms`` header on an SDK error's response
    (the anthropic and openai SDKs both carry an httpx response)."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if not headers:
        return None
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value:
            try:
                return float(value) * scale
            except ValueError:
                continue
    return None


class BaseProvider(abc.ABC):
    """One LLM API. Instances are reused across runs of one worker process."""

    name: ClassVar[str]

    @classmethod
    @abc.abstractmethod
    def from_settings(cls, settings: AgentSettings) -> Self:
        """Build from the agent settings; raise `ConfigError` naming a missing setting."""

    @abc.abstractmethod
    def complete(self, system: str, turns: list[ChatTurn], tools: list[dict[str, Any]]) -> Completion:
        """Ask the model for the next step. Called by the agent loop in a worker process.

        ``tools`` are neutral schemas ``{"name", "description", "input_schema"}`` (JSON Schema);
        each provider maps them to its wire format. Retries of 429/5xx/timeouts happen inside
        (honouring ``retry-after``); what escapes has exhausted them.

        Raises `TransientProviderError` (429, 5xx, timeouts; may carry ``retry_after``) or
        `PermanentProviderError` (bad credentials, invalid request).
        """
