"""Once-only side effects on real PostgreSQL: done once, skipped after, released when the call fails."""

from __future__ import annotations

import secrets

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from schemas.tables import Effect
from workers.effects import EffectState, once


@pytest.fixture
def sessions(pg_engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(pg_engine, expire_on_commit=False)


def _key() -> str:
    return f"test:effect:{secrets.token_hex(6)}"


def _state(sessions: sessionmaker[Session], key: str) -> str | None:
    with sessions() as session:
        return session.scalar(select(Effect.state).where(Effect.key == key))


def test_first_run_performs_the_effect_and_records_it_done(sessions: sessionmaker[Session]) -> None:
    key = _key()
    performed = []

    with once(sessions, key) as go:
        if go:
            performed.append(key)

    assert performed == [key]
    assert _state(sessions, key) == EffectState.DONE


def test_repeat_under_the_same_key_is_skipped(sessions: sessionmaker[Session]) -> None:
    key = _key()
    with once(sessions, key):
        pass

    with once(sessions, key) as go:
        assert go is False


def test_failed_call_releases_the_claim_so_a_retry_can_perform_it(
    sessions: sessionmaker[Session],
) -> None:
    key = _key()

    def failing_call() -> None:
        with once(sessions, key) as go:
            assert go
            raise ConnectionError("provider unreachable")

    with pytest.raises(ConnectionError):
        failing_call()
    assert _state(sessions, key) is None

    with once(sessions, key) as again:
        assert again is True


def test_claim_left_started_by_a_dead_worker_is_not_repeated(
    sessions: sessionmaker[Session],
) -> None:
    key = _key()
    with sessions.begin() as session:
        session.add(Effect(key=key, state=EffectState.STARTED, result={}))

    with once(sessions, key) as go:
        assert go is False
