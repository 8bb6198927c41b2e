"""Sandbox tools: commands, files, search and web fetches, all run in the group's container.

Every call goes through a `SandboxClient`-like object (``exec``, ``read_file``, ``write_file``,
``list_files``) to the sandbox worker, for the running group's folder, with its ``is_main`` (so a
restarted sandbox worker starts the container with the right mounts). Paths are workspace paths
(relative ones from ``/workspace/group``); the sandbox refuses anything outside ``/workspace``.
Arguments never reach a shell unquoted: commands the model writes run as ``sh -c <command>``
(that is the tool), every other tool passes its arguments as separate argv items.

``fetch_url`` uses ``curl`` (or busybox ``wget``) inside the container, so it can reach only what
the group's egress proxy allows; a group without an allowlist has no network at all.

Does not implement isolation or policy (the sandbox worker does and audits it) and never runs
anything on the host.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Protocol
from urllib.parse import urlsplit

from microclaw.agent.tools.base import BaseTool, ToolContext, ToolError
from microclaw.sandbox.base import ExecResult
from microclaw.sandbox.service import FileContent, FileEntry

MAX_READ_BYTES = 200_000
_FETCH_SCRIPT = (
    'if command -v curl >/dev/null 2>&1; then exec curl -sS -L --max-time "$2" -o - -- "$1"; '
    'else exec wget -q -O - -T "$2" -- "$1"; fi'
)


class SandboxCalls(Protocol):
    """The part of `microclaw.sandbox.client.SandboxClient` the tools use."""

    def exec(
        self,
        group: str,
        argv: Sequence[str],
        *,
        timeout: float | None = None,
        tool: str | None = None,
        is_main: bool | None = None,
    ) -> ExecResult: ...

    def read_file(
        self, group: str, path: str, *, max_bytes: int | None = None, is_main: bool | None = None
    ) -> FileContent: ...

    def write_file(self, group: str, path: str, data: bytes, *, is_main: bool | None = None) -> int: ...

    def list_files(self, group: str, path: str = ".", *, is_main: bool | None = None) -> list[FileEntry]: ...


def _string(description: str) -> dict[str, Any]:
    return {"type": "string", "description": description}


def _object(properties: dict[str, Any], required: Sequence[str]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required)}


def describe_exec(result: ExecResult) -> str:
    """An exec result as text for the model."""
    parts = [f"exit code: {result.exit_code}" + (" (timed out)" if result.timed_out else "")]
    out = result.stdout.decode("utf-8", "replace")
    err = result.stderr.decode("utf-8", "replace")
    if out:
        parts.append(f"stdout:\n{out}")
    if err:
        parts.append(f"stderr:\n{err}")
    if result.truncated:
        parts.append("[output truncated by the sandbox]")
    return "\n".join(parts)


class _SandboxTool(BaseTool):
    def __init__(self, client: SandboxCalls) -> None:
        self.client = client

    def _exec(self, ctx: ToolContext, argv: list[str], timeout: float | None = None) -> ExecResult:
        return self.client.exec(ctx.group_folder, argv, timeout=timeout, tool=self.name, is_main=ctx.is_main)

    def _read_text(self, ctx: ToolContext, path: str) -> str:
        content = self.client.read_file(ctx.group_folder, path, max_bytes=MAX_READ_BYTES, is_main=ctx.is_main)
        if b"\x00" in content.data[:4096]:
            raise ToolError(f"{path} looks like a binary file ({content.size} bytes)")
        text = content.data.decode("utf-8", "replace")
        if content.truncated:
            text += f"\n[file truncated: showing {len(content.data)} of {content.size} bytes]"
        return text


class RunCommandTool(_SandboxTool):
    name: ClassVar[str] = "run_command"
    description: ClassVar[str] = (
        "Run a shell command (sh -c) in your sandboxed workspace (/workspace/group, your files). "
        "Returns the exit code, stdout and stderr. No network unless allowlisted."
    )
    input_schema: ClassVar[dict[str, Any]] = _object(
        {
            "command": _string("The shell command to run."),
            "timeout_s": {"type": "number", "description": "Seconds before it is killed.", "minimum": 1},
        },
        ["command"],
    )

    def run(self, ctx: ToolContext, args: dict[str, Any]) -> str:
        return describe_exec(self._exec(ctx, ["sh", "-c", args["command"]], args.get("timeout_s")))


class ReadFileTool(_SandboxTool):
    name: ClassVar[str] = "read_file"
    description: ClassVar[str] = "Read a text file from your workspace (relative to /workspace/group)."
    input_schema: ClassVar[dict[str, Any]] = _object({"path": _string("File path.")}, ["path"])

    def run(self, ctx: ToolContext, args: dict[str, Any]) -> str:
        return self._read_text(ctx, args["path"])


class WriteFileTool(_SandboxTool):
    name: ClassVar[str] = "write_file"
    description: ClassVar[str] = "Create or replace a file in your workspace with the given text."
    input_schema: ClassVar[dict[str, Any]] = _object(
        {"path": _string("File path."), "content": _string("The complete new file content.")},
        ["path", "content"],
    )

    def run(self, ctx: ToolContext, args: dict[str, Any]) -> str:
        written = self.client.write_file(
            ctx.group_folder, args["path"], args["content"].encode("utf-8"), is_main=ctx.is_main
        )
        return f"wrote {written} bytes to {args['path']}"


class EditFileTool(_SandboxTool):
    name: ClassVar[str] = "edit_file"
    description: ClassVar[str] = (
        "Replace text in a workspace file: old_text must occur exactly once (or set replace_all)."
    )
    input_schema: ClassVar[dict[str, Any]] = _object(
        {
            "path": _string("File path."),
            "old_text": _string("The exact text to replace."),
            "new_text": _string("The replacement."),
            "replace_all": {"type": "boolean", "description": "Replace every occurrence."},
        },
        ["path", "old_text", "new_text"],
    )

    def run(self, ctx: ToolContext, args: dict[str, Any]) -> str:
        path, old, new = args["path"], args["old_text"], args["new_text"]
        if not old:
            raise ToolError("old_text must not be empty")
        content = self.client.read_file(ctx.group_folder, path, is_main=ctx.is_main)
        if content.truncated:
            raise ToolError(f"{path} is too large to edit ({content.size} bytes)")
        text = content.data.decode("utf-8")
        count = text.count(old)
        if count == 0:
            raise ToolError(f"old_text was not found in {path}")
        if count > 1 and not args.get("replace_all"):
            raise ToolError(f"old_text occurs {count} times in {path}; make it unique or set replace_all")
        updated = text.replace(old, new) if args.get("replace_all") else text.replace(old, new, 1)
        self.client.write_file(ctx.group_folder, path, updated.encode("utf-8"), is_main=ctx.is_main)
        return f"replaced {count if args.get('replace_all') else 1} occurrence(s) in {path}"


class ListFilesTool(_SandboxTool):
    name: ClassVar[str] = "list_files"
    description: ClassVar[str] = "List a directory of your workspace (default: the workspace root)."
    input_schema: ClassVar[dict[str, Any]] = _object({"path": _string("Directory path.")}, [])

    def run(self, ctx: ToolContext, args: dict[str, Any]) -> str:
        entries = self.client.list_files(ctx.group_folder, args.get("path") or ".", is_main=ctx.is_main)
        if not entries:
            return "(empty directory)"
        return "\n".join(
            f"{e.name}/" if e.kind == "dir" else f"{e.name}  ({e.size} bytes)" if e.kind == "file" else e.name
            for e in entries
        )


class FindFilesTool(_SandboxTool):
    name: ClassVar[str] = "find_files"
    description: ClassVar[str] = "Find files whose name matches a glob pattern (e.g. '*.py'), recursively."
    input_schema: ClassVar[dict[str, Any]] = _object(
        {"pattern": _string("Glob on the file name."), "path": _string("Where to start (default '.').")},
        ["pattern"],
    )

    def run(self, ctx: ToolContext, args: dict[str, Any]) -> str:
        start = args.get("path") or "."
        if start.startswith("-"):
            raise ToolError("path must not start with '-'")
        result = self._exec(ctx, ["find", start, "-name", args["pattern"], "-type", "f"])
        if result.exit_code != 0 and not result.stdout:
            raise ToolError(result.stderr.decode("utf-8", "replace").strip() or "find failed")
        names = sorted(result.stdout.decode("utf-8", "replace").splitlines())
        return "\n".join(names) if names else "no files found"


class SearchTextTool(_SandboxTool):
    name: ClassVar[str] = "search_text"
    description: ClassVar[str] = (
        "Search file contents for a regular expression (grep -E), recursively; returns file:line:text."
    )
    input_schema: ClassVar[dict[str, Any]] = _object(
        {
            "pattern": _string("Extended regular expression (or literal text with literal=true)."),
            "path": _string("File or directory (default '.')."),
            "ignore_case": {"type": "boolean"},
            "literal": {"type": "boolean"},
        },
        ["pattern"],
    )

    def run(self, ctx: ToolContext, args: dict[str, Any]) -> str:
        start = args.get("path") or "."
        if start.startswith("-"):
            raise ToolError("path must not start with '-'")
        argv = ["grep", "-rn", "-m", "50", "-F" if args.get("literal") else "-E"]
        if args.get("ignore_case"):
            argv.append("-i")
        result = self._exec(ctx, [*argv, "-e", args["pattern"], "--", start])
        if result.exit_code == 1:
            return "no matches"
        if result.exit_code != 0:
            raise ToolError(result.stderr.decode("utf-8", "replace").strip() or "search failed")
        return result.stdout.decode("utf-8", "replace")


class FetchUrlTool(_SandboxTool):
    name: ClassVar[str] = "fetch_url"
    description: ClassVar[str] = (
        "Fetch a URL (GET) from inside the sandbox, through its egress proxy: only allowlisted hosts "
        "are reachable. Returns the response body."
    )
    input_schema: ClassVar[dict[str, Any]] = _object(
        {"url": _string("http:// or https:// URL."), "timeout_s": {"type": "number", "minimum": 1}},
        ["url"],
    )

    def run(self, ctx: ToolContext, args: dict[str, Any]) -> str:
        url = args["url"]
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ToolError("url must be an http:// or https:// URL with a host")
        timeout = float(args.get("timeout_s") or 30)
        result = self._exec(ctx, ["sh", "-c", _FETCH_SCRIPT, "fetch", url, str(int(timeout))], timeout + 5)
        if result.exit_code != 0:
            detail = result.stderr.decode("utf-8", "replace").strip()
            raise ToolError(f"fetching {url} failed (exit {result.exit_code}): {detail or 'no detail'}")
        return result.stdout.decode("utf-8", "replace")


SANDBOX_TOOLS: tuple[type[_SandboxTool], ...] = (
    RunCommandTool,
    ReadFileTool,
    WriteFileTool,
    EditFileTool,
    ListFilesTool,
    FindFilesTool,
    SearchTextTool,
    FetchUrlTool,
)


def sandbox_tools(client: SandboxCalls) -> list[BaseTool]:
    """One instance of every sandbox tool, bound to ``client``."""
    return [cls(client) for cls in SANDBOX_TOOLS]
