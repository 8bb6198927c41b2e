"""The agent loop with a recording provider: limits, follow-ups, memory files, tool errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Self

from microclaw.agent.loop import TIME_LIMIT_NOTE, Agent, AgentLimits, AgentRequest, system_prompt
from microclaw.agent.memory import AgentMemory, memory_sections, split_for_compaction
from microclaw.agent.providers.base import BaseProvider, ChatTurn, Completion, ToolCall, Usage
from microclaw.agent.tools.base import BaseTool, Toolbox, ToolContext
from microclaw.config import AgentSettings


class Recording(BaseProvider):
    name: ClassVar[str] = "recording"

    def __init__(self, *completions: Completion) -> None:
        self.completions = list(completions)
        self.calls: list[tuple[str, list[ChatTurn]]] = []

    @classmethod
    def from_settings(cls, settings: AgentSettings) -> Self:
        return cls()

    def complete(self, system: str, turns: list[ChatTurn], tools: list[dict[str, Any]]) -> Completion:
        self.calls.append((system, list(turns)))
        return self.completions.pop(0)


class Echo(BaseTool):
    name: ClassVar[str] = "echo"
    description: ClassVar[str] = "echo"
    input_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {"text": {"type": "string"}},
        "required": ["text"],
    }

    def run(self, ctx: ToolContext, args: dict[str, Any]) -> str:
        return f"{ctx.group_folder}:{args['text']}"


def call(text: str = "x") -> Completion:
    return Completion(None, (ToolCall("c" + text, "echo", {"text": text}),), Usage(3, 2))


REQUEST = AgentRequest("fake:g", "g", False, "<messages>hi</messages>")


def test_tools_run_until_the_model_answers_and_usage_adds_up() -> None:
    provider = Recording(call("a"), call("b"), Completion("done", usage=Usage(1, 1)))
    result = Agent(provider, assistant_name="Andy", toolbox=Toolbox([Echo()])).run(REQUEST)
    assert (result.text, result.steps, result.usage) == ("done", 3, Usage(7, 5))
    last_turns = provider.calls[-1][1]
    assert [(t.role, t.content) for t in last_turns if t.role == "tool"] == [("tool", "g:a"), ("tool", "g:b")]


def test_follow_up_blocks_join_at_the_next_step_boundary() -> None:
    provider = Recording(call(), Completion("ok"))
    blocks = iter([[], ["<messages>more</messages>"]])
    Agent(provider, assistant_name="Andy", toolbox=Toolbox([Echo()])).run(REQUEST, lambda: next(blocks))
    assert provider.calls[1][1][-1] == ChatTurn("user", "<messages>more</messages>")
    assert all(t.content != "<messages>more</messages>" for t in provider.calls[0][1])


def test_time_limit_ends_the_run_with_what_it_has() -> None:
    now = [0.0]

    def clock() -> float:
        now[0] += 70
        return now[0]

    provider = Recording(Completion("partial", (ToolCall("c", "echo", {"text": "x"}),)), Completion("never"))
    agent = Agent(
        provider,
        assistant_name="Andy",
        toolbox=Toolbox([Echo()]),
        limits=AgentLimits(run_timeout_s=60),
        clock=clock,
    )
    result = agent.run(REQUEST)
    assert result.stopped == "time" and result.text == f"partial\n\n{TIME_LIMIT_NOTE}"
    assert len(provider.calls) == 1


def test_cost_is_computed_from_the_configured_prices() -> None:
    provider = Recording(Completion("hi", usage=Usage(1_000_000, 500_000)))
    agent = Agent(
        provider, assistant_name="Andy", limits=AgentLimits(input_cost_per_mtok=3, output_cost_per_mtok=15)
    )
    assert agent.run(REQUEST).cost == 3 + 7.5


def test_memory_files_global_only_for_non_main(tmp_path: Path) -> None:
    (tmp_path / "global").mkdir()
    (tmp_path / "global" / "CLAUDE.md").write_text("Everyone: be kind.")
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "CLAUDE.md").write_text("Bob likes tea.")
    assert next(t for t, _ in memory_sections(tmp_path, "g", False)).startswith("Shared memory")
    assert [b for _, b in memory_sections(tmp_path, "g", True)] == ["Bob likes tea."]
    prompt = system_prompt("Andy", REQUEST, memory_sections(tmp_path, "g", False), tools=True)
    assert "You are Andy" in prompt and "be kind" in prompt and "Bob likes tea" in prompt
    assert memory_sections(tmp_path, "../etc", False)[1:] == []  # an invalid folder reads nothing


def test_compaction_never_separates_a_tool_call_from_its_result() -> None:
    turns = [
        ChatTurn("user", "a"),
        ChatTurn("assistant", "", tool_calls=(ToolCall("1", "echo", {}),)),
        ChatTurn("tool", "r", tool_call_id="1"),
        ChatTurn("assistant", "b"),
        ChatTurn("user", "c"),
        ChatTurn("assistant", "d"),
    ]
    assert split_for_compaction(turns, 3) == 4  # no user turn further back: keeps from "c"
    assert split_for_compaction(turns, 2) == 4
    assert split_for_compaction(turns, 6) == 0  # everything is recent: nothing to summarize


def test_isolated_scheduled_task_has_no_session(engine, tmp_path: Path) -> None:
    memory = AgentMemory(engine, tmp_path, archive_dir=tmp_path / "conversations")
    session = memory.open("fake:g", "g", is_scheduled_task=True, run_id=None)
    assert session.session_id is None and session.history == []
    first = memory.open("fake:g", "g", is_scheduled_task=False, run_id=None)
    again = memory.open("fake:g", "g", is_scheduled_task=False, run_id=None)
    assert first.session_id == again.session_id is not None
