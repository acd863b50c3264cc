"""The fleet under test: private Redis, the real gateway over HTTP, real Celery worker and beat
processes, and the provider sandbox; fault tests build fleets of their own with `running_fleet`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as redis_client
from pydantic import SecretStr

from schemas.settings import Settings
from tests.conftest import STRIPE_OLD_SECRET, STRIPE_SECRET, make_settings
from tests.signing import sign_stripe
from tests.support.processes import (
    Service,
    beat_service,
    free_port,
    gateway_service,
    redis_service,
    redis_url_of,
    wait_for_http,
    wait_for_worker,
    wait_until,
    worker_service,
)
from tests.support.provider_secrets import current
from tests.support.sandbox import SandboxServer
from tests.support.stripe_fixtures import body_of
from workers.celery_app import make_celery
from workers.sandbox.local_secrets import sandbox_overrides

pytestmark = pytest.mark.integration
OPERATORS_CHANNEL = "#hookfleet-ops-test"
NEVER_DURING_TESTS = "0 0 1 1 *"  # midnight UTC on New Year's Day


def fleet_env(
    database_url: str, redis_url: str, sandbox: SandboxServer | None = None
) -> dict[str, str]:
    """What an operator would export; the processes read it as they would in production.

    Retries and alerts run on short clocks here so a test sees 1 + 3 attempts in seconds.
    """
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "STRIPE_WEBHOOK_SECRET": f"{STRIPE_SECRET},{STRIPE_OLD_SECRET}",
        "STRIPE_PRICE_TIERS": '{"price_FixturePriceMember1": "member", "price_Patron": "patron"}',
        "LOG_JSON": "true",
        "RETRY_BACKOFF_SECONDS": "0.5",
        "ALERT_WINDOW_SECONDS": "1",
        "INBOX_SWEEP_EVERY_SECONDS": "2",
        # Longer than the suite runs, so the shared fleet's sweep leaves alone the rows in-process
        # tests on the same database leave behind (171 `received` and 277 `enqueued` at the end of
        # them, counted once), most of which no worker can process. The sweep's fault test runs a
        # fleet of its own with a short age.
        "INBOX_RECEIVED_STALE_SECONDS": "3600",
        "INBOX_ENQUEUED_STALE_SECONDS": "3600",
        "DEACTIVATION_SWEEP_EVERY_SECONDS": "2",
        # The scheduled jobs (09:00 and 21:00 by default) must not fire in the middle of a run:
        # their Slack summary would be one more post than a test counts.
        "LUMA_APPROVAL_SCHEDULE": NEVER_DURING_TESTS,
        "SLACK_SYNC_SCHEDULE": NEVER_DURING_TESTS,
        "SLACK_BOT_TOKEN": "xoxb-hookfleet-test",
        "SLACK_OPERATORS_CHANNEL": OPERATORS_CHANNEL,
        # Without a sandbox, a post (a dead letter's alert) is refused here, never sent to Slack.
        "SLACK_API_BASE": "http://127.0.0.1:9/api/",
    }
    if sandbox is not None:
        # Every outbound provider is played by the sandbox, as `make run` does without keys.
        configured = make_settings(
            clerk_webhook_signing_secret=(SecretStr(current("CLERK_WEBHOOK_SIGNING_SECRET")),),
            slack_bot_token=SecretStr("xoxb-hookfleet-test"),
        )
        env |= sandbox_overrides(configured, sandbox.url)
        env["SLACK_API_BASE"] = sandbox.slack_api_base
    env["CLERK_WEBHOOK_SIGNING_SECRET"] = current("CLERK_WEBHOOK_SIGNING_SECRET")
    return env


@dataclass
class Fleet:
    url: str
    redis_url: str
    env: dict[str, str]
    gateway: Service
    worker: Service
    services: dict[str, Service] = field(default_factory=dict)

    def post_stripe(self, body: bytes, headers: dict[str, str]) -> httpx.Response:
        return httpx.post(f"{self.url}/webhooks/stripe", content=body, headers=headers, timeout=15)

    def deliver(self, event: dict[str, Any], secret: str = STRIPE_SECRET) -> httpx.Response:
        body = body_of(event)
        return self.post_stripe(body, sign_stripe(body, secret=secret, at=datetime.now(UTC)))

    def settings(self) -> Settings:
        return make_settings(database_url=self.env["DATABASE_URL"], redis_url=self.redis_url)

    def start_worker(self, name: str = "worker") -> Service:
        worker = worker_service(self.env, self.gateway.log_path.parent, name=name)
        worker.start()
        control = make_celery(self.settings())
        wait_for_worker(lambda: bool(control.control.ping(timeout=0.5)), worker)
        self.services[name] = worker
        return worker


def start_redis(workdir: Path, *, append_only: bool = False, port: int | None = None) -> Service:
    service = redis_service(port or free_port(), workdir, append_only=append_only)
    service.start()
    wait_until(lambda: redis_answers(service), what="private redis-server")
    return service


def restart_redis(
    redis: Service, workdir: Path, *, append_only: bool, down_for: float = 0.0
) -> Service:
    """Stop `redis` (if it still runs), wait `down_for` seconds, start it again on its port."""
    port = int(redis.argv[redis.argv.index("--port") + 1])
    redis.stop()
    time.sleep(down_for)
    restarted = redis_service(port, workdir, append_only=append_only)
    restarted.start()
    wait_until(lambda: redis_answers(restarted), what="restarted redis")
    return restarted


def redis_answers(service: Service) -> bool:
    try:
        return bool(redis_client.Redis.from_url(redis_url_of(service), socket_timeout=0.5).ping())
    except redis_client.RedisError:
        return False


@contextmanager
def running_fleet(
    database_url: str,
    redis_url: str,
    workdir: Path,
    sandbox: SandboxServer | None = None,
    *,
    beat: bool = False,
    overrides: dict[str, str] | None = None,
) -> Iterator[Fleet]:
    """Gateway and worker (and beat) as separate processes, stopped when the block ends."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**fleet_env(database_url, redis_url, sandbox), **(overrides or {})}
    port = free_port()
    with ExitStack() as stack:
        gateway = gateway_service(port, env, workdir)
        gateway.start()
        stack.callback(gateway.stop)
        fleet = Fleet(f"http://127.0.0.1:{port}", redis_url, env, gateway, gateway)
        stack.callback(lambda: _stop_all(fleet))
        fleet.worker = fleet.start_worker()
        if beat:
            fleet.services["beat"] = beat_service(env, workdir)
            fleet.services["beat"].start()
        wait_for_http(f"{fleet.url}/healthz", gateway)
        yield fleet


def _stop_all(fleet: Fleet) -> None:
    for service in fleet.services.values():
        service.stop()


@pytest.fixture(scope="session")
def fleet_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fleet")


@pytest.fixture(scope="session")
def sandbox(fleet_dir: Path) -> Iterator[SandboxServer]:
    with SandboxServer(fleet_dir) as server:
        yield server


@pytest.fixture(scope="session")
def redis(fleet_dir: Path) -> Iterator[Service]:
    service = start_redis(fleet_dir)
    yield service
    service.stop()


@pytest.fixture(scope="session")
def fleet(
    database_url: str, redis: Service, fleet_dir: Path, sandbox: SandboxServer
) -> Iterator[Fleet]:
    with running_fleet(
        database_url, redis_url_of(redis), fleet_dir / "shared", sandbox, beat=True
    ) as running:
        yield running
