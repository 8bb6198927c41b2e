from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.integration.gateway.harness import GatewayRig, gateway_env
from tests.integration.stack import Stack


@pytest.fixture
def rig(make_stack: Callable[..., Stack]) -> Iterator[GatewayRig]:
    """A running gateway on a fresh data directory (no workers: the messages wait in the store)."""
    gateway = GatewayRig(make_stack(**gateway_env()))
    gateway.start()
    yield gateway
