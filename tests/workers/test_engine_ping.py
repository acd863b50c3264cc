"""The workers' engine pings a pooled connection only after it sat idle, and replaces a dead one."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, text

import schemas.db
from schemas.db import make_engine
from schemas.settings import Settings


@pytest.fixture
def engine(pg_settings: Settings) -> Iterator[Engine]:
    engine = make_engine(pg_settings)
    yield engine
    engine.dispose()


@pytest.fixture
def pings(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every liveness ping the engine sends."""
    sent: list[object] = []
    do_ping = engine.dialect.do_ping

    def counted(dbapi_connection: Any) -> bool:
        sent.append(dbapi_connection)
        return do_ping(dbapi_connection)

    monkeypatch.setattr(engine.dialect, "do_ping", counted)
    return sent


def _backend_pid(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text("SELECT pg_backend_pid()")).scalar_one())


def test_a_connection_back_in_use_moments_after_its_last_use_is_not_pinged(
    engine: Engine, pings: list[object]
) -> None:
    first = _backend_pid(engine)

    assert _backend_pid(engine) == first
    assert pings == []


def test_a_connection_idle_past_the_threshold_is_pinged_before_use(
    engine: Engine, pings: list[object], monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _backend_pid(engine)
    monkeypatch.setattr(schemas.db, "PING_AFTER_IDLE_SECONDS", 0.0)

    assert _backend_pid(engine) == first
    assert len(pings) == 1


def test_an_idle_connection_the_server_dropped_is_replaced_without_an_error(
    engine: Engine, pg_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _backend_pid(engine)
    with pg_engine.connect() as admin:
        assert admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first}).scalar()
    monkeypatch.setattr(schemas.db, "PING_AFTER_IDLE_SECONDS", 0.0)

    assert _backend_pid(engine) != first
