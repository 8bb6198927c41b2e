"""Both providers through their real SDKs against wire-level fakes on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from microclaw.agent.providers.anthropic import AnthropicProvider
from microclaw.agent.providers.base import BaseProvider, ChatTurn, ToolCall
from microclaw.agent.providers.openai import OpenAIProvider
from microclaw.errors import PermanentProviderError, TransientProviderError
from tests.integration.agent.fakes import Call, Fail, FakeAnthropic, FakeOpenAI, Step

TOOLS = [
    {
        "name": "run_command",
        "description": "Run a shell command",
        "input_schema": {
            "type": "object",
            "properties": {"command": {"type": "string"}},
            "required": ["command"],
        },
    }
]


@pytest.fixture(params=["anthropic", "openai"])
def pair(request: pytest.FixtureRequest) -> Iterator[tuple[FakeAnthropic | FakeOpenAI, BaseProvider]]:
    if request.param == "anthropic":
        server: FakeAnthropic | FakeOpenAI = FakeAnthropic().start()
        provider: BaseProvider = AnthropicProvider(
            api_key="test-key", base_url=server.base_url, timeout_s=5, max_retries=3
        )
    else:
        server = FakeOpenAI().start()
        provider = OpenAIProvider(api_key="test-key", base_url=server.base_url, timeout_s=5, max_retries=3)
    try:
        yield server, provider
    finally:
        server.stop()


def test_text_reply_and_usage(pair) -> None:
    server, provider = pair
    server.add(Step(text="hello there", input_tokens=42, output_tokens=7))
    completion = provider.complete("You are Andy.", [ChatTurn("user", "hi")], TOOLS)
    assert completion.text == "hello there"
    assert completion.tool_calls == ()
    assert (completion.usage.input_tokens, completion.usage.output_tokens) == (42, 7)
    sent = server.requests[0]
    if isinstance(server, FakeAnthropic):
        assert sent["system"] == "You are Andy."
        assert sent["tools"][0]["input_schema"]["required"] == ["command"]
    else:
        assert sent["messages"][0] == {"role": "system", "content": "You are Andy."}
        assert sent["tools"][0]["function"]["name"] == "run_command"


def test_tool_use_round_trip_in_the_vendor_wire_format(pair) -> None:
    server, provider = pair
    server.add(Step(text="Let me check.", calls=[Call("run_command", {"command": "ls"}, id="c1")]))
    server.add(Step(text="Done."))
    first = provider.complete("sys", [ChatTurn("user", "list files")], TOOLS)
    assert first.tool_calls == (ToolCall("c1", "run_command", {"command": "ls"}, raw_arguments=None),) or (
        first.tool_calls[0].id == "c1" and first.tool_calls[0].arguments == {"command": "ls"}
    )
    turns = [
        ChatTurn("user", "list files"),
        ChatTurn("assistant", first.text or "", tool_calls=first.tool_calls),
        ChatTurn("tool", "a.txt\nb.txt", tool_call_id="c1"),
        ChatTurn("tool", "not allowed", tool_call_id="c2", is_error=True),
    ]
    assert provider.complete("sys", turns, TOOLS).text == "Done."
    sent = server.requests[1]["messages"]
    if isinstance(server, FakeAnthropic):
        assert sent[1]["role"] == "assistant"
        assert sent[1]["content"][1] == {
            "type": "tool_use",
            "id": "c1",
            "name": "run_command",
            "input": {"command": "ls"},
        }
        assert sent[2]["role"] == "user"  # both results in one user message, roles alternate
        assert sent[2]["content"][0]["type"] == "tool_result"
        assert sent[2]["content"][0]["tool_use_id"] == "c1"
        assert sent[2]["content"][1]["is_error"] is True
    else:
        assert sent[2]["tool_calls"][0]["function"] == {
            "name": "run_command",
            "arguments": '{"command": "ls"}',
        }
        assert sent[3] == {"role": "tool", "tool_call_id": "c1", "content": "a.txt\nb.txt"}
        assert sent[4]["content"].startswith("ERROR: ")


def test_429_with_retry_after_is_retried_after_the_given_delay(pair) -> None:
    server, provider = pair
    server.add(Fail(429, "slow down", retry_after="0.3"), Step(text="ok"))
    assert provider.complete("sys", [ChatTurn("user", "hi")], []).text == "ok"
    assert len(server.requests) == 2
    assert server.request_times[1] - server.request_times[0] >= 0.28  # honoured, not the 0.5 s default jitter


def test_500_is_retried(pair) -> None:
    server, provider = pair
    server.add(Fail(500, "boom"), Fail(503, "busy"), Step(text="recovered"))
    assert provider.complete("sys", [ChatTurn("user", "hi")], []).text == "recovered"
    assert len(server.requests) == 3


def test_exhausted_retries_become_transient_with_retry_after(pair) -> None:
    server, provider = pair
    server.add(*[Fail(429, "still limited", retry_after="0.01") for _ in range(4)])
    with pytest.raises(TransientProviderError) as info:
        provider.complete("sys", [ChatTurn("user", "hi")], [])
    assert info.value.retry_after == pytest.approx(0.01)
    assert "still limited" in str(info.value)
    assert len(server.requests) == 4  # 1 + max_retries


@pytest.mark.parametrize("status", [400, 401])
def test_client_errors_are_permanent_and_not_retried(pair, status: int) -> None:
    server, provider = pair
    server.add(Fail(status, "bad request"), Step(text="never"))
    with pytest.raises(PermanentProviderError, match="bad request"):
        provider.complete("sys", [ChatTurn("user", "hi")], [])
    assert len(server.requests) == 1


def test_unreachable_server_is_transient() -> None:
    server = FakeOpenAI()  # never started: the port refuses connections
    provider = OpenAIProvider(api_key="k", base_url=server.base_url, timeout_s=2, max_retries=0)
    with pytest.raises(TransientProviderError):
        provider.complete("sys", [ChatTurn("user", "hi")], [])


def test_openai_malformed_arguments_become_a_tool_call_error() -> None:
    with FakeOpenAI() as server:
        provider = OpenAIProvider(api_key="k", base_url=server.base_url, timeout_s=5, max_retries=0)
        server.add(Step(calls=[Call("run_command", '{"command": "ls"', id="c1")]))
        (call,) = provider.complete("sys", [ChatTurn("user", "hi")], TOOLS).tool_calls
        assert call.error is not None and "not valid JSON" in call.error
        assert call.arguments == {}
        # Replayed verbatim, so the model sees what it sent.
        server.add(Step(text="fixed"))
        provider.complete(
            "sys",
            [
                ChatTurn("user", "hi"),
                ChatTurn("assistant", "", tool_calls=(call,)),
                ChatTurn("tool", "bad", "c1", is_error=True),
            ],
            TOOLS,
        )
        assert (
            server.requests[1]["messages"][2]["tool_calls"][0]["function"]["arguments"] == '{"command": "ls"'
        )


def test_openai_without_key_works_with_a_base_url_for_local_servers() -> None:
    with FakeOpenAI() as server:
        server.add(Step(text="from ollama"))
        provider = OpenAIProvider(api_key="", base_url=server.base_url, timeout_s=5, max_retries=0)
        assert provider.complete("sys", [ChatTurn("user", "hi")], []).text == "from ollama"
