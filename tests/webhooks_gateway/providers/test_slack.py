"""Slack over real HTTP: each delivery gets an event id of this test's own."""

from __future__ import annotations

import json
import secrets as random
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.support.provider_secrets import current, rotated_out
from tests.support.sign_slack import sign_slack
from tests.webhooks_gateway.providers.conftest import Gateway

SECRET = "SLACK_SIGNING_SECRET"
FIXTURES = Path(__file__).parents[2] / "fixtures" / "slack"
HANDSHAKE = FIXTURES / "url_verification.json"
EVENT_FILES = sorted(p for p in FIXTURES.glob("*.json") if p != HANDSHAKE)
# Slack gives up on a delivery (and retries it) without a 2xx within 3 seconds.
SLACK_DEADLINE_SECONDS = 3.0


def _unique(fixture: Path) -> tuple[bytes, str]:
    """The fixture re-addressed to a fresh event id; returns the body and the id it will store."""
    payload: dict[str, Any] = json.loads(fixture.read_text())
    if payload["type"] == "app_rate_limited":
        payload["team_id"] = f"T{random.token_hex(6).upper()}"
        event_id = (
            f"app_rate_limited:{payload['team_id']}:{payload['api_app_id']}:"
            f"{payload['minute_rate_limited']}"
        )
    else:
        event_id = payload["event_id"] = f"Ev{random.token_hex(6).upper()}"
    return json.dumps(payload).encode(), event_id


def _signed(
    fixture: Path = FIXTURES / "team_join.json", *, secret: str = "", at: datetime | None = None
) -> tuple[bytes, dict[str, str], str]:
    body, event_id = _unique(fixture)
    headers = sign_slack(body, secret=secret or current(SECRET), at=at or datetime.now(UTC))
    return body, headers, event_id


@pytest.mark.parametrize("fixture", EVENT_FILES, ids=lambda p: p.stem)
def test_slack_delivery_is_stored_once_and_enqueued(gateway: Gateway, fixture: Path) -> None:
    body, headers, event_id = _signed(fixture)

    response = gateway.post("slack", body, headers)

    assert response.status_code == 200, response.text
    (row,) = gateway.rows("slack", event_id)
    assert response.json()["inbox_ids"] == [row.id]
    assert (row.event_type, row.status, row.body) == (fixture.stem, "enqueued", body)
    assert set(row.headers) == {"x-slack-signature", "x-slack-request-timestamp"}


def test_slack_redelivery_is_a_duplicate(gateway: Gateway) -> None:
    body, headers, event_id = _signed()
    gateway.post("slack", body, headers)

    again = gateway.post("slack", body, headers)

    assert again.json() == {"status": "duplicate"}
    assert len(gateway.rows("slack", event_id)) == 1


def test_slack_retry_after_http_timeout_is_a_duplicate(gateway: Gateway) -> None:
    body, headers, event_id = _signed(at=datetime.now(UTC) - timedelta(seconds=60))
    assert gateway.post("slack", body, headers).status_code == 200

    # Slack's retry: the same body, signed afresh, marked with the retry headers.
    retry = sign_slack(body, secret=current(SECRET), at=datetime.now(UTC), retry_num=1)
    assert retry["X-Slack-Signature"] != headers["X-Slack-Signature"]
    response = gateway.post("slack", body, retry)

    assert (response.status_code, response.json()) == (200, {"status": "duplicate"})
    assert len(gateway.rows("slack", event_id)) == 1


def test_slack_delivery_is_answered_well_within_slacks_deadline(gateway: Gateway) -> None:
    body, headers, event_id = _signed(FIXTURES / "app_mention.json")

    started = time.monotonic()
    response = gateway.post("slack", body, headers)
    elapsed = time.monotonic() - started

    assert response.status_code == 200
    assert elapsed < SLACK_DEADLINE_SECONDS, f"answered in {elapsed:.2f}s"
    assert len(gateway.rows("slack", event_id)) == 1


def test_slack_rotated_out_secret_is_still_accepted(gateway: Gateway) -> None:
    body, headers, event_id = _signed(secret=rotated_out(SECRET))

    assert gateway.post("slack", body, headers).status_code == 200
    assert len(gateway.rows("slack", event_id)) == 1


def _handshake_body() -> tuple[bytes, str]:
    payload = json.loads(HANDSHAKE.read_text())
    payload["challenge"] = random.token_urlsafe(32)
    return json.dumps(payload).encode(), payload["challenge"]


def test_slack_url_verification_is_answered_with_the_challenge_and_not_stored(
    gateway: Gateway,
) -> None:
    body, challenge = _handshake_body()
    headers = sign_slack(body, secret=current(SECRET), at=datetime.now(UTC))

    response = gateway.post("slack", body, headers)

    assert (response.status_code, response.json()) == (200, {"challenge": challenge})
    assert response.headers["content-type"].startswith("application/json")
    assert [row for row in gateway.rows("slack") if row.body == body] == []


def test_slack_url_verification_needs_a_valid_signature(gateway: Gateway) -> None:
    body, challenge = _handshake_body()
    headers = sign_slack(body, secret="not-the-signing-secret", at=datetime.now(UTC))

    response = gateway.post("slack", body, headers)

    assert response.status_code == 400
    assert challenge not in response.text
    assert response.json() == {"error": "invalid_signature", "reason": "mismatch"}


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("tampered", "mismatch"),
        ("wrong-secret", "mismatch"),
        ("stale", "stale"),
        ("future", "stale"),
        ("missing-X-Slack-Signature", "missing_header"),
        ("missing-X-Slack-Request-Timestamp", "missing_header"),
    ],
)
def test_slack_unverifiable_delivery_is_rejected_and_nothing_stored(
    gateway: Gateway, fault: str, reason: str
) -> None:
    now = datetime.now(UTC)
    at = {"stale": now - timedelta(minutes=10), "future": now + timedelta(minutes=10)}.get(fault)
    secret = "someone-elses-signing-secret" if fault == "wrong-secret" else ""
    body, headers, event_id = _signed(secret=secret, at=at)
    if fault == "tampered":
        body = body.replace(b'"is_admin": false', b'"is_admin": true')
    if fault.startswith("missing-"):
        del headers[fault.removeprefix("missing-")]

    response = gateway.post("slack", body, headers)

    assert response.status_code == 400
    assert response.json() == {"error": "invalid_signature", "reason": reason}
    assert gateway.rows("slack", event_id) == []


def test_slack_route_refuses_get(gateway: Gateway) -> None:
    body, headers, event_id = _signed()

    response = gateway.post("slack", body, headers, method="GET")

    assert response.status_code == 405
    assert gateway.rows("slack", event_id) == []
