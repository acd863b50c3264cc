"""The relay: committed rows reach the broker in batches; what it does not publish, the sweep does."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis as redis_client
from celery.utils.saferepr import saferepr
from sqlalchemy import Engine, event, select, text, update
from sqlalchemy.orm import Session

from schemas.db import make_async_engine
from schemas.settings import Settings
from schemas.tables import InboxStatus, WebhookEvent, utcnow
from tests.conftest import make_settings
from tests.support.broker import taking
from tests.support.processes import free_port, redis_service, wait_until
from webhooks_gateway.inbox_writer import InboxRow, InboxWriter
from webhooks_gateway.kept_connection import KeptConnection
from webhooks_gateway.relay import Relay
from workers.celery_app import make_celery
from workers.enqueue import (
    EVENTS_PER_MESSAGE,
    PROCESS_EVENTS,
    publish_process_events,
    spread,
)
from workers.maintenance import requeue_stuck
from workers.queues import BACKLOG_QUEUE, QUEUES


class Broker:
    """Records the batches the relay publishes; `up=False` plays a broker that takes nothing."""

    def __init__(self, *, up: bool = True) -> None:
        self.up = up
        self.batches: list[list[int]] = []

    async def __call__(self, inbox_ids: Sequence[int]) -> Sequence[int]:
        if not self.up:
            return []
        self.batches.append(list(inbox_ids))
        return list(inbox_ids)

    @property
    def published(self) -> list[int]:
        return [inbox_id for batch in self.batches for inbox_id in batch]


def _row() -> InboxRow:
    return InboxRow("stripe", f"evt_R{secrets.token_hex(8)}", "invoice.paid", b"{}", {})


def _deliver(
    settings: Settings, broker: Broker, count: int, *, relay_runs: bool = True, **relay: Any
) -> list[int]:
    """`count` concurrent deliveries through writer and relay; returns their inbox ids."""

    async def main() -> list[int]:
        engine = make_async_engine(settings)
        relayer = Relay(engine, broker, **relay)
        writer = InboxWriter(engine, on_commit=relayer.add)
        if relay_runs:
            await relayer.start()
        await writer.start()
        answers = await asyncio.gather(*(writer.write([_row()]) for _ in range(count)))
        await writer.stop()
        if relay_runs:
            await relayer.stop()
        await engine.dispose()
        return [inbox_id for (inbox_id,) in answers if inbox_id is not None]

    return asyncio.run(main())


def _rows(pg_engine: Engine, ids: list[int]) -> list[WebhookEvent]:
    with Session(pg_engine) as session:
        return list(session.scalars(select(WebhookEvent).where(WebhookEvent.id.in_(ids))))


def _swept_a_minute_later(session: Session) -> list[int]:
    """What the inbox sweep publishes 61 s from now (received rows older than 60 s)."""
    swept: list[int] = []
    requeue_stuck(
        session,
        taking(swept),
        utcnow() + timedelta(seconds=61),
        received_after=timedelta(seconds=60),
        enqueued_after=timedelta(hours=1),
    )
    return swept


def test_committed_rows_are_published_in_batches_once_each_and_marked_enqueued(
    pg_settings: Settings, pg_engine: Engine
) -> None:
    broker = Broker()

    ids = _deliver(pg_settings, broker, 80)

    assert sorted(broker.published) == sorted(ids)
    assert len(broker.batches) < len(ids)
    rows = _rows(pg_engine, ids)
    assert {row.status for row in rows} == {InboxStatus.ENQUEUED}
    assert all(row.enqueued_at is not None for row in rows)


def test_a_row_a_worker_finished_before_the_relay_marked_it_keeps_its_status_and_gets_its_time(
    pg_settings: Settings, pg_engine: Engine
) -> None:
    class FastWorker(Broker):
        """Publishes, and a worker processes each row before the relay's mark lands."""

        async def __call__(self, inbox_ids: Sequence[int]) -> Sequence[int]:
            published = await super().__call__(inbox_ids)
            with Session(pg_engine) as session, session.begin():
                session.execute(
                    update(WebhookEvent)
                    .where(WebhookEvent.id.in_(published))
                    .values(status=InboxStatus.PROCESSED)
                )
            return published

    ids = _deliver(pg_settings, FastWorker(), 12)

    rows = _rows(pg_engine, ids)
    assert {row.status for row in rows} == {InboxStatus.PROCESSED}
    assert all(row.enqueued_at is not None for row in rows)


