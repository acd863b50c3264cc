"""The ingest path in-process: verify -> inbox -> enqueue, against a migrated SQLite file."""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx2
import pytest
import structlog
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session
from starlette.testclient import TestClient
from structlog.testing import capture_logs

from schemas.migrate import upgrade
from schemas.settings import Settings
from schemas.tables import InboxStatus, WebhookEvent
from tests.conftest import STRIPE_SECRET, make_settings
from tests.signing import sign_stripe
from tests.support.processes import free_port, wait_until
from tests.support.stripe_fixtures import StripeCustomer, body_of, fixture_files
from webhooks_gateway import ingest
from webhooks_gateway.app import GC_YOUNG_THRESHOLD, create_app

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


class SentTasks:
    """Records process_event publications instead of talking to a broker."""

    def __init__(self, *, broker_up: bool = True) -> None:
        self.inbox_ids: list[int] = []
        self.broker_up = broker_up

    async def __call__(self, inbox_id: int) -> bool:
        if self.broker_up:
            self.inbox_ids.append(inbox_id)
        return self.broker_up


@pytest.fixture
def sqlite_settings(tmp_path: Path) -> Settings:
    settings = make_settings(
        database_url=f"sqlite:///{tmp_path / 'inbox.db'}", max_body_bytes=64_000
    )
    upgrade(settings)
    return settings


@pytest.fixture
def sent() -> SentTasks:
    return SentTasks()


@pytest.fixture
def client(sqlite_settings: Settings, sent: SentTasks) -> Iterator[TestClient]:
    with TestClient(create_app(sqlite_settings, enqueue=sent, clock=lambda: NOW)) as test_client:
        yield test_client


def test_gateway_collects_young_garbage_less_often_while_it_serves(
    sqlite_settings: Settings, sent: SentTasks
) -> None:
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)  # Python's default, whatever an app of another test left
    try:
        with TestClient(create_app(sqlite_settings, enqueue=sent, clock=lambda: NOW)):
            assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, 10, 10)

        assert gc.get_threshold() == (700, 10, 10)
    finally:
        gc.set_threshold(*before)


def _rows(settings: Settings) -> list[WebhookEvent]:
    engine = create_engine(settings.database_url)
    with Session(engine) as session:
        rows = list(session.scalars(select(WebhookEvent).order_by(WebhookEvent.id)))
    engine.dispose()
    return rows


def _post(client: TestClient, body: bytes) -> httpx2.Response:
    return client.post(
        "/webhooks/stripe", content=body, headers=sign_stripe(body, secret=STRIPE_SECRET, at=NOW)
    )


@pytest.mark.parametrize("fixture", fixture_files(), ids=lambda path: path.stem)
def test_stripe_delivery_is_stored_once_and_enqueued(
    client: TestClient, sent: SentTasks, sqlite_settings: Settings, fixture: Path
) -> None:
    body = fixture.read_bytes()

    response = client.post(
        "/webhooks/stripe", content=body, headers=sign_stripe(body, secret=STRIPE_SECRET, at=NOW)
    )

    assert response.status_code == 200
    (row,) = _rows(sqlite_settings)
    assert response.json() == {
        "status": "accepted",
        "inbox_id": row.id,
        "inbox_ids": [row.id],
        "duplicates": 0,
    }
    # Answered once committed; the relay publishes right after, off the request path.
    wait_until(lambda: _rows(sqlite_settings)[0].status != "received", what="the relay")
    (row,) = _rows(sqlite_settings)
    assert sent.inbox_ids == [row.id]
    assert row.body == body  # the exact bytes, so the signature can be checked again
    assert (row.provider, row.event_type, row.status) == ("stripe", fixture.stem, "enqueued")
    assert row.enqueued_at is not None


