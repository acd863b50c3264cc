"""Daily.co over real HTTP: timestamped HMAC, event ids, and the endpoint-verification probe."""

from __future__ import annotations

import base64
import json
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.support.provider_secrets import current, rotated_out
from tests.support.sign_daily import sign_daily
from tests.webhooks_gateway.providers.conftest import Gateway

SECRET = "DAILY_WEBHOOK_SECRET"
FIXTURES = Path(__file__).parents[2] / "fixtures" / "daily"
FIXTURE_FILES = sorted(FIXTURES.glob("*.json"))


def _fresh(fixture: str = "meeting.ended") -> tuple[bytes, str]:
    """The recorded event under an id of this test's own (tests share one inbox)."""
    event = json.loads((FIXTURES / f"{fixture}.json").read_bytes())
    event["id"] = f"{event['id']}-{secrets.token_hex(6)}"
    return json.dumps(event, indent=2).encode(), event["id"]


def _signed(
    fixture: str = "meeting.ended", *, secret: str = "", at: datetime | None = None
) -> tuple[bytes, dict[str, str], str]:
    body, event_id = _fresh(fixture)
    headers = sign_daily(body, secret=secret or current(SECRET), at=at or datetime.now(UTC))
    return body, headers, event_id


@pytest.mark.parametrize("fixture", FIXTURE_FILES, ids=lambda path: path.stem)
def test_every_recorded_event_is_stored_once_under_its_id(gateway: Gateway, fixture: Path) -> None:
    body, headers, event_id = _signed(fixture.stem)

    response = gateway.post("daily", body, headers)

    assert response.status_code == 200
    (row,) = gateway.rows("daily", event_id)
    assert response.json()["inbox_ids"] == [row.id]
    assert (row.event_type, row.status, row.body) == (fixture.stem, "enqueued", body)


def test_redelivery_is_a_duplicate(gateway: Gateway) -> None:
    body, headers, event_id = _signed()
    gateway.post("daily", body, headers)

    again = gateway.post(
        "daily", body, sign_daily(body, secret=current(SECRET), at=datetime.now(UTC))
    )

    assert (again.status_code, again.json()) == (200, {"status": "duplicate"})
    assert len(gateway.rows("daily", event_id)) == 1


def test_rotated_out_secret_is_still_accepted(gateway: Gateway) -> None:
    body, headers, event_id = _signed("participant.joined", secret=rotated_out(SECRET))

    assert gateway.post("daily", body, headers).status_code == 200
    assert len(gateway.rows("daily", event_id)) == 1


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("tampered", "mismatch"),
        ("wrong-secret", "mismatch"),
        ("stale", "stale"),
        ("from-the-future", "stale"),
        ("missing-signature", "missing_header"),
        ("missing-timestamp", "missing_header"),
    ],
)
def test_unverifiable_delivery_is_rejected_and_nothing_stored(
    gateway: Gateway, fault: str, reason: str
) -> None:
    now = datetime.now(UTC)
    at = {"stale": now - timedelta(minutes=10), "from-the-future": now + timedelta(minutes=10)}
    other = base64.b64encode(secrets.token_bytes(32)).decode()
    body, headers, event_id = _signed(
        secret=other if fault == "wrong-secret" else "", at=at.get(fault, now)
    )
    if fault == "tampered":
        body = body.replace(b'"members-thursday-meetup"', b'"board-meeting"')
    if fault == "missing-signature":
        headers.pop("X-Webhook-Signature")
    if fault == "missing-timestamp":
        headers.pop("X-Webhook-Timestamp")

    response = gateway.post("daily", body, headers)

    assert response.status_code == 400
    assert response.json() == {"error": "invalid_signature", "reason": reason}
    assert gateway.rows("daily", event_id) == []


PROBES: list[Any] = [{"test": "test"}, {"test": True}]


@pytest.mark.parametrize("probe", PROBES, ids=["test-string", "test-true"])
@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
def test_endpoint_verification_probe_answers_200_and_stores_nothing(
    gateway: Gateway, probe: Any, signed: bool
) -> None:
    body = json.dumps(probe).encode()
    headers = (
        sign_daily(body, secret=current(SECRET), at=datetime.now(UTC))
        if signed
        else {"Content-Type": "application/json"}
    )
    before = gateway.count("daily")

    response = gateway.post("daily", body, headers)

    assert (response.status_code, response.json()) == (200, {"status": "ok"})
    assert gateway.count("daily") == before


def test_probe_with_a_bad_signature_is_rejected(gateway: Gateway) -> None:
    body = b'{"test": "test"}'
    headers = sign_daily(body, secret=current(SECRET), at=datetime.now(UTC))
    headers["X-Webhook-Signature"] = base64.b64encode(secrets.token_bytes(32)).decode()

    response = gateway.post("daily", body, headers)

    assert response.json() == {"error": "invalid_signature", "reason": "mismatch"}


def test_unsigned_event_is_not_taken_for_a_probe(gateway: Gateway) -> None:
    body, event_id = _fresh()

    response = gateway.post("daily", body, {"Content-Type": "application/json"})

    assert response.json() == {"error": "invalid_signature", "reason": "missing_header"}
    assert gateway.rows("daily", event_id) == []


def test_wrong_method_is_405(gateway: Gateway) -> None:
    response = gateway.post("daily", b"", method="GET")

    assert response.status_code == 405
    assert response.json()["allowed"] == ["POST"]
