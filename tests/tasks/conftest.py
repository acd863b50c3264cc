"""One provider sandbox process for the outbound-client tests, reset before each test that asks;
process_events run in-process on the test database."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
import structlog
from sqlalchemy import Engine
from sqlalchemy.orm import sessionmaker

import tasks.lifecycle  # noqa: F401  (registers the database steps a batch runs in-process)
from schemas.settings import Settings
from tasks import dispatch
from tasks.dispatch import process_events
from tests.support.sandbox import SandboxServer
from workers import runtime


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    with SandboxServer(tmp_path_factory.mktemp("sandbox")) as server:
        yield server


@pytest.fixture
def fresh_sandbox(sandbox: SandboxServer) -> SandboxServer:
    """Faults, recorded calls and rate limits cleared (seeded provider state stays, as it would)."""
    sandbox.reset()
    return sandbox


@pytest.fixture
def worker_runtime(
    monkeypatch: pytest.MonkeyPatch, pg_engine: Engine, pg_settings: Settings
) -> None:
    """The worker's settings and sessions on the test database. With no provider configured the
    lifecycle step is an event's last, so nothing goes to a broker."""
    monkeypatch.setattr(runtime, "settings", lambda: pg_settings)
    monkeypatch.setattr(
        runtime, "sessions", lambda: sessionmaker(pg_engine, expire_on_commit=False)
    )
    monkeypatch.setattr(dispatch, "publish_process_events_singly", _no_publish)


def _no_publish(inbox_ids: list[int]) -> None:
    assert not inbox_ids, f"events {inbox_ids} failed alone too"


def run_batch(inbox_ids: list[int]) -> dict[str, int]:
    """process_events as a worker runs a batch delivered for the first time."""
    structlog.contextvars.clear_contextvars()  # as a worker starts each task
    process_events.push_request(id=f"batch-{secrets.token_hex(4)}", retries=0, delivery_info={})
    try:
        outcome: dict[str, int] = process_events.run(inbox_ids)
        return outcome
    finally:
        process_events.pop_request()
