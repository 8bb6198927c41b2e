from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.stack import Stack


@pytest.fixture
def make_stack(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator:
    """Build Stacks rooted in this test's tmp dir; stop them and show their logs on failure."""
    stacks: list[Stack] = []

    def build(**overrides: str) -> Stack:
        stack = Stack(tmp_path, **overrides)
        stacks.append(stack)
        return stack

    yield build
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    for stack in stacks:
        stack.stop()
        if failed:
            print(stack.logs())


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator:
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