def test_a_row_a_worker_holds_locked_is_skipped_by_the_mark_instead_of_waited_for(
    pg_settings: Settings, pg_engine: Engine
) -> None:
    held: list[int] = []

    class LockingWorker(Broker):
        """Publishes; a worker takes the first row and holds its lock past the relay's mark."""

        def __init__(self, session: Session) -> None:
            super().__init__()
            self.session = session

        async def __call__(self, inbox_ids: Sequence[int]) -> Sequence[int]:
            published = await super().__call__(inbox_ids)
            if not held:
                held.append(published[0])
                self.session.get(WebhookEvent, published[0], with_for_update=True)
            return published

    with Session(pg_engine) as worker, worker.begin():
        ids = _deliver(pg_settings, LockingWorker(worker), 12)  # returns: the mark did not wait

        rows = {row.id: row for row in _rows(pg_engine, ids)}
        assert rows[held[0]].status == InboxStatus.RECEIVED
        assert rows[held[0]].enqueued_at is None
        others = [row for inbox_id, row in rows.items() if inbox_id != held[0]]
        assert {row.status for row in others} == {InboxStatus.ENQUEUED}


def test_the_mark_sends_postgresql_one_statement_text_whatever_the_batch_size(
    pg_settings: Settings, pg_engine: Engine
) -> None:
    """One text is parsed and prepared once; an IN list made a new text (and plan) per size."""
    texts: set[str] = set()

    def record(*args: Any) -> None:
        statement = args[2]
        if statement.lstrip().startswith("UPDATE webhook_events"):
            texts.add(statement)

    async def main() -> None:
        engine = make_async_engine(pg_settings)
        event.listen(engine.sync_engine, "before_cursor_execute", record)
        relay = Relay(engine, Broker(), linger_seconds=0)
        writer = InboxWriter(engine, on_commit=relay.add)
        await relay.start()
        await writer.start()
        for size in (1, 2, 5):
            await asyncio.gather(*(writer.write([_row()]) for _ in range(size)))
            await relay.drained()
        await writer.stop()
        await relay.stop()
        await engine.dispose()

    asyncio.run(main())

    assert len(texts) == 1


def test_a_kept_connection_asked_for_custom_plans_has_them_also_once_replaced(
    pg_settings: Settings,
) -> None:
    """The relay's mark is planned for each batch and the inbox's size now, never by a plan kept
    from when the inbox was small."""

    async def main() -> list[str]:
        engine = make_async_engine(pg_settings)
        kept = KeptConnection(engine, custom_plans=True)
        modes = [row[0] for row in await kept.execute(text("SHOW plan_cache_mode"))]
        await kept.close()  # the next statement connects afresh
        modes += [row[0] for row in await kept.execute(text("SHOW plan_cache_mode"))]
        await kept.close()
        await engine.dispose()
        return modes

    assert asyncio.run(main()) == ["force_custom_plan", "force_custom_plan"]


def test_batches_are_no_larger_than_the_limit(pg_settings: Settings) -> None:
    broker = Broker()

    ids = _deliver(pg_settings, broker, 40, max_batch=7)

    assert sorted(broker.published) == sorted(ids)
    assert max(len(batch) for batch in broker.batches) <= 7


def test_rows_committed_within_the_linger_go_out_in_one_batch(pg_settings: Settings) -> None:
    broker = Broker()

    async def main() -> None:
        engine = make_async_engine(pg_settings)
        relay = Relay(engine, broker, linger_seconds=0.3)
        await relay.start()
        relay.add([1])
        await asyncio.sleep(0.05)
        relay.add([2, 3])
        await relay.drained()
        await relay.stop()
        await engine.dispose()

    asyncio.run(main())

    assert broker.batches == [[1, 2, 3]]


def test_rows_the_broker_did_not_take_stay_received_and_the_sweep_publishes_them(
    pg_settings: Settings, pg_engine: Engine, db_session: Session
) -> None:
    ids = _deliver(pg_settings, Broker(up=False), 10)
    assert {row.status for row in _rows(pg_engine, ids)} == {InboxStatus.RECEIVED}

    assert set(ids) <= set(_swept_a_minute_later(db_session))


def test_a_gateway_that_dies_between_commit_and_publish_leaves_its_rows_to_the_sweep(
    pg_settings: Settings, pg_engine: Engine, db_session: Session
) -> None:
    broker = Broker()

    ids = _deliver(pg_settings, broker, 10, relay_runs=False)  # acknowledged, relay never ran

    assert broker.published == []
    assert {row.status for row in _rows(pg_engine, ids)} == {InboxStatus.RECEIVED}
    assert set(ids) <= set(_swept_a_minute_later(db_session))


