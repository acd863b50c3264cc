"""When PostgreSQL goes away the gateway refuses with 503, so the provider retries; nothing is lost."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from schemas.migrate import upgrade
from tests.conftest import STRIPE_SECRET, make_settings
from tests.integration.conftest import fleet_env, redis_url_of
from tests.signing import sign_stripe
from tests.support.private_postgres import PrivatePostgres
from tests.support.processes import Service, free_port, gateway_service, wait_for_http
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


def _post(url: str) -> httpx.Response:
    body = body_of(StripeCustomer.new().event("checkout.session.completed"))
    headers = sign_stripe(body, secret=STRIPE_SECRET, at=datetime.now(UTC))
    return httpx.post(f"{url}/webhooks/stripe", content=body, headers=headers, timeout=15)


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
        down = _post(url)
        ready = httpx.get(f"{url}/readyz", timeout=15)

        assert (down.status_code, down.json()) == (503, {"error": "inbox_unavailable"})
        assert ready.status_code == 503
        assert ready.json()["checks"]["database"] is False

        own_postgres.start()
        assert _post(url).status_code == 200
    finally:
        gateway.stop()
