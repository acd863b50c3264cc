"""The bench plays autovacuum's analyze by autovacuum's own rule, not by analyzing everything."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator

import psycopg
import pytest

from tests.bench.fleet_bench import DUE_FOR_ANALYZE

pytestmark = pytest.mark.integration


@pytest.fixture
def probe(database_url: str) -> Iterator[tuple[psycopg.Connection, str]]:
    table = f"analyze_probe_{secrets.token_hex(4)}"
    with psycopg.connect(database_url, autocommit=True) as connection:
        connection.execute(f"CREATE TABLE {table} (id int)")
        try:
            yield connection, table
        finally:
            connection.execute(f"DROP TABLE {table}")


def _insert(connection: psycopg.Connection, table: str, rows: int, changed: int) -> None:
    """Insert `rows`, then wait until the statistics collector counts `changed` since analyze."""
    connection.execute("SELECT pg_stat_force_next_flush()")
    connection.execute(f"INSERT INTO {table} SELECT generate_series(1, %s)", (rows,))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        row = connection.execute(
            "SELECT n_mod_since_analyze FROM pg_stat_user_tables WHERE relname = %s", (table,)
        ).fetchone()
        if row is not None and row[0] == changed:
            return
        connection.execute("SELECT pg_stat_clear_snapshot()")
        time.sleep(0.05)
    raise AssertionError(f"{table}: the statistics never counted {changed} changed rows")


def _due(connection: psycopg.Connection, table: str) -> bool:
    return f"public.{table}" in {name for (name,) in connection.execute(DUE_FOR_ANALYZE)}


def test_a_table_is_due_after_fifty_changes_then_after_a_tenth_of_its_rows_more(
    probe: tuple[psycopg.Connection, str],
) -> None:
    connection, table = probe
    _insert(connection, table, 40, changed=40)
    assert not _due(connection, table)  # autovacuum_analyze_threshold is 50
    _insert(connection, table, 20, changed=60)
    assert _due(connection, table)

    connection.execute(f"ANALYZE {table}")  # 60 rows now: due after 50 + 6 changes
    _insert(connection, table, 50, changed=50)
    assert not _due(connection, table)
    _insert(connection, table, 10, changed=60)
    assert _due(connection, table)
