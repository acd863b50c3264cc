"""A database connection a gateway task keeps for itself, for single statements in autocommit."""

from __future__ import annotations

import contextlib
from typing import Any

import psycopg
from sqlalchemy import CursorResult, Executable, TextClause
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine


class KeptConnection:
    """One task's PostgreSQL connection, kept between uses in autocommit, where a single statement
    commits itself: one round trip (the inbox writer's INSERT, the relay's mark). A pool checkout,
    a liveness ping, BEGIN and COMMIT would each wait their turn on a busy event loop (measured:
    most of the ack latency), and each costs a wake-up of the process.

    A connection that fails is dropped. One kept from before a database restart fails on first
    use; the statement is tried once more on a fresh connection. (The writer's INSERT, had the lost
    one committed after all, then finds its rows and answers duplicate: stored either way, and the
    inbox sweep publishes what the relay never saw.)
    """

    def __init__(self, engine: AsyncEngine, *, custom_plans: bool = False) -> None:
        """`custom_plans`: PostgreSQL plans each execution for its parameters and the tables' size
        now, where a plan made once and kept could be wrong (see Relay)."""
        self._engine = engine
        self._postgres = engine.dialect.name == "postgresql"
        self._custom_plans = custom_plans
        self._connection: AsyncConnection | None = None
        self._driver: Any = None  # the psycopg connection under _connection
        self._texts: dict[TextClause, str] = {}

    async def execute(self, statement: Executable, params: Any = None) -> list[Any]:
        """The statement's rows (none when it returns none), committed. SQLite keeps no
        connection: each statement has a transaction of its own on a pooled one."""
        if not self._postgres:
            async with self._engine.begin() as connection:
                return _rows(await connection.execute(statement, params))
        was_kept = self._connection is not None
        try:
            return await self._execute(statement, params)
        except DBAPIError as exc:
            if not (was_kept and exc.connection_invalidated):
                raise
        return await self._execute(statement, params)

    async def _execute(self, statement: Executable, params: Any) -> list[Any]:
        if self._connection is None:
            connection = await self._engine.connect()
            self._connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
            if self._custom_plans:
                await self._connection.exec_driver_sql("SET plan_cache_mode = force_custom_plan")
            self._driver = (await self._connection.get_raw_connection()).driver_connection
        try:
            if isinstance(statement, TextClause):
                return await self._execute_text(statement, params)
            return _rows(await self._connection.execute(statement, params))
        except BaseException:
            await self.close()
            raise

    async def _execute_text(self, statement: TextClause, params: Any) -> list[Any]:
        """A textual statement goes straight to psycopg, compiled once to its parameter style:
        SQLAlchemy's async execution cost about 120 us of CPU per statement, and the inbox
        writer's INSERT is one statement per batch, often of one or two rows at moderate rates."""
        sql = self._texts.get(statement)
        if sql is None:
            sql = self._texts[statement] = statement.compile(dialect=self._engine.dialect).string
        connection, driver = self._connection, self._driver
        assert connection is not None  # connected by _execute, with its driver
        try:
            cursor = await driver.execute(sql, params)
            return await cursor.fetchall() if cursor.description else []
        except psycopg.Error as exc:  # as SQLAlchemy's execute raises it: callers sort by type
            lost = driver.broken or driver.closed  # what SQLAlchemy's psycopg dialect checks
            if lost:
                await connection.invalidate()
            raise DBAPIError.instance(
                sql, params, exc, psycopg.Error, connection_invalidated=lost
            ) from exc

    async def close(self) -> None:
        connection, self._connection, self._driver = self._connection, None, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.close()


def _rows(result: CursorResult[Any]) -> list[Any]:
    return list(result) if result.returns_rows else []
