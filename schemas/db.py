"""Engines and sessions: sync for workers and the CLI, async for the gateway, one URL for both."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm import Session, sessionmaker

from schemas.settings import Settings

# A database that is gone must fail a request quickly (503), not hang it.
CONNECT_TIMEOUT_SECONDS = 3
# A pooled connection idle longer than this is pinged before use (see _ping_when_idle).
PING_AFTER_IDLE_SECONDS = 1.0
_CHECKED_IN_AT = "hookfleet.checked_in_at"
SQLITE_BUSY_TIMEOUT_MS = 5000


def _connect_args(settings: Settings) -> dict[str, Any]:
    if settings.is_sqlite:
        return {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
    return {"connect_timeout": CONNECT_TIMEOUT_SECONDS}


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL lets the gateway write while workers read; several processes share one file."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _binary_arrays(dbapi_connection: Any, _record: Any) -> None:
    """Python lists go to PostgreSQL as binary arrays: the text form checks every element against a
    regular expression (the relay marks a batch of up to 256 ids in one array)."""
    from psycopg.types.array import ListBinaryDumper

    dbapi_connection.driver_connection.adapters.register_dumper(list, ListBinaryDumper)


def make_engine(settings: Settings) -> Engine:
    engine = create_engine(settings.database_url, connect_args=_connect_args(settings))
    event.listen(engine, "checkin", _note_checkin)
    event.listen(engine, "checkout", _ping_when_idle(engine))
    if settings.is_sqlite:
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _note_checkin(_dbapi_connection: Any, record: Any) -> None:
    record.info[_CHECKED_IN_AT] = time.monotonic()


def _ping_when_idle(engine: Engine) -> Callable[[Any, Any, Any], None]:
    """`pool_pre_ping`, for a connection that sat in the pool over PING_AFTER_IDLE_SECONDS only.
    A worker checks a connection out for every event, and a ping on each was a round trip per
    event (measured: 0.7 ms of CPU per signup); a database gone since the last use of a busy
    connection fails that one transaction, which is retried, and the pool is renewed."""

    def checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        checked_in_at = record.info.get(_CHECKED_IN_AT)
        if checked_in_at is None or time.monotonic() - checked_in_at < PING_AFTER_IDLE_SECONDS:
            return  # just connected, or in use moments ago
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as exc:
            if engine.dialect.is_disconnect(exc, dbapi_connection, None):
                raise DisconnectionError from exc  # the pool connects afresh and tries again
            raise

    return checkout


def make_async_engine(settings: Settings) -> AsyncEngine:
    engine = create_async_engine(
        settings.async_database_url,
        connect_args=_connect_args(settings),
        pool_pre_ping=True,
        pool_size=10,
        max_overflow=10,
        pool_timeout=CONNECT_TIMEOUT_SECONDS,
    )
    if settings.is_sqlite:
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    else:
        event.listen(engine.sync_engine, "connect", _binary_arrays)
    return engine


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One transaction: committed when the block ends, rolled back when it raises."""
    with factory() as session, session.begin():
        yield session


def transaction_info(session: Session, key: str) -> dict[Any, Any]:
    """A dict kept on `session` for its current transaction only (a new one starts empty): what
    the transaction has locked or created, so later steps in it need not read it again."""
    transaction = session.get_transaction()
    held: tuple[object, dict[Any, Any]] | None = session.info.get(key)
    if held is None or held[0] is not transaction:
        held = session.info[key] = (transaction, {})
    return held[1]


def insert_ignoring_conflicts(dialect_name: str, table: Any) -> Any:
    """`INSERT ... ON CONFLICT DO NOTHING` for the backend in use (PostgreSQL or SQLite)."""
    from sqlalchemy.dialects import postgresql, sqlite

    insert = postgresql.insert if dialect_name == "postgresql" else sqlite.insert
    return insert(table).on_conflict_do_nothing()
