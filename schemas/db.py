"""Engines and sessions: sync for workers and the CLI, async for the gateway, one URL for both."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm import Session, sessionmaker

from schemas.settings import Settings

# A database that is gone must fail a request quickly (503), not hang it.
CONNECT_TIMEOUT_SECONDS = 3
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
    """Python lists go to PostgreSQL as binary arrays: the text form escapes every element with a
    regular expression, a real cost for the inbox writer's batch of bodies (see inbox_writer)."""
    from psycopg.types.array import ListBinaryDumper

    dbapi_connection.driver_connection.adapters.register_dumper(list, ListBinaryDumper)


def make_engine(settings: Settings) -> Engine:
    engine = create_engine(
        settings.database_url, connect_args=_connect_args(settings), pool_pre_ping=True
    )
    if settings.is_sqlite:
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


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
