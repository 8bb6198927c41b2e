"""OpenAI-compatible chat completions with tools, through the official ``openai`` SDK.

Capability card:
- Works with OpenAI and any server speaking its chat-completions API: Ollama
  (``http://127.0.0.1:11434/v1``), vLLM, LM Studio, OpenRouter; set ``agent.base_url`` (or
  ``OPENAI_BASE_URL``). A local server needs no key: a placeholder is sent when
  ``OPENAI_API_KEY`` is unset and a base URL is given.
- Settings: ``agent.model`` (default ``gpt-4o-mini``), ``agent.max_tokens``,
  ``agent.request_timeout_s``, ``agent.max_retries``.
- Wire mapping: the system prompt is the first ``system`` message; assistant turns carry
  ``tool_calls`` (``function`` with JSON-string ``arguments``); each tool result is a ``tool``
  message with its ``tool_call_id`` (refusals and failures are prefixed ``ERROR:``, as the API
  has no error flag). Arguments that are not a JSON object come back as a `ToolCall` with
  ``error`` set, so the loop returns them to the model as a tool error.
- Retries: the SDK's own (``max_retries``), exponential backoff honouring ``retry-after``.
- Errors: after retries, 429/5xx, timeouts and connection errors become
  `TransientProviderError`; other API errors `PermanentProviderError`. No SDK object or
  exception leaves this module.
"""

from __future__ import annotations

import json
import logging
from typing import Any, ClassVar, Self

import openai

from microclaw.agent.providers.base import BaseProvider, ChatTurn, Completion, ToolCall, Usage, retry_after
from microclaw.config import AgentSettings
from microclaw.errors import ConfigError, PermanentProviderError, TransientProviderError

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "gpt-4o-mini"
_NO_KEY = "not-needed"  # local servers (Ollama, LM Studio) ignore the key but the SDK wants one


def to_messages(system: str, turns: list[ChatTurn]) -> list[dict[str, Any]]:
    """Neutral turns -> chat-completions ``messages``."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}]
    for turn in turns:
        if turn.role == "assistant":
            message: dict[str, Any] = {"role": "assistant", "content": turn.content or None}
            if turn.tool_calls:
                message["tool_calls"] = [
                    {
                        "id": c.id,
                        "type": "function",
                        "function": {
                            "name": c.name,
                            "arguments": c.raw_arguments if c.error else json.dumps(c.arguments),
                        },
                    }
                    for c in turn.tool_calls
                ]
            elif not turn.content:
                message["content"] = ""
            messages.append(message)
        elif turn.role == "tool":
            content = f"ERROR: {turn.content}" if turn.is_error else turn.content
            messages.append({"role": "tool", "tool_call_id": turn.tool_call_id, "content": content})
        else:
            messages.append({"role": "user", "content": turn.content})
    return messages


def parse_arguments(raw: str | None) -> tuple[dict[str, Any], str | None]:
    """A tool call's JSON-string arguments -> (object, error)."""
    if raw is None or not raw.strip():
        return {}, None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        return {}, f"arguments are not valid JSON ({exc.msg} at position {exc.pos})"
    if not isinstance(value, dict):
        return {}, "arguments must be a JSON object"
    return value, None


class OpenAIProvider(BaseProvider):
    """Chat completions with function tools; one SDK client per worker process (thread-safe)."""

    name: ClassVar[str] = "openai"

    def __init__(
        self,
        *,
        api_key: str = "",
        model: str = DEFAULT_MODEL,
        base_url: str | None = None,
        max_tokens: int = 4096,
        timeout_s: float = 120.0,
        max_retries: int = 4,
    ) -> None:
        if not api_key and not base_url:
            raise ConfigError(
                "agent.provider is 'openai' but neither OPENAI_API_KEY nor agent.base_url "
                "(OPENAI_BASE_URL) is set",
                key="OPENAI_API_KEY",
            )
        self.model = model or DEFAULT_MODEL
        self.max_tokens = max_tokens
        self._client = openai.OpenAI(
            api_key=api_key or _NO_KEY, base_url=base_url or None, timeout=timeout_s, max_retries=max_retries
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
            "messages": to_messages(system, turns),
        }
        if tools:
            kwargs["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": t["name"],
                        "description": t.get("description", ""),
                        "parameters": t["input_schema"],
                    },
                }
                for t in tools
            ]
        try:
            response = self._client.chat.completions.create(**kwargs)
        except (openai.APITimeoutError, openai.APIConnectionError) as exc:
            raise TransientProviderError(f"openai: {type(exc).__name__}: {exc}") from exc
        except openai.APIStatusError as exc:
            status = exc.status_code
            text = f"openai: HTTP {status}: {_error_message(exc)}"
            if status in (408, 409, 429) or status >= 500:
                raise TransientProviderError(text, retry_after=retry_after(exc)) from exc
            raise PermanentProviderError(text) from exc
        except openai.OpenAIError as exc:
            raise PermanentProviderError(f"openai: {type(exc).__name__}: {exc}") from exc
        if not response.choices:
            raise TransientProviderError("openai: the response had no choices")
        choice = response.choices[0]
        calls = []
        for call in choice.message.tool_calls or ():
            function = getattr(call, "function", None)
            if function is None:
                continue
            arguments, error = parse_arguments(function.arguments)
            calls.append(
                ToolCall(call.id, function.name, arguments, error=error, raw_arguments=function.arguments)
            )
        usage = response.usage
        return Completion(
            text=choice.message.content or None,
            tool_calls=tuple(calls),
            usage=Usage(
                input_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
                output_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
            ),
            stop_reason=str(choice.finish_reason or "stop"),
        )


def _error_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
    return str(getattr(exc, "message", "") or exc)
