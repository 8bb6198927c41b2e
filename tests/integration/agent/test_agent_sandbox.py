"""The sandbox tools against a real sandbox worker and container (Docker test image)."""

from __future__ import annotations

import pytest

from microclaw.agent.providers.base import ToolCall
from microclaw.agent.tools.base import Toolbox, ToolContext
from microclaw.agent.tools.sandbox import sandbox_tools
from tests.integration.sandbox.conftest import docker_client, sandbox_image  # noqa: F401 - fixtures
from tests.integration.sandbox.test_celery_tasks import sandbox_stack  # noqa: F401 - fixture

CTX = ToolContext("fake:alpha", "alpha", False, None)


@pytest.mark.docker
def test_every_sandbox_tool_runs_in_the_group_container(sandbox_stack) -> None:  # noqa: F811
    sb = sandbox_stack()
    sb.start_worker()
    box = Toolbox(sandbox_tools(sb.client()))

    def use(tool: str, **args: object) -> tuple[str, bool]:
        result = box.execute(CTX, ToolCall("1", tool, dict(args)))
        return result.content, result.is_error

    assert use("write_file", path="src/app.py", content="print('hello')\nTODO = 1\n") == (
        "wrote 24 bytes to src/app.py",
        False,
    )
    assert use("edit_file", path="src/app.py", old_text="hello", new_text="world") == (
        "replaced 1 occurrence(s) in src/app.py",
        False,
    )
    assert use("read_file", path="src/app.py") == ("print('world')\nTODO = 1\n", False)
    assert (sb.groups_dir / "alpha" / "src" / "app.py").read_text() == "print('world')\nTODO = 1\n"
    assert use("edit_file", path="src/app.py", old_text="absent", new_text="x") == (
        "old_text was not found in src/app.py",
        True,
    )
    assert use("list_files", path="src") == ("app.py  (24 bytes)", False)
    assert use("find_files", pattern="*.py") == ("./src/app.py", False)
    assert use("search_text", pattern="TODO") == ("./src/app.py:2:TODO = 1\n", False)
    assert use("search_text", pattern="nothing-here") == ("no matches", False)
    out, is_error = use("run_command", command="id -u; pwd; exit 4")
    assert not is_error and out == "exit code: 4\nstdout:\n1000\n/workspace/group\n"
    denied, is_error = use("read_file", path="../../etc/passwd")
    assert is_error and denied.startswith("denied:")
    # No allowlist for this group: the container has no network, so a fetch fails (and says so).
    fetched, is_error = use("fetch_url", url="http://example.com/", timeout_s=3)
    assert is_error and fetched.startswith("fetching http://example.com/ failed")
    assert use("fetch_url", url="file:///etc/passwd") == (
        "url must be an http:// or https:// URL with a host",
        True,
    )