def test_ids_over_the_backlog_bound_are_left_received_for_the_sweep(
    pg_settings: Settings, pg_engine: Engine
) -> None:
    async def main() -> tuple[list[int], Broker]:
        engine = make_async_engine(pg_settings)
        broker = Broker()
        relay = Relay(engine, broker, max_pending=3)
        writer = InboxWriter(engine, on_commit=relay.add)
        await writer.start()
        ids = [(await writer.write([_row()]))[0] for _ in range(5)]  # relay not started yet
        await writer.stop()
        await relay.start()
        await relay.stop()
        await engine.dispose()
        return [i for i in ids if i is not None], broker

    ids, broker = asyncio.run(main())

    assert broker.published == ids[:3]
    statuses = {row.id: row.status for row in _rows(pg_engine, ids)}
    assert [statuses[i] for i in ids] == [InboxStatus.ENQUEUED] * 3 + [InboxStatus.RECEIVED] * 2


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[str]:
    service = redis_service(free_port(), tmp_path)
    service.start()
    url = f"redis://127.0.0.1:{service.argv[service.argv.index('--port') + 1]}/0"
    client = redis_client.Redis.from_url(url)
    wait_until(lambda: _pings(client), what="private redis-server")
    try:
        yield url
    finally:
        client.close()
        service.stop()


def _pings(client: redis_client.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis_client.RedisError:
        return False


def test_celery_batch_publish_spreads_the_rows_evenly_over_process_events_messages(
    private_redis: str,
) -> None:
    app = make_celery(make_settings(redis_url=private_redis))
    ids = list(range(1, EVENTS_PER_MESSAGE + 3))

    published = publish_process_events(app, ids)

    assert published == ids
    queue = redis_client.Redis.from_url(private_redis)
    messages = [json.loads(raw) for raw in queue.lrange("dispatch", 0, -1)]
    queue.close()
    assert {message["headers"]["task"] for message in messages} == {PROCESS_EVENTS}
    batches = [json.loads(base64.b64decode(message["body"]))[0][0] for message in messages]
    assert sorted(len(batch) for batch in batches) == [len(ids) // 2, len(ids) // 2]
    assert sorted(i for batch in batches for i in batch) == ids


def test_batches_published_to_the_backlog_queue_land_there_and_not_on_dispatch(
    private_redis: str,
) -> None:
    app = make_celery(make_settings(redis_url=private_redis))
    ids = list(range(1, 2 * EVENTS_PER_MESSAGE + 1))

    assert publish_process_events(app, ids, queue=BACKLOG_QUEUE) == ids

    queue = redis_client.Redis.from_url(private_redis)
    lengths = {name: queue.llen(name) for name in QUEUES}
    queue.close()
    assert {name: length for name, length in lengths.items() if length} == {BACKLOG_QUEUE: 2}


@pytest.mark.parametrize(
    ("count", "sizes"), [(0, []), (1, [1]), (16, [16]), (17, [9, 8]), (40, [14, 13, 13])]
)
def test_rows_are_cut_into_the_fewest_even_chunks(count: int, sizes: list[int]) -> None:
    chunks = spread(list(range(count)), 16)

    assert [len(chunk) for chunk in chunks] == sizes
    assert [i for chunk in chunks for i in chunk] == list(range(count))


def test_celery_batch_publish_to_a_dead_broker_reports_nothing_published() -> None:
    app = make_celery(make_settings(redis_url=f"redis://127.0.0.1:{free_port()}/0"))

    assert publish_process_events(app, [1, 2]) == []


def test_shutdown_with_the_broker_hanging_gives_up_after_the_grace_and_leaves_rows_received(
    pg_settings: Settings, pg_engine: Engine
) -> None:
    async def hanging(inbox_ids: Sequence[int]) -> Sequence[int]:
        await asyncio.sleep(3600)
        return list(inbox_ids)

    async def main() -> list[int]:
        engine = make_async_engine(pg_settings)
        relay = Relay(engine, hanging, stop_grace_seconds=0.2)
        writer = InboxWriter(engine, on_commit=relay.add)
        await relay.start()
        await writer.start()
        ids = [(await writer.write([_row()]))[0] for _ in range(3)]
        await writer.stop()
        await relay.stop()
        await engine.dispose()
        return [i for i in ids if i is not None]

    ids = asyncio.run(main())

    assert len(ids) == 3
    assert {row.status for row in _rows(pg_engine, ids)} == {InboxStatus.RECEIVED}


def test_batch_messages_show_their_ids_to_flower_as_celery_would_write_them(
    private_redis: str,
) -> None:
    app = make_celery(make_settings(redis_url=private_redis))
    ids = [10**12 + i for i in range(2 * EVENTS_PER_MESSAGE)]

    publish_process_events(app, ids[:EVENTS_PER_MESSAGE])
    app.amqp.argsrepr_maxsize = 40  # a text past Celery's limit is shortened by Celery
    publish_process_events(app, ids[EVENTS_PER_MESSAGE:])

    queue = redis_client.Redis.from_url(private_redis)
    shown = [json.loads(raw)["headers"]["argsrepr"] for raw in queue.lrange("dispatch", 0, -1)]
    queue.close()
    assert sorted(shown, key=len) == [
        saferepr([ids[EVENTS_PER_MESSAGE:]], 40),
        saferepr([ids[:EVENTS_PER_MESSAGE]], 1024),
    ]
