"""Redis going away mid-delivery: closing the worker's connection must not end the worker, and no
task is lost, neither the one running nor the one Redis was handing over as it stopped.

The consumer here is built as a Celery worker builds its own (an event-loop hub, the task consumer
on the default channel, the control queue on a second channel, a BRPOP waiting on the task queue),
and the teardown is Celery 5.7.0's: collect the connection, then close it. Each gap is shown on
kombu's own Redis transport too, which is why hookfleet registers its own.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection, Exchange, Message, Queue
from kombu.asynchronous import Hub
from kombu.common import ignore_errors
from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError

from tests.conftest import make_settings
from tests.integration.conftest import restart_redis, start_redis
from tests.support.processes import Service, redis_url_of
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
class Worker:
    connection: Connection
    loop: Iterator[Any]
    received: list[Message] = field(default_factory=list)


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[Service]:
    service = start_redis(tmp_path, append_only=True)
    yield service
    service.stop()


def _worker(url: str, transport: type | None = None) -> Worker:
    """A worker-shaped consumer waiting on the task queue, which is empty; on the transport `url`
    resolves to unless told. It never acknowledges: whatever it receives is still running."""
    connection = Connection(url, transport=transport, transport_options=OPTIONS)
    hub = Hub()
    connection.register_with_event_loop(hub)
    worker = Worker(connection, hub.create_loop())
    connection.Consumer([TASKS], callbacks=[lambda _, m: worker.received.append(m)]).consume()
    connection.Consumer([CONTROL], channel=connection.channel(), callbacks=[]).consume()
    _run_until(worker, lambda: bool(connection.default_channel._in_poll), what="a BRPOP out")
    return worker


def _publish(url: str, body: dict[str, str]) -> None:
    with Connection(url) as connection:
        connection.Producer().publish(body, exchange=TASKS.exchange, routing_key="tasks")


def _worker_running_a_task(url: str, transport: type | None = None) -> Worker:
    """The worker has received one task and waits, its next BRPOP out on the empty queue."""
    worker = _worker(url, transport)
    _publish(url, {"task": "running"})
    _run_until(worker, lambda: bool(worker.received), what="the task received")
    _run_until(worker, lambda: bool(worker.connection.default_channel._in_poll), what="a BRPOP")
    return worker


def _run_until(worker: Worker, done: Any, *, what: str) -> None:
    deadline = time.monotonic() + 10
    while not done():
        assert time.monotonic() < deadline, f"never: {what}"
        next(worker.loop)


def _lose_the_broker(worker: Worker, redis: Service) -> None:
    """Redis stops; the event loop raises, as the worker's does, and Celery 5.7.0 tears down."""
    redis.stop()
    with pytest.raises(RedisConnectionError):
        _run_for(worker.loop, seconds=10)
    worker.connection.collect(socket_timeout=5)
    ignore_errors(worker.connection, worker.connection.close)


def _run_for(loop: Iterator[Any], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        next(loop)


def _delivered_after_restart(redis: Service, tmp_path: Path, within: float = 20) -> list[Any]:
    """What a fresh consumer receives first from the restarted Redis (acknowledged), waiting up to
    `within` seconds; a task in the unacked index comes back after the 1 s visibility timeout."""
    redis = restart_redis(redis, tmp_path, append_only=True)
    received: list[Any] = []

    def take(body: Any, message: Message) -> None:
        received.append(body)
        message.ack()

    try:
        with (
            Connection(redis_url_of(redis), transport_options=OPTIONS) as connection,
            connection.Consumer([TASKS], callbacks=[take]),
        ):
            deadline = time.monotonic() + within
            while not received and time.monotonic() < deadline:
                with contextlib.suppress(TimeoutError):
                    connection.drain_events(timeout=0.5)
        return received
    finally:
        redis.stop()


def _hand_over_as_redis_stops(worker: Worker, redis: Service) -> None:
    """A task is published while the worker's BRPOP waits: Redis takes it off the queue into the
    BRPOP's answer, then stops before the worker can record it as unacknowledged."""
    _publish(redis_url_of(redis), {"task": "handed over"})
    time.sleep(0.3)  # the answer is in the worker's socket
    _lose_the_broker(worker, redis)
    assert worker.received == []


def test_closing_a_lost_connection_with_a_task_running_does_not_raise(redis: Service) -> None:
    worker = _worker_running_a_task(redis_url_of(redis))
    assert isinstance(worker.connection.transport, broker_transport.Transport)

    _lose_the_broker(worker, redis)  # raised AttributeError on kombu's own transport


def test_kombus_own_transport_crashes_closing_it(redis: Service) -> None:
    worker = _worker_running_a_task(redis_url_of(redis), transport=kombu_redis.Transport)

    with pytest.raises(AttributeError, match="hostname"):
        _lose_the_broker(worker, redis)


def test_the_running_task_is_delivered_again_once_redis_is_back(
    redis: Service, tmp_path: Path
) -> None:
    _lose_the_broker(_worker_running_a_task(redis_url_of(redis)), redis)

    assert _delivered_after_restart(redis, tmp_path) == [{"task": "running"}]


def test_a_task_redis_handed_over_as_it_stopped_is_put_back_once_it_is_back(
    redis: Service, tmp_path: Path
) -> None:
    _hand_over_as_redis_stops(_worker(redis_url_of(redis)), redis)

    assert _delivered_after_restart(redis, tmp_path) == [{"task": "handed over"}]


def test_kombus_own_transport_loses_that_task(redis: Service, tmp_path: Path) -> None:
    _hand_over_as_redis_stops(_worker(redis_url_of(redis), transport=kombu_redis.Transport), redis)

    assert _delivered_after_restart(redis, tmp_path, within=5) == []


def test_the_fleets_celery_apps_use_it_and_keep_the_redis_url() -> None:
    app = make_celery(make_settings())

    with app.connection_for_read() as connection:
        assert isinstance(connection.transport, broker_transport.Transport)
        assert connection.as_uri().startswith("redis://")  # Flower reads the broker from it
