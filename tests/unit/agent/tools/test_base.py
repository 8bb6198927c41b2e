"""Argument checks and the Toolbox's error handling."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from microclaw.agent.providers.base import ToolCall
from microclaw.agent.tools.base import BaseTool, Toolbox, ToolContext, ToolError, clip, validate_arguments
from microclaw.errors import LeaseLost, PolicyDenied, SandboxUnavailable

SCHEMA = {
    "type": "object",
    "properties": {
        "path": {"type": "string"},
        "n": {"type": "integer", "minimum": 1},
        "mode": {"type": "string", "enum": ["a", "b"]},
        "flag": {"type": "boolean"},
    },
    "required": ["path"],
}


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        ({}, "missing required argument(s): path"),
        ({"path": "x", "nope": 1}, "unknown argument(s): nope"),
        ({"path": 3}, "argument 'path' must be of type string, got int"),
        ({"path": "x", "n": True}, "argument 'n' must be of type integer, got bool"),
        ({"path": "x", "n": 0}, "argument 'n' must be >= 1"),
        ({"path": "x", "mode": "c"}, "argument 'mode' must be one of a, b, got 'c'"),
        ({"path": "x", "n": 2, "mode": "a", "flag": False}, None),
    ],
)
def test_validate_arguments(args: dict[str, Any], problem: str | None) -> None:
    result = validate_arguments(SCHEMA, args)
    assert result == problem if problem is None else (result or "").startswith(problem)


class Raising(BaseTool):
    name: ClassVar[str] = "raising"
    description: ClassVar[str] = "raises what it is told"
    input_schema: ClassVar[dict[str, Any]] = {"type": "object", "properties": {"what": {"type": "string"}}}

    def run(self, ctx: ToolContext, args: dict[str, Any]) -> str:
        what = args.get("what")
        if what == "tool":
            raise ToolError("bad task id")
        if what == "denied":
            raise PolicyDenied("raising", "not yours", group=ctx.group_folder)
        if what == "sandbox":
            raise SandboxUnavailable("docker is down")
        if what == "lease":
            raise LeaseLost("group:x", 1)
        if what == "bug":
            raise RuntimeError("boom")
        return "y" * 50


CTX = ToolContext("fake:g", "g", False, 7)


def test_toolbox_turns_failures_into_tool_errors_and_audits_refusals() -> None:
    audited: list[tuple[str, dict[str, Any]]] = []
    box = Toolbox([Raising()], audit=lambda kind, **f: audited.append((kind, f)), max_output_chars=10)
    run = lambda what: box.execute(CTX, ToolCall("1", "raising", {"what": what}))  # noqa: E731
    assert run("tool").is_error and run("tool").content == "bad task id"
    denied = run("denied")
    assert denied.is_error and denied.content == "denied: not yours"
    assert run("sandbox").content.startswith("raising failed: sandbox unavailable")
    assert run("bug").content == "raising failed with an internal error (RuntimeError)"
    assert run("ok").content == clip("y" * 50, 10) and not run("ok").is_error
    with pytest.raises(LeaseLost):
        run("lease")
    kinds = [k for k, _ in audited]
    assert kinds.count("agent.tool_error") == 2 and kinds.count("agent.tool_denied") == 1
    assert audited[-1][1]["decision"] == "deny" and audited[-1][1]["run_id"] == 7


def test_duplicate_tool_names_are_refused() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        Toolbox([Raising(), Raising()])