def test_duplicate_delivery_answers_duplicate_and_enqueues_nothing(
    client: TestClient, sent: SentTasks, sqlite_settings: Settings
) -> None:
    body = body_of(StripeCustomer.new().event("invoice.paid"))

    first = _post(client, body)
    again = client.post(
        "/webhooks/stripe",
        content=body,
        headers=sign_stripe(body, secret=STRIPE_SECRET, at=NOW + timedelta(seconds=30)),
    )

    assert first.json()["status"] == "accepted"
    assert (again.status_code, again.json()) == (200, {"status": "duplicate"})
    (row,) = _rows(sqlite_settings)
    wait_until(lambda: _rows(sqlite_settings)[0].status != "received", what="the relay")
    assert sent.inbox_ids == [row.id]


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        ("body", "mismatch"),
        ("secret", "mismatch"),
        ("stale", "stale"),
        ("header", "missing_header"),
        ("garbled", "malformed"),
    ],
)
def test_unverifiable_delivery_is_400_and_stores_nothing(
    client: TestClient, sent: SentTasks, sqlite_settings: Settings, tamper: str, reason: str
) -> None:
    body = body_of(StripeCustomer.new().event("checkout.session.completed"))
    secret = "whsec_someone_else" if tamper == "secret" else STRIPE_SECRET
    at = NOW - timedelta(minutes=6) if tamper == "stale" else NOW
    headers = sign_stripe(body, secret=secret, at=at)
    if tamper == "body":
        body = body.replace(b"member-", b"admin-")
    if tamper == "header":
        del headers["Stripe-Signature"]
    if tamper == "garbled":
        headers["Stripe-Signature"] = "v1=deadbeef"

    response = client.post("/webhooks/stripe", content=body, headers=headers)

    assert response.status_code == 400
    assert response.json() == {"error": "invalid_signature", "reason": reason}
    assert _rows(sqlite_settings) == []
    assert sent.inbox_ids == []


@pytest.mark.parametrize(
    "body",
    [
        b"not json at all",
        b'["a", "list"]',
        b'{"id": "not_an_event", "type": "invoice.paid"}',
        b'{"id": "evt_1"}',
    ],
    ids=["not-json", "not-an-object", "no-evt-id", "no-type"],
)
def test_signed_but_malformed_body_is_400_and_stores_nothing(
    client: TestClient, sqlite_settings: Settings, body: bytes
) -> None:
    response = _post(client, body)

    assert response.status_code == 400
    assert response.json()["error"] == "malformed_body"
    assert _rows(sqlite_settings) == []


def test_body_over_the_limit_is_413_whether_declared_or_streamed(
    client: TestClient, sqlite_settings: Settings
) -> None:
    big = b"{" + b" " * 70_000 + b"}"

    declared = _post(client, big)
    streamed = client.post(
        "/webhooks/stripe",
        content=iter([big[:40_000], big[40_000:]]),
        headers=sign_stripe(big, secret=STRIPE_SECRET, at=NOW),
    )

    assert declared.status_code == 413
    assert streamed.status_code == 413
    assert _rows(sqlite_settings) == []


def test_provider_without_secret_is_404(tmp_path: Path) -> None:
    settings = make_settings(
        database_url=f"sqlite:///{tmp_path / 'x.db'}", stripe_webhook_secret=()
    )
    body = body_of(StripeCustomer.new().event("invoice.paid"))
    with TestClient(create_app(settings, enqueue=SentTasks(), clock=lambda: NOW)) as client:
        disabled = _post(client, body)
        unknown = client.post("/webhooks/paypal", content=body)

    assert (disabled.status_code, disabled.json()["error"]) == (404, "not_enabled")
    assert unknown.status_code == 404


def test_inbox_that_cannot_be_written_answers_503(tmp_path: Path) -> None:
    settings = make_settings(database_url=f"sqlite:///{tmp_path / 'never-migrated.db'}")
    sent = SentTasks()
    body = body_of(StripeCustomer.new().event("invoice.paid"))
    with TestClient(create_app(settings, enqueue=sent, clock=lambda: NOW)) as client:
        response = _post(client, body)

    assert (response.status_code, response.json()) == (503, {"error": "inbox_unavailable"})
    assert sent.inbox_ids == []


def test_broker_down_still_stores_and_acknowledges(sqlite_settings: Settings) -> None:
    """The real Celery publisher against a port nothing listens on: stored as `received` for the sweep."""
    settings = sqlite_settings.model_copy(
        update={"redis_url": f"redis://127.0.0.1:{free_port()}/0", "enqueue_timeout_seconds": 5.0}
    )
    body = body_of(StripeCustomer.new().event("invoice.paid"))
    with TestClient(create_app(settings, clock=lambda: NOW)) as client:
        response = _post(client, body)

    assert response.status_code == 200
    assert response.json()["status"] == "accepted"
    (row,) = _rows(settings)  # the app has stopped, so the relay has had its attempt
    assert (row.status, row.enqueued_at) == (InboxStatus.RECEIVED, None)


