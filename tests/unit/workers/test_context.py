"""workers.context under the threads pool: shared where thread-safe, per thread where bound to
an event loop."""

from __future__ import annotations

import threading

import pytest

from microclaw.config import Settings
from microclaw.runtime.celery_app import Publisher, create_app
from workers import context


@pytest.fixture
def bound(settings: Settings):
    app = create_app(settings)
    context.bind(settings, app, Publisher(app))
    yield context
    context.reset()


def _in_thread(fn):
    out = []
    t = threading.Thread(target=lambda: out.append(fn()))
    t.start()
    t.join()
    return out[0]


def test_threads_share_the_engine_but_each_has_its_own_event_loop_runner(bound) -> None:
    ctx = bound.context()
    assert _in_thread(bound.context) is ctx
    assert _in_thread(lambda: bound.context().engine) is ctx.engine
    mine = ctx.runner
    theirs = _in_thread(lambda: bound.context().runner)
    assert mine is ctx.runner  # stable within a thread
    assert theirs is not mine
    deps, runner = _in_thread(lambda: (bound.context().delivery_deps, bound.context().runner))
    assert deps.runner is runner
    assert runner is not mine
    assert ctx.delivery_deps.runner is mine


def test_many_threads_asking_at_once_build_the_shared_engine_once(bound) -> None:
    ctx = bound.context()
    barrier = threading.Barrier(8)
    seen = []

    def ask() -> None:
        barrier.wait()
        seen.append(ctx.engine)

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(e) for e in seen}) == 1
