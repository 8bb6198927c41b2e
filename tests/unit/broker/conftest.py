"""Connections to a real broker file in the test's temporary directory."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kombu import Connection

from microclaw.broker.transport import celery_broker_options


def connect(path: Path, polling_interval: float = 0.01) -> Connection:
    opts = celery_broker_options(f"sqla+sqlite:///{path}", polling_interval)
    return Connection(
        opts["broker_url"],
        transport=opts["broker_transport"],
        transport_options=opts["broker_transport_options"],
    )


@pytest.fixture
def broker_path(tmp_path: Path) -> Path:
    return tmp_path / "broker.db"


@pytest.fixture
def make_connection(broker_path: Path) -> Iterator[Callable[..., Connection]]:
    made: list[Connection] = []

    def make(polling_interval: float = 0.01) -> Connection:
        conn = connect(broker_path, polling_interval)
        made.append(conn)
        return conn

    yield make
    for conn in made:
        conn.release()


@pytest.fixture
def connection(make_connection: Callable[..., Connection]) -> Connection:
    return make_connection()
