"""Anthropic's Messages API with tool use, through the official ``anthropic`` SDK.

Capability card:
- Settings: ``agent.model`` (default ``claude-sonnet-4-6``), ``agent.base_url`` (or
  ``ANTHROPIC_BASE_URL``), ``agent.max_tokens``, ``agent.request_timeout_s``,
  ``agent.max_retries``; the key from ``ANTHROPIC_API_KEY`` (read by `microclaw.config`).
- Wire mapping: the system prompt is the ``system`` parameter; assistant turns become ``text``
  and ``tool_use`` blocks; consecutive tool results become one user message of ``tool_result``
  blocks (``is_error`` for refusals and failures); consecutive user turns are merged so roles
  alternate as the API requires.
- Retries: the SDK's own (``max_retries``), exponential backoff from 0.5 s, honouring
  ``retry-after`` / ``retry-after-ms``, on 408/409/429/5xx and connection errors.
- Errors: after retries, 429/5xx/529, timeouts and connection errors become
  `TransientProviderError` (``retry_after`` when the server sent one); any other API error
  (bad key, bad request, unknown model) becomes `PermanentProviderError`. No SDK object or
  exception leaves this module.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar, Self

import anthropic

from microclaw.agent.providers.base import BaseProvider, ChatTurn, Completion, ToolCall, Usage, retry_after
from microclaw.config import AgentSettings
from microclaw.errors import ConfigError, PermanentProviderError, TransientProviderError

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "claude-sonnet-4-6"


def to_messages(turns: list[ChatTurn]) -> list[dict[str, Any]]:
    """Neutral turns -> Anthropic ``messages`` (roles alternate; tool results are user blocks)."""
    messages: list[dict[str, Any]] = []

    def append(role: str, blocks: list[dict[str, Any]]) -> None:
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"].extend(blocks)
        else:
            messages.append({"role": role, "content": blocks})

    for turn in turns:
        if turn.role == "assistant":
            blocks: list[dict[str, Any]] = []
            if turn.content:
                blocks.append({"type": "text", "text": turn.content})
            blocks.extend(
                {"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments}
                for c in turn.tool_calls
            )
            append("assistant", blocks or [{"type": "text", "text": "(no reply)"}])
        elif turn.role == "tool":
            block: dict[str, Any] = {
                "type": "tool_result",
                "tool_use_id": turn.tool_call_id,
                "content": turn.content,
            }
            if turn.is_error:
                block["is_error"] = True
            append("user", [block])
        else:
            append("user", [{"type": "text", "text": turn.content}])
    return messages


class AnthropicProvider(BaseProvider):
    """Claude through the Messages API; one SDK client per worker process (thread-safe)."""

    name: ClassVar[str] = "anthropic"

    def __init__(
        self,
        *,
        api_key: str,
        model: str = DEFAULT_MODEL,
        base_url: str | None = None,
        max_tokens: int = 4096,
        timeout_s: float = 120.0,
        max_retries: int = 4,
    ) -> None:
        if not api_key:
            raise ConfigError(
                "agent.provider is 'anthropic' but ANTHROPIC_API_KEY is not set", key="ANTHROPIC_API_KEY"
            )
        self.model = model or DEFAULT_MODEL
        self.max_tokens = max_tokens
        self._client = anthropic.Anthropic(
            api_key=api_key, base_url=base_url or None, timeout=timeout_s, max_retries=max_retries
        )

    @classmethod
    def from_settings(cls, settings: AgentSettings) -> Self:
        return cls(
            api_key=settings.api_key,
            model=settings.model,
            base_url=settings.base_url or None,
            max_tokens=settings.max_tokens,
            timeout_s=settings.request_timeout_s,
            max_retries=settings.max_retries,
        )

    def complete(self, system: str, turns: list[ChatTurn], tools: list[dict[str, Any]]) -> Completion:
        kwargs: dict[str, Any] = {
            "model": self.model,
            "max_tokens": self.max_tokens,
            "system": system,
            "messages": to_messages(turns),
        }
        if tools:
            kwargs["tools"] = [
                {
                    "name": t["name"],
                    "description": t.get("description", ""),
                    "input_schema": t["input_schema"],
                }
                for t in tools
            ]
        try:
            message = self._client.messages.create(**kwargs)
        except (anthropic.APITimeoutError, anthropic.APIConnectionError) as exc:
            raise TransientProviderError(f"anthropic: {type(exc).__name__}: {exc}") from exc
        except anthropic.APIStatusError as exc:
            status = exc.status_code
            message_text = f"anthropic: HTTP {status}: {_error_message(exc)}"
            if status in (408, 409, 429) or status >= 500:
                raise TransientProviderError(message_text, retry_after=retry_after(exc)) from exc
            raise PermanentProviderError(message_text) from exc
        except anthropic.AnthropicError as exc:
            raise PermanentProviderError(f"anthropic: {type(exc).__name__}: {exc}") from exc
        texts: list[str] = []
        calls: list[ToolCall] = []
        for block in message.content:
            kind = getattr(block, "type", None)
            if kind == "text":
                texts.append(block.text)
            elif kind == "tool_use":
                arguments = block.input if isinstance(block.input, dict) else {}
                error = None if isinstance(block.input, dict) else "tool input must be a JSON object"
                calls.append(ToolCall(block.id, block.name, dict(arguments), error=error))
        usage = Usage(
            input_tokens=int(getattr(message.usage, "input_tokens", 0) or 0),
            output_tokens=int(getattr(message.usage, "output_tokens", 0) or 0),
        )
        return Completion(
            text="".join(texts) if texts else None,
            tool_calls=tuple(calls),
            usage=usage,
            stop_reason=str(message.stop_reason or "end_turn"),
        )


def _error_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
    return str(getattr(exc, "message", "") or exc)
