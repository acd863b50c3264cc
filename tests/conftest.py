"""Shared fixtures: services up, a PostgreSQL database of this run's own, settings built from literals."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from schemas.db import make_engine
from schemas.settings import Settings
from tests.support.databases import migrated_database
from tests.support.sandbox import SandboxServer

ROOT = Path(__file__).parents[1]
STRIPE_SECRET = "whsec_test_current_4eC39HqLyjWDarjtT1zdp7dc"
STRIPE_OLD_SECRET = "whsec_test_rotated_out_9f8e7d6c5b4a39281706"


@pytest.fixture(scope="session")
def services() -> None:
    """PostgreSQL and Redis answer on 127.0.0.1 (started here when they do not)."""
    subprocess.run(["bash", str(ROOT / "tests/support/ensure-services.sh")], check=True)


@pytest.fixture(scope="session")
def database_url(services: None) -> Iterator[str]:
    """A database of this test run's own on the shared server, migrated, dropped at the end."""
    with migrated_database("hookfleet_test") as url:
        yield url


def make_settings(**overrides: Any) -> Settings:
    """Settings from literals only; no test reads or mutates the environment or a .env file."""
    values: dict[str, Any] = {
        "stripe_webhook_secret": (SecretStr(STRIPE_SECRET), SecretStr(STRIPE_OLD_SECRET)),
        "stripe_price_tiers": {"price_FixturePriceMember1": "member", "price_Patron": "patron"},
        "log_json": True,
        **overrides,
    }
    return Settings(_env_file=None, **values)


@pytest.fixture(scope="session")
def pg_settings(database_url: str) -> Settings:
    return make_settings(database_url=database_url)


@pytest.fixture(scope="session")
def pg_engine(pg_settings: Settings) -> Iterator[Engine]:
    engine = make_engine(pg_settings)
    yield engine
    engine.dispose()


@pytest.fixture
def db_session(pg_engine: Engine) -> Iterator[Session]:
    """A session inside a transaction that is rolled back: each test sees only its own writes."""
    with pg_engine.connect() as connection:
        transaction = connection.begin()
        session = Session(bind=connection, join_transaction_mode="create_savepoint")
        try:
            yield session
        finally:
            session.close()
            transaction.rollback()


@pytest.fixture
def clean_sandbox(sandbox: SandboxServer) -> Iterator[SandboxServer]:
    """The `sandbox` of the requesting test's scope, emptied of records and faults before and after."""
    sandbox.reset()
    yield sandbox
    sandbox.reset()
