"""The gateway's metrics: acknowledgement latency timed around the webhook app per provider, and
/metrics serving this process's registry, or the sum of every process's files in multiprocess mode,
plus inbox rows counted at scrape time."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import Engine
from sqlalchemy.orm import Session
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient
from starlette.types import Receive, Scope, Send

from schemas.db import make_engine
from schemas.migrate import upgrade
from schemas.tables import WebhookEvent
from tests.conftest import make_settings
from webhooks_gateway.metrics import metrics_endpoint, timed_webhook
from webhooks_gateway.webhook_route import WebhooksFirst
from workers.worker_metrics import MULTIPROC_ENV


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    settings = make_settings(database_url=f"sqlite:///{tmp_path / 'gateway.db'}")
    upgrade(settings)
    engine = make_engine(settings)
    yield engine
    engine.dispose()


async def _answer(scope: Scope, receive: Receive, send: Send) -> None:
    query = Request(scope).query_params
    if query.get("fail"):
        raise RuntimeError("the route broke")
    if query.get("slow_body"):  # the answer starts at once; its body (a slow reader) comes later
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await asyncio.sleep(0.5)
        await send({"type": "http.response.body", "body": b"{}"})
        return
    await JSONResponse({"ok": True})(scope, receive, send)


@pytest.fixture
def client(engine: Engine) -> Iterator[TestClient]:
    rest = Starlette(routes=[Route("/metrics", metrics_endpoint(engine), methods=["GET"])])
    app = WebhooksFirst(timed_webhook(_answer), rest)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def _timed(provider: str) -> float:
    value = REGISTRY.get_sample_value("webhooks_ack_latency_seconds_count", {"provider": provider})
    return value or 0.0


def test_each_webhook_answer_is_timed_under_its_provider(client: TestClient) -> None:
    before = {name: _timed(name) for name in ("stripe", "clerk")}

    client.post("/webhooks/stripe")
    client.post("/webhooks/stripe")
    client.post("/webhooks/clerk")

    assert _timed("stripe") - before["stripe"] == 2
    assert _timed("clerk") - before["clerk"] == 1


def test_names_that_are_no_provider_share_one_series(client: TestClient) -> None:
    before = _timed("unknown")

    client.post("/webhooks/wp-login.php")
    client.post("/webhooks/anything-a-scanner-tries")

    assert _timed("unknown") - before == 2
    assert _timed("wp-login.php") == 0


def test_a_route_that_raises_is_timed_all_the_same(client: TestClient) -> None:
    before = _timed("slack")

    assert client.post("/webhooks/slack?fail=1").status_code == 500

    assert _timed("slack") - before == 1


def test_the_ack_is_timed_until_the_answer_starts_not_until_its_body_is_sent(
    client: TestClient,
) -> None:
    def seconds() -> float:
        value = REGISTRY.get_sample_value(
            "webhooks_ack_latency_seconds_sum", {"provider": "mailchimp"}
        )
        return value or 0.0

    before, count = seconds(), _timed("mailchimp")

    assert client.post("/webhooks/mailchimp?slow_body=1").status_code == 200

    assert _timed("mailchimp") - count == 1
    assert seconds() - before < 0.25


def test_metrics_serves_webhook_counts_and_inbox_rows_by_status(
    client: TestClient, engine: Engine
) -> None:
    with Session(engine) as session:
        session.add_all(
            WebhookEvent(provider="stripe", event_id=f"evt_{n}", event_type="x", body=b"{}")
            for n in range(3)
        )
        session.commit()
    client.post("/webhooks/stripe")

    body = client.get("/metrics").text

    assert 'hookfleet_inbox_events{status="received"} 3.0' in body
    assert 'hookfleet_inbox_events{status="processed"} 0.0' in body
    assert 'webhooks_ack_latency_seconds_count{provider="stripe"}' in body
    assert 'hookfleet_scrape_collector_up{collector="inbox"} 1.0' in body


COUNT_ONE = """
from webhooks_gateway.metrics import WEBHOOKS_RECEIVED
WEBHOOKS_RECEIVED.labels(provider="stripe", outcome="accepted").inc()
"""
SERVE = """
import sys
from prometheus_client import generate_latest
from schemas.db import make_engine
from tests.conftest import make_settings
from webhooks_gateway.metrics import gateway_registry
engine = make_engine(make_settings(database_url=sys.argv[1]))
sys.stdout.write(generate_latest(gateway_registry(engine)).decode())
"""


def test_multiprocess_mode_serves_the_sum_of_every_gateway_process(
    tmp_path: Path, engine: Engine
) -> None:
    directory = tmp_path / "multiproc"
    directory.mkdir()
    env = {**os.environ, MULTIPROC_ENV: str(directory)}

    for _ in range(2):  # two uvicorn workers, each answering one delivery
        subprocess.run([sys.executable, "-c", COUNT_ONE], env=env, check=True, timeout=60)
    served = subprocess.run(
        [sys.executable, "-c", SERVE, str(engine.url)],
        env=env,
        check=True,
        timeout=60,
        capture_output=True,
        text=True,
    ).stdout

    assert 'webhooks_received_total{outcome="accepted",provider="stripe"} 2.0' in served
    assert "hookfleet_inbox_events" in served
