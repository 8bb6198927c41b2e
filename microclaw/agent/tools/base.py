"""The tool interface and the `Toolbox` that runs a model's tool calls.

A tool is a `BaseTool`: a name, a description, a JSON Schema for its arguments and ``run()``.
The `Toolbox` is what the agent loop calls: it looks the tool up, rejects malformed calls
(unparseable or schema-violating arguments, unknown tools), runs the tool with the running
group's `ToolContext` (the group that holds the lease; tools never take identity from their
arguments), and turns every failure into a `ToolResult` with ``is_error`` that goes back to
the model. Argument errors and refusals are audited through the ``audit`` callback and change
nothing. `LeaseLost` is the one exception that escapes: the run must stop.

Does not decide what a tool may do (each tool applies `microclaw.core.ipc` or relies on the
sandbox's own policy) and does not talk to the store itself.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from microclaw.agent.providers.base import ToolCall
from microclaw.errors import LeaseLost, PolicyDenied, SandboxError

logger = logging.getLogger(__name__)

AuditFn = Callable[..., None]  # (kind, *, chat_jid, decision, **detail)


@dataclass(frozen=True)
class ToolContext:
    """Who is acting: the group that holds the lease, and the run the tool works for."""

    chat_jid: str
    group_folder: str
    is_main: bool
    run_id: int | None = None


@dataclass(frozen=True)
class ToolResult:
    content: str
    is_error: bool = False


class ToolError(Exception):
    """A tool call the model got wrong (bad arguments, unknown task): returned to it, audited."""


class BaseTool(abc.ABC):
    """One tool. ``run`` returns the text fed back to the model, or raises `ToolError`,
    `PolicyDenied` or `SandboxError` (all returned to the model as tool errors)."""

    name: ClassVar[str]
    description: ClassVar[str]
    input_schema: ClassVar[dict[str, Any]]

    @abc.abstractmethod
    def run(self, ctx: ToolContext, args: dict[str, Any]) -> str:
        """Do the work for ``ctx``'s group; arguments are already checked against the schema."""

    def schema(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "input_schema": self.input_schema}


_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
}


def validate_arguments(schema: Mapping[str, Any], args: Mapping[str, Any]) -> str | None:
    """A description of what is wrong with ``args`` for this object schema, or None.

    Covers what tool schemas here use: required keys, unknown keys, primitive types, enums and
    ``minimum``.
    """
    properties: Mapping[str, Any] = schema.get("properties", {})
    missing = [k for k in schema.get("required", ()) if k not in args]
    if missing:
        return f"missing required argument(s): {', '.join(missing)}"
    unknown = sorted(set(args) - set(properties))
    if unknown:
        return f"unknown argument(s): {', '.join(unknown)}; expected: {', '.join(properties)}"
    for key, value in args.items():
        spec = properties[key]
        kind = spec.get("type")
        allowed = _TYPES.get(kind, (object,)) if isinstance(kind, str) else (object,)
        is_bool = isinstance(value, bool)
        if not isinstance(value, allowed) or (is_bool and kind in ("integer", "number")):
            return f"argument {key!r} must be of type {kind}, got {type(value).__name__}"
        if "enum" in spec and value not in spec["enum"]:
            return f"argument {key!r} must be one of {', '.join(map(str, spec['enum']))}, got {value!r}"
        if "minimum" in spec and value < spec["minimum"]:
            return f"argument {key!r} must be >= {spec['minimum']}"
    return None


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[... {len(text) - limit} more characters truncated]"


class Toolbox:
    """The tools one agent run may use, and the one place their calls are executed."""

    def __init__(
        self, tools: Iterable[BaseTool], *, audit: AuditFn | None = None, max_output_chars: int = 20_000
    ) -> None:
        self.tools: dict[str, BaseTool] = {}
        for tool in tools:
            if tool.name in self.tools:
                raise ValueError(f"duplicate tool name {tool.name!r}")
            self.tools[tool.name] = tool
        self._audit = audit
        self.max_output_chars = max_output_chars

    def schemas(self) -> list[dict[str, Any]]:
        return [tool.schema() for tool in self.tools.values()]

    def execute(self, ctx: ToolContext, call: ToolCall) -> ToolResult:
        """Run one call; never raises except `LeaseLost` (and BaseExceptions)."""
        tool = self.tools.get(call.name)
        if tool is None:
            return self._refuse(
                ctx,
                call,
                "agent.tool_error",
                f"unknown tool {call.name!r}; available: {', '.join(self.tools)}",
            )
        if call.error is not None:
            return self._refuse(
                ctx, call, "agent.tool_error", f"invalid arguments for {call.name}: {call.error}"
            )
        problem = validate_arguments(tool.input_schema, call.arguments)
        if problem is not None:
            return self._refuse(
                ctx, call, "agent.tool_error", f"invalid arguments for {call.name}: {problem}"
            )
        try:
            output = tool.run(ctx, dict(call.arguments))
        except LeaseLost:
            raise
        except ToolError as exc:
            return self._refuse(ctx, call, "agent.tool_error", str(exc))
        except PolicyDenied as exc:
            return self._refuse(ctx, call, "agent.tool_denied", f"denied: {exc.reason}", decision="deny")
        except SandboxError as exc:
            # Nothing ran unisolated; the model hears why (and may tell the user).
            logger.warning("sandbox tool %s failed: %s", call.name, exc, extra={"chat_jid": ctx.chat_jid})
            return ToolResult(f"{call.name} failed: {exc}", is_error=True)
        except Exception as exc:
            logger.exception("tool %s crashed", call.name, extra={"chat_jid": ctx.chat_jid})
            return ToolResult(
                f"{call.name} failed with an internal error ({type(exc).__name__})", is_error=True
            )
        return ToolResult(clip(output, self.max_output_chars))

    def _refuse(
        self, ctx: ToolContext, call: ToolCall, kind: str, message: str, *, decision: str = "error"
    ) -> ToolResult:
        logger.info("tool call refused: %s", message, extra={"chat_jid": ctx.chat_jid, "tool": call.name})
        if self._audit is not None:
            try:
                self._audit(
                    kind,
                    chat_jid=ctx.chat_jid,
                    decision=decision,
                    tool=call.name,
                    group=ctx.group_folder,
                    run_id=ctx.run_id,
                    reason=message,
                )
            except Exception:
                logger.warning("could not audit a refused tool call", exc_info=True)
        return ToolResult(message, is_error=True)