def test_healthz_answers_without_dependencies(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}


def test_readyz_is_503_when_the_broker_is_unreachable(sqlite_settings: Settings) -> None:
    settings = sqlite_settings.model_copy(
        update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"}
    )
    with TestClient(create_app(settings, enqueue=SentTasks())) as client:
        response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["checks"] == {"database": True, "broker": False}


@pytest.mark.parametrize("method", ["GET", "OPTIONS", "PUT"])
def test_wrong_method_is_a_json_405_and_stores_nothing(
    client: TestClient, sqlite_settings: Settings, method: str
) -> None:
    response = client.request(method, "/webhooks/stripe")

    assert response.status_code == 405
    assert response.json() == {"error": "method_not_allowed", "allowed": ["POST"]}
    assert _rows(sqlite_settings) == []


def _outcomes(client: TestClient, provider: str = "stripe") -> dict[str, float]:
    """webhooks_received_total{provider=..., outcome=...} as scraped from /metrics."""
    found: dict[str, float] = {}
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("webhooks_received_total{") and f'provider="{provider}"' in line:
            outcome = line.split('outcome="', 1)[1].split('"', 1)[0]
            found[outcome] = float(line.rsplit(" ", 1)[1])
    return found


def test_every_outcome_is_counted_by_provider(client: TestClient) -> None:
    before = _outcomes(client)
    body = body_of(StripeCustomer.new().event("invoice.paid"))

    _post(client, body)
    _post(client, body)
    client.post("/webhooks/stripe", content=body, headers={"Stripe-Signature": "t=1,v1=00"})
    client.get("/webhooks/stripe")

    after = _outcomes(client)
    counted = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    assert {k: v for k, v in counted.items() if v} == {
        "accepted": 1,
        "duplicate": 1,
        "invalid_signature": 1,
        "method_not_allowed": 1,
    }


def test_names_in_the_url_that_are_no_provider_are_counted_as_one_unknown_series(
    client: TestClient,
) -> None:
    before = _outcomes(client, "unknown").get("not_enabled", 0)

    client.post("/webhooks/wp-login.php", content=b"{}")
    client.post("/webhooks/anything-a-scanner-tries", content=b"{}")

    assert _outcomes(client, "unknown")["not_enabled"] - before == 2
    assert "wp-login.php" not in client.get("/metrics").text


def test_each_answer_is_logged_with_its_provider_event_and_inbox_ids(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = body_of(StripeCustomer.new().event("invoice.paid"))
    event_id = json.loads(body)["id"]
    # A logger first used inside the capture: the module's may be cached with an earlier set-up.
    monkeypatch.setattr(ingest, "log", structlog.get_logger("webhooks_gateway.ingest"))

    with capture_logs() as logs:
        accepted = _post(client, body).json()
        _post(client, body)
        client.post("/webhooks/stripe", content=body, headers={"Stripe-Signature": "t=1,v1=00"})

    answers = [line for line in logs if line["event"].startswith("webhook.")]
    assert [(a["event"], a["provider"], a.get("event_id"), a.get("inbox_id")) for a in answers] == [
        ("webhook.received", "stripe", event_id, accepted["inbox_id"]),
        ("webhook.received", "stripe", event_id, None),
        ("webhook.rejected", "stripe", None, None),
    ]
    assert [a["http_status"] for a in answers] == [200, 200, 400]


def test_paths_beside_the_webhook_route_are_not_taken_for_it(client: TestClient) -> None:
    assert client.get("/webhooks/").status_code == 404
    assert client.post("/webhooks/stripe/extra", content=b"{}").status_code == 404
    assert client.get("/healthz").status_code == 200


def test_behind_a_proxy_root_path_webhooks_still_reach_the_ingest_path(
    sqlite_settings: Settings, sent: SentTasks
) -> None:
    app = create_app(sqlite_settings, enqueue=sent, clock=lambda: NOW)
    body = body_of(StripeCustomer.new().event("invoice.paid"))
    headers = sign_stripe(body, secret=STRIPE_SECRET, at=NOW)

    with TestClient(app, root_path="/hooks") as client:
        response = client.post("/hooks/webhooks/stripe", content=body, headers=headers)

    assert response.status_code == 200
    assert response.json()["status"] == "accepted"
