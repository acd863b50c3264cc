"""When PostgreSQL goes away the gateway refuses with 503, so the provider retries; nothing is lost."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg
import pytest

from schemas.migrate import upgrade
from tests.conftest import STRIPE_SECRET, make_settings
from tests.integration.conftest import fleet_env
from tests.signing import sign_stripe
from tests.support.private_postgres import PrivatePostgres
from tests.support.processes import Service, free_port, gateway_service, redis_url_of, wait_for_http
from tests.support.stripe_fixtures import StripeCustomer, body_of

pytestmark = pytest.mark.integration


@pytest.fixture
def own_postgres(tmp_path: Path) -> Iterator[PrivatePostgres]:
    server = PrivatePostgres(Path("/tmp") / f"hookfleet-pg-{tmp_path.name}", free_port())
    server.init()
    server.start()
    yield server
    server.stop()
    shutil.rmtree(server.directory, ignore_errors=True)


def _post(url: str, sent: list[str] | None = None) -> httpx.Response:
    event = StripeCustomer.new().event("checkout.session.completed")
    if sent is not None:
        sent.append(event["id"])
    body = body_of(event)
    headers = sign_stripe(body, secret=STRIPE_SECRET, at=datetime.now(UTC))
    return httpx.post(f"{url}/webhooks/stripe", content=body, headers=headers, timeout=15)


def _stored(database_url: str, event_ids: list[str]) -> int:
    with psycopg.connect(database_url) as connection:
        row = connection.execute(
            "SELECT count(*) FROM webhook_events WHERE event_id = ANY(%s)", (event_ids,)
        ).fetchone()
    return int(row[0]) if row else 0


def test_gateway_answers_503_while_postgres_is_stopped_and_recovers(
    own_postgres: PrivatePostgres, redis: Service, tmp_path: Path
) -> None:
    upgrade(make_settings(database_url=own_postgres.url))
    port = free_port()
    gateway = gateway_service(port, fleet_env(own_postgres.url, redis_url_of(redis)), tmp_path)
    gateway.start()
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_http(f"{url}/healthz", gateway)
        assert _post(url).status_code == 200

        own_postgres.stop()
        refused: list[str] = []
        during = [_post(url, refused) for _ in range(5)]
        ready = httpx.get(f"{url}/readyz", timeout=15)

        assert [(r.status_code, r.json()) for r in during] == [
            (503, {"error": "inbox_unavailable"})
        ] * 5
        assert ready.status_code == 503
        assert ready.json()["checks"]["database"] is False

        own_postgres.start()
        assert _post(url).status_code == 200
        assert _stored(own_postgres.url, refused) == 0  # nothing acknowledged was lost, none stored
    finally:
        gateway.stop()
