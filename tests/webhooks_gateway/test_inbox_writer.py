"""Group commit: concurrent deliveries share a transaction, and each is answered only after it."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Session

from schemas.db import make_async_engine
from schemas.settings import Settings
from schemas.tables import InboxStatus, WebhookEvent
from tests.conftest import make_settings
from tests.support.processes import free_port
from webhooks_gateway.inbox_writer import InboxRow, InboxUnavailableError, InboxWriter


def _row(event_id: str | None = None, *, event_type: str = "invoice.paid") -> InboxRow:
    return InboxRow(
        provider="stripe",
        event_id=event_id or f"evt_W{secrets.token_hex(8)}",
        event_type=event_type,
        body=b'{"id": "evt"}',
        headers={"stripe-signature": "t=1,v1=00"},
    )


def _run(
    settings: Settings,
    scenario: Callable[[InboxWriter], Awaitable[Any]],
    commits: list[list[int]] | None = None,
) -> Any:
    async def main() -> Any:
        engine: AsyncEngine = make_async_engine(settings)
        writer = InboxWriter(engine, on_commit=(commits if commits is not None else []).append)
        await writer.start()
        try:
            return await scenario(writer)
        finally:
            await writer.stop()
            await engine.dispose()

    return asyncio.run(main())


def _stored(pg_engine: Engine, rows: list[InboxRow]) -> list[WebhookEvent]:
    with Session(pg_engine) as session:
        return list(
            session.scalars(
                select(WebhookEvent).where(WebhookEvent.event_id.in_([r.event_id for r in rows]))
            )
        )


def test_concurrent_deliveries_share_transactions_and_each_gets_its_own_committed_row(
    pg_settings: Settings, pg_engine: Engine
) -> None:
    rows = [_row() for _ in range(60)]
    commits: list[list[int]] = []
    visible_on_return: list[bool] = []

    async def deliver(writer: InboxWriter, row: InboxRow) -> int | None:
        (inbox_id,) = await writer.write([row])
        # Acknowledged means committed: another connection already sees the row.
        visible_on_return.append(len(_stored(pg_engine, [row])) == 1)
        return inbox_id

    async def scenario(writer: InboxWriter) -> list[int | None]:
        return list(await asyncio.gather(*(deliver(writer, row) for row in rows)))

    ids = _run(pg_settings, scenario, commits)

    assert None not in ids
    assert len(set(ids)) == len(rows)
    assert all(visible_on_return)
    assert sorted(inbox_id for commit in commits for inbox_id in commit) == sorted(ids)
    assert len(commits) < len(rows)  # grouped, not one transaction per delivery
    stored = _stored(pg_engine, rows)
    assert {row.status for row in stored} == {InboxStatus.RECEIVED}
    assert {row.id for row in stored} == set(ids)


def test_bodies_and_headers_are_stored_exactly_as_received_when_batched(
    pg_settings: Settings, pg_engine: Engine
) -> None:
    awkward = [
        InboxRow(
            provider="stripe",
            event_id=f"evt_W{secrets.token_hex(8)}",
            event_type="invoice.paid",
            body=bytes(range(256)) + b'{"quote": "\\"", "brace": "{}", "comma": ","}' * index,
            headers={"stripe-signature": f't=1,v1="\\x{index}"', "x-note": "caf\u00e9 {,}"},
        )
        for index in range(8)
    ]

    async def scenario(writer: InboxWriter) -> list[list[int | None]]:
        return list(await asyncio.gather(*(writer.write([row]) for row in awkward)))

    _run(pg_settings, scenario)

    stored = {row.event_id: row for row in _stored(pg_engine, awkward)}
    assert [(stored[r.event_id].body, stored[r.event_id].headers) for r in awkward] == [
        (r.body, r.headers) for r in awkward
    ]


def _terminate_backends(pg_engine: Engine, application_name: str) -> int:
    """What a database restart does to the connections a writer keeps between batches."""
    with pg_engine.connect() as connection:
        killed = connection.execute(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = :name"
            ),
            {"name": application_name},
        ).scalar_one()
    return int(killed)


def test_a_kept_connection_the_database_dropped_is_replaced_without_failing_the_delivery(
    pg_settings: Settings, pg_engine: Engine
) -> None:
    name = f"inbox_writer_{secrets.token_hex(4)}"
    settings = pg_settings.model_copy(
        update={"database_url": f"{pg_settings.database_url}?application_name={name}"}
    )
    after = [_row() for _ in range(6)]

    async def scenario(writer: InboxWriter) -> int:
        await asyncio.gather(*(writer.write([_row()]) for _ in range(6)))  # the writer connects
        killed = _terminate_backends(pg_engine, name)
        for row in after:
            await writer.write([row])
        return killed

    assert _run(settings, scenario) >= 1
    assert len(_stored(pg_engine, after)) == len(after)


def test_same_event_twice_in_one_batch_is_stored_once_and_answered_duplicate_once(
    pg_settings: Settings, pg_engine: Engine
) -> None:
    row = _row()

    async def scenario(writer: InboxWriter) -> list[list[int | None]]:
        return list(await asyncio.gather(writer.write([row]), writer.write([row])))

    first, second = _run(pg_settings, scenario)

    assert sorted([first[0] is None, second[0] is None]) == [False, True]
    (stored,) = _stored(pg_engine, [row])
    assert stored.id in (first[0], second[0])


def test_a_delivery_whose_request_is_cancelled_is_still_committed_with_its_batch_mates(
    pg_settings: Settings, pg_engine: Engine
) -> None:
    hung_up, stayed = _row(), _row()

    async def scenario(writer: InboxWriter) -> list[int | None]:
        gone = asyncio.ensure_future(writer.write([hung_up]))
        kept = asyncio.ensure_future(writer.write([stayed]))
        await asyncio.sleep(0)  # both rows are with the writer
        gone.cancel()
        answer = await kept
        assert gone.cancelled()
        return answer

    (stayed_id,) = _run(pg_settings, scenario)

    assert stayed_id is not None
    assert {row.event_id for row in _stored(pg_engine, [hung_up, stayed])} == {
        hung_up.event_id,
        stayed.event_id,
    }


def test_event_already_in_the_inbox_is_answered_duplicate_and_commits_nothing(
    pg_settings: Settings, pg_engine: Engine
) -> None:
    row = _row()
    _run(pg_settings, lambda writer: writer.write([row]))
    commits: list[list[int]] = []

    again = _run(pg_settings, lambda writer: writer.write([row]), commits)

    assert again == [None]
    assert commits == []
    assert len(_stored(pg_engine, [row])) == 1


@pytest.mark.parametrize(
    "refused",
    [
        _row(event_type="x" * 500),  # longer than the column
        _row(event_id="evt_W\x00nul"),  # PostgreSQL's text cannot hold NUL
    ],
    ids=["too_long", "nul_in_id"],
)
def test_a_delivery_the_database_refuses_fails_alone_and_its_batch_mates_are_stored(
    pg_settings: Settings, pg_engine: Engine, refused: InboxRow
) -> None:
    good = [_row() for _ in range(5)]

    async def scenario(writer: InboxWriter) -> list[Any]:
        writes = [writer.write([row]) for row in [*good[:2], refused, *good[2:]]]
        return list(await asyncio.gather(*writes, return_exceptions=True))

    answers = _run(pg_settings, scenario)

    assert isinstance(answers[2], InboxUnavailableError)
    assert all(isinstance(answer, list) and answer[0] is not None for answer in answers[:2])
    assert all(isinstance(answer, list) and answer[0] is not None for answer in answers[3:])
    assert len(_stored(pg_engine, good)) == 5
    if "\x00" not in refused.event_id:  # a NUL id cannot be in a text column, nor be looked up
        assert _stored(pg_engine, [refused]) == []


def test_a_multi_event_delivery_with_a_refused_row_stores_none_of_its_rows(
    pg_settings: Settings, pg_engine: Engine
) -> None:
    kept, refused = _row(), _row(event_type="x" * 500)

    with pytest.raises(InboxUnavailableError):
        _run(pg_settings, lambda writer: writer.write([kept, refused]))

    assert _stored(pg_engine, [kept, refused]) == []


def test_unreachable_database_fails_every_waiting_delivery_and_commits_nothing() -> None:
    settings = make_settings(database_url=f"postgresql://postgres@127.0.0.1:{free_port()}/none")
    commits: list[list[int]] = []

    async def scenario(writer: InboxWriter) -> list[Any]:
        writes = [writer.write([_row(), _row()]), writer.write([_row()])]
        return list(await asyncio.gather(*writes, return_exceptions=True))

    answers = _run(settings, scenario, commits)

    assert [type(answer) for answer in answers] == [InboxUnavailableError] * 2
    assert commits == []


def test_a_writer_that_is_not_running_refuses_rather_than_waits(pg_settings: Settings) -> None:
    async def main() -> None:
        engine = make_async_engine(pg_settings)
        try:
            with pytest.raises(InboxUnavailableError):
                await InboxWriter(engine).write([_row()])
        finally:
            await engine.dispose()

    asyncio.run(main())


def test_stop_commits_the_deliveries_already_waiting(
    pg_settings: Settings, pg_engine: Engine
) -> None:
    rows = [_row() for _ in range(20)]

    async def main() -> list[Any]:
        engine = make_async_engine(pg_settings)
        writer = InboxWriter(engine)
        await writer.start()
        writes = [asyncio.ensure_future(writer.write([row])) for row in rows]
        await asyncio.sleep(0)  # queued, not yet committed
        await writer.stop()
        answers = list(await asyncio.gather(*writes))
        await engine.dispose()
        return answers

    answers = asyncio.run(main())

    assert all(answer[0] is not None for answer in answers)
    assert len(_stored(pg_engine, rows)) == 20


def test_inbox_bodies_are_compressed_with_lz4_on_postgresql(pg_engine: Engine) -> None:
    with pg_engine.connect() as connection:
        method = connection.execute(
            text(
                "SELECT attcompression FROM pg_attribute"
                " WHERE attrelid = 'webhook_events'::regclass AND attname = 'body'"
            )
        ).scalar_one()
    assert method == "l"
