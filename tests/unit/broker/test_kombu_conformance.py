"""kombu's own integration cases (``t/integration/common.py``: basic functionality, exchange
types, message acks and requeue, message properties), run against the SQLite transport.

Written from the cases' descriptions; negative cases check the queue is empty with a
``basic_get`` instead of waiting for a timeout.
"""

from __future__ import annotations

import socket
from contextlib import closing
from typing import Any

import kombu
import pytest


def _publish(
    channel: Any, exchange: kombu.Exchange, queues: list[kombu.Queue], routing_key: str | None = None
) -> None:
    producer = kombu.Producer(channel, exchange=exchange)
    kwargs = {"routing_key": routing_key} if routing_key else {}
    producer.publish({"hello": "world"}, declare=queues or None, serializer="json", **kwargs)


def _consume_one(conn: kombu.Connection, queue: kombu.Queue) -> dict[str, Any]:
    got: list[Any] = []

    def on_message(body: Any, message: Any) -> None:
        got.append((body, dict(message.delivery_info), message.content_type))
        message.ack()

    with kombu.Consumer(conn, [queue], accept=["json"], callbacks=[on_message]):
        conn.drain_events(timeout=10)
    body, info, content_type = got[0]
    return {"body": body, "info": info, "content_type": content_type}


def _empty(conn: kombu.Connection, queue: kombu.Queue) -> bool:
    with conn.channel() as channel:
        return channel.basic_get(queue.name, no_ack=True) is None


# -- BasicFunctionality ----------------------------------------------------------------------


def test_connect_close_and_reconnect(connection: kombu.Connection) -> None:
    assert connection.connect()
    assert connection.connection
    connection.close()
    assert connection.connection is None
    assert connection.connect()
    assert connection.default_channel
    connection.close()


def test_invalid_url_fails_to_connect(tmp_path: Any) -> None:
    from tests.unit.broker.conftest import connect

    conn = connect(tmp_path / "not-a-dir" / "x" / "\0bad.db")
    with pytest.raises(Exception):  # noqa: B017 - any transport error
        conn.connect()
        conn.default_channel.queue_declare("q")


def test_publish_consume_through_the_default_exchange(connection: kombu.Connection) -> None:
    queue = kombu.Queue("test", routing_key="test")
    with connection as conn, conn.channel() as channel:
        kombu.Producer(channel).publish(
            {"hello": "world"},
            exchange=queue.exchange,
            routing_key="test",
            declare=[queue],
            serializer="json",
        )
        got = _consume_one(conn, queue)
    assert got["body"] == {"hello": "world"}
    assert got["content_type"] == "application/json"
    assert got["info"]["routing_key"] == "test"


def test_consume_from_an_empty_queue_times_out(connection: kombu.Connection) -> None:
    queue = kombu.Queue("test_empty", routing_key="test_empty")
    with (
        connection as conn,
        kombu.Consumer(conn, [queue], accept=["json"], callbacks=[pytest.fail]),
        pytest.raises(socket.timeout),
    ):
        conn.drain_events(timeout=0.01)


def test_simple_queue_keeps_body_headers_and_content_type(connection: kombu.Connection) -> None:
    with connection as conn, closing(conn.SimpleQueue("simple_queue_test")) as queue:
        queue.put({"Hello": "World"}, headers={"k1": "v1"})
        message = queue.get(timeout=5)
        assert message.payload == {"Hello": "World"}
        assert message.content_type == "application/json"
        assert message.content_encoding == "utf-8"
        assert message.headers == {"k1": "v1"}
        message.ack()


def test_simple_buffer_publish_consume(connection: kombu.Connection) -> None:
    with connection as conn, closing(conn.SimpleBuffer("simple_buffer_test")) as buf:
        buf.put({"Hello": "World"}, headers={"k1": "v1"})
        message = buf.get(timeout=5)
        assert message.payload == {"Hello": "World"}
        assert message.headers == {"k1": "v1"}


def test_message_properties_survive_the_file(connection: kombu.Connection) -> None:
    with connection as conn, closing(conn.SimpleQueue("props")) as queue:
        queue.put(
            {"n": 1},
            headers={"h": [1, "two"]},
            correlation_id="c-1",
            reply_to="back",
            expiration="60",
            priority=3,
        )
        message = queue.get(timeout=5)
        assert message.properties["correlation_id"] == "c-1"
        assert message.properties["reply_to"] == "back"
        assert message.properties["priority"] == 3
        assert message.headers == {"h": [1, "two"]}
        message.ack()


# -- BaseExchangeTypes -----------------------------------------------------------------------


