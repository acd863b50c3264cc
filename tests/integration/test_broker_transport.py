"""A worker's broker connection lost with a task in hand: closing it must not end the worker, and
the task comes back once Redis does.

The consumer here is built as a Celery worker builds its own (an event-loop hub, the task consumer
on the default channel, the control queue on a second channel, a BRPOP waiting on an empty queue),
and the teardown is Celery 5.7.0's: collect the connection, then close it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection, Exchange, Message, Queue
from kombu.asynchronous import Hub
from kombu.common import ignore_errors
from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError

from tests.conftest import make_settings
from tests.integration.conftest import redis_answers, start_redis
from tests.support.processes import Service, redis_service, redis_url_of, wait_until
from workers import broker_transport
from workers.celery_app import make_celery

pytestmark = pytest.mark.integration

TASKS = Queue("tasks", Exchange("tasks", "direct"), "tasks")
# As a worker's pidbox queue: bound to a fanout exchange and deleted when its consumer closes.
CONTROL = Queue("control", Exchange("control", "fanout"), auto_delete=True)
OPTIONS = {
    "socket_timeout": 2,
    "socket_connect_timeout": 2,
    "visibility_timeout": 1,
    "unacked_restore_throttle": 1,
}


@dataclass
class HeldTask:
    connection: Connection
    loop: Iterator[Any]


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[Service]:
    service = start_redis(tmp_path, append_only=True)
    yield service
    service.stop()


def _consumer_holding_a_task(url: str, transport: type | None = None) -> HeldTask:
    """A worker-shaped consumer that has received one task, not acknowledged it (it is running),
    and waits on the broker for the next; on the transport `url` resolves to unless told."""
    connection = Connection(url, transport=transport, transport_options=OPTIONS)
    hub = Hub()
    connection.register_with_event_loop(hub)
    received: list[Message] = []
    connection.Consumer([TASKS], callbacks=[lambda _, m: received.append(m)]).consume()
    connection.Consumer([CONTROL], channel=connection.channel(), callbacks=[]).consume()
    connection.Producer().publish({"task": "held"}, exchange=TASKS.exchange, routing_key="tasks")
    loop = hub.create_loop()
    deadline = time.monotonic() + 10
    while not received:
        assert time.monotonic() < deadline, "the task never reached the consumer"
        next(loop)
    for _ in range(3):
        next(loop)  # the next BRPOP goes out, on the now empty queue
    assert connection.default_channel._in_poll, "no BRPOP waiting on the broker"
    return HeldTask(connection, loop)


def _lose_the_broker(held: HeldTask, redis: Service) -> None:
    """Redis stops; the event loop raises, as the worker's does, and Celery 5.7.0 tears down."""
    redis.stop()
    with pytest.raises(RedisConnectionError):
        _run_for(held.loop, seconds=10)
    held.connection.collect(socket_timeout=5)
    ignore_errors(held.connection, held.connection.close)


def _run_for(loop: Iterator[Any], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        next(loop)


def _restart(redis: Service, tmp_path: Path) -> Service:
    port = int(redis.argv[redis.argv.index("--port") + 1])
    restarted = redis_service(port, tmp_path, append_only=True)
    restarted.start()
    wait_until(lambda: redis_answers(restarted), what="restarted redis")
    return restarted


def test_closing_a_lost_connection_with_a_task_in_hand_does_not_raise(redis: Service) -> None:
    held = _consumer_holding_a_task(redis_url_of(redis))
    assert isinstance(held.connection.transport, broker_transport.Transport)

    _lose_the_broker(held, redis)  # raised AttributeError on kombu's own transport


def test_kombus_own_transport_crashes_there_which_is_why_hookfleet_registers_its_own(
    redis: Service,
) -> None:
    held = _consumer_holding_a_task(redis_url_of(redis), transport=kombu_redis.Transport)

    with pytest.raises(AttributeError, match="hostname"):
        _lose_the_broker(held, redis)


def test_the_task_in_hand_is_delivered_again_once_redis_is_back(
    redis: Service, tmp_path: Path
) -> None:
    url = redis_url_of(redis)
    _lose_the_broker(_consumer_holding_a_task(url), redis)
    redis = _restart(redis, tmp_path)
    try:
        redelivered: list[Any] = []
        with (
            Connection(url, transport_options=OPTIONS) as connection,
            connection.Consumer([TASKS], callbacks=[lambda body, _: redelivered.append(body)]),
        ):
            deadline = time.monotonic() + 20
            while not redelivered and time.monotonic() < deadline:
                with contextlib.suppress(TimeoutError):
                    connection.drain_events(timeout=0.5)
        assert redelivered == [{"task": "held"}]
    finally:
        redis.stop()


def test_the_fleets_celery_apps_use_it_and_keep_the_redis_url() -> None:
    app = make_celery(make_settings())

    with app.connection_for_read() as connection:
        assert isinstance(connection.transport, broker_transport.Transport)
        assert connection.as_uri().startswith("redis://")  # Flower reads the broker from it
