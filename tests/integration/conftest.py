"""The fleet under test: a private Redis, the real gateway over HTTP and a real Celery worker process."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from schemas.settings import Settings
from tests.conftest import STRIPE_OLD_SECRET, STRIPE_SECRET
from tests.support.processes import (
    Service,
    free_port,
    gateway_service,
    redis_service,
    wait_for_http,
    wait_for_worker,
    wait_until,
    worker_service,
)
from workers.celery_app import make_celery

pytestmark = pytest.mark.integration


def fleet_env(database_url: str, redis_url: str) -> dict[str, str]:
    """What an operator would export; the processes read it as they would in production."""
    return {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "STRIPE_WEBHOOK_SECRET": f"{STRIPE_SECRET},{STRIPE_OLD_SECRET}",
        "STRIPE_PRICE_TIERS": '{"price_FixturePriceMember1": "member", "price_Patron": "patron"}',
        "LOG_JSON": "true",
    }


@dataclass
class Fleet:
    url: str
    redis_url: str
    env: dict[str, str]
    gateway: Service
    worker: Service
    redis: Service

    def post_stripe(self, body: bytes, headers: dict[str, str]) -> httpx.Response:
        return httpx.post(f"{self.url}/webhooks/stripe", content=body, headers=headers, timeout=10)


@pytest.fixture(scope="session")
def fleet_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fleet")


@pytest.fixture(scope="session")
def redis(fleet_dir: Path) -> Iterator[Service]:
    port = free_port()
    service = redis_service(port, fleet_dir)
    service.start()
    wait_until(lambda: _redis_up(port), what="private redis-server")
    yield service
    service.stop()


def _redis_up(port: int) -> bool:
    import redis as redis_client

    try:
        return bool(redis_client.Redis(port=port, socket_timeout=0.5).ping())
    except redis_client.RedisError:
        return False


def redis_url_of(service: Service) -> str:
    port = service.argv[service.argv.index("--port") + 1]
    return f"redis://127.0.0.1:{port}/0"


@pytest.fixture(scope="session")
def fleet(
    database_url: str, redis: Service, fleet_dir: Path, pg_settings: Settings
) -> Iterator[Fleet]:
    env = fleet_env(database_url, redis_url_of(redis))
    port = free_port()
    gateway = gateway_service(port, env, fleet_dir)
    worker = worker_service(env, fleet_dir)
    gateway.start()
    worker.start()
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_http(f"{url}/healthz", gateway)
        control = make_celery(pg_settings.model_copy(update={"redis_url": redis_url_of(redis)}))
        wait_for_worker(lambda: bool(control.control.ping(timeout=0.5)), worker)
        yield Fleet(url, redis_url_of(redis), env, gateway, worker, redis)
    finally:
        worker.stop()
        gateway.stop()