def test_direct(connection: kombu.Connection) -> None:
    ex = kombu.Exchange("test_direct", type="direct")
    queue = kombu.Queue("direct1", exchange=ex)
    with connection as conn, conn.channel() as channel:
        _publish(channel, ex, [queue])
        assert _consume_one(conn, queue)["body"] == {"hello": "world"}


def test_direct_routing_keys(connection: kombu.Connection) -> None:
    ex = kombu.Exchange("test_rk_direct", type="direct")
    q1 = kombu.Queue("rk_direct1", exchange=ex, routing_key="d1")
    q2 = kombu.Queue("rk_direct2", exchange=ex, routing_key="d2")
    with connection as conn, conn.channel() as channel:
        _publish(channel, ex, [q1, q2], "d1")
        assert _consume_one(conn, q1)["info"]["routing_key"] == "d1"
        assert _empty(conn, q2)
        _publish(channel, ex, [q1, q2], "d3")  # no queue bound with d3: discarded
        assert _empty(conn, q1) and _empty(conn, q2)


def test_fanout(connection: kombu.Connection) -> None:
    ex = kombu.Exchange("test_fanout", type="fanout")
    q1 = kombu.Queue("fanout1", exchange=ex)
    q2 = kombu.Queue("fanout2", exchange=ex)
    with connection as conn, conn.channel() as channel:
        _publish(channel, ex, [q1, q2])
        assert _consume_one(conn, q1)["body"] == {"hello": "world"}
        assert _consume_one(conn, q2)["body"] == {"hello": "world"}


def test_topic(connection: kombu.Connection) -> None:
    ex = kombu.Exchange("test_topic", type="topic")
    q1 = kombu.Queue("topic1", exchange=ex, routing_key="t.*")
    q2 = kombu.Queue("topic2", exchange=ex, routing_key="t.*")
    q3 = kombu.Queue("topic3", exchange=ex, routing_key="t")
    with connection as conn, conn.channel() as channel:
        _publish(channel, ex, [q1, q2, q3], routing_key="t.1")
        assert _consume_one(conn, q1)["body"] == {"hello": "world"}
        assert _consume_one(conn, q2)["body"] == {"hello": "world"}
        assert _empty(conn, q3)


def test_publish_to_an_exchange_without_queues(connection: kombu.Connection) -> None:
    ex = kombu.Exchange("test_empty_exchange", type="topic")
    with connection as conn, conn.channel() as channel:
        _publish(channel, ex, [], routing_key="t.1")


def test_bindings_made_by_one_process_route_for_another(make_connection: Any) -> None:
    """Unlike kombu's virtual transports, routing is in the file: a publisher that never
    declared the queue or its binding still reaches it (Celery's pidbox replies rely on it)."""
    ex = kombu.Exchange("shared_fanout", type="fanout")
    q = kombu.Queue("shared1", exchange=ex)
    consumer_side, publisher_side = make_connection(), make_connection()
    with consumer_side.channel() as channel:
        q(channel).declare()
    with publisher_side.channel() as channel:
        kombu.Producer(channel).publish({"x": 1}, exchange="shared_fanout", routing_key="")
    assert _consume_one(consumer_side, q)["body"] == {"x": 1}


# -- BaseMessage -----------------------------------------------------------------------------


def test_ack(connection: kombu.Connection) -> None:
    with connection as conn, closing(conn.SimpleQueue("test_ack")) as queue:
        queue.put({"Hello": "World"})
        queue.get_nowait().ack()
        with pytest.raises(queue.Empty):
            queue.get_nowait()


def test_reject_no_requeue(connection: kombu.Connection) -> None:
    with connection as conn, closing(conn.SimpleQueue("test_reject_no_requeue")) as queue:
        queue.put({"Hello": "World"})
        queue.get_nowait().reject(requeue=False)
        with pytest.raises(queue.Empty):
            queue.get_nowait()


def test_reject_requeue(connection: kombu.Connection) -> None:
    with connection as conn, closing(conn.SimpleQueue("test_reject_requeue")) as queue:
        queue.put({"Hello": "World"})
        message = queue.get_nowait()
        message.reject(requeue=True)
        again = queue.get_nowait()
        assert again.body == message.body
        assert again.delivery_info["redelivered"] is True
        again.ack()


def test_requeue(connection: kombu.Connection) -> None:
    with connection as conn, closing(conn.SimpleQueue("test_requeue")) as queue:
        queue.put({"Hello": "World"})
        message = queue.get_nowait()
        message.requeue()
        again = queue.get_nowait()
        assert again.body == message.body
        again.ack()
