"""Cal.com over real HTTP: each booking uid is this test's own, so tests never share a row.

Cal.com signs no timestamp, so there is no stale case to test.
"""

from __future__ import annotations

import json
import secrets as random
from pathlib import Path
from typing import Any

import pytest

from tests.support.provider_secrets import current, rotated_out
from tests.support.sign_calcom import sign_calcom
from tests.webhooks_gateway.providers.conftest import Gateway
from webhooks_gateway.providers.base import body_hash

SECRET = "CALCOM_WEBHOOK_SECRET"
FIXTURES = Path(__file__).parents[2] / "fixtures" / "calcom"
PING = FIXTURES / "PING.json"
EVENT_FILES = sorted(p for p in FIXTURES.glob("*.json") if p != PING)


def _unique(fixture: Path = FIXTURES / "BOOKING_CREATED.json") -> tuple[bytes, str]:
    """The fixture for a booking uid of this test's own; returns the body and its event id."""
    payload: dict[str, Any] = json.loads(fixture.read_text())
    uid = payload["payload"]["uid"] = f"bk{random.token_hex(10)}"
    return json.dumps(payload).encode(), f"{payload['triggerEvent']}:{uid}:{payload['createdAt']}"


def _signed(
    fixture: Path = FIXTURES / "BOOKING_CREATED.json", *, secret: str = ""
) -> tuple[bytes, dict[str, str], str]:
    body, event_id = _unique(fixture)
    return body, sign_calcom(body, secret=secret or current(SECRET)), event_id


@pytest.mark.parametrize("fixture", EVENT_FILES, ids=lambda p: p.stem)
def test_calcom_delivery_is_stored_once_and_enqueued(gateway: Gateway, fixture: Path) -> None:
    body, headers, event_id = _signed(fixture)

    response = gateway.post("calcom", body, headers)

    assert response.status_code == 200, response.text
    (row,) = gateway.rows("calcom", event_id)
    assert response.json()["inbox_ids"] == [row.id]
    assert (row.event_type, row.status, row.body) == (fixture.stem, "enqueued", body)
    assert set(row.headers) == {"x-cal-signature-256", "x-cal-webhook-version"}


def test_calcom_redelivery_is_a_duplicate(gateway: Gateway) -> None:
    body, headers, event_id = _signed()
    gateway.post("calcom", body, headers)

    again = gateway.post("calcom", body, headers)

    assert again.json() == {"status": "duplicate"}
    assert len(gateway.rows("calcom", event_id)) == 1


def test_calcom_delivery_without_created_at_is_identified_by_its_body(gateway: Gateway) -> None:
    uid = f"bk{random.token_hex(10)}"
    body = json.dumps({"triggerEvent": "MEETING_ENDED", "id": 97, "uid": uid}).encode()
    headers = sign_calcom(body, secret=current(SECRET))

    first = gateway.post("calcom", body, headers)
    again = gateway.post("calcom", body, headers)

    assert first.status_code == 200
    assert again.json() == {"status": "duplicate"}
    (row,) = gateway.rows("calcom", body_hash(body))
    assert row.event_type == "MEETING_ENDED"


def test_calcom_rotated_out_secret_is_still_accepted(gateway: Gateway) -> None:
    body, headers, event_id = _signed(secret=rotated_out(SECRET))

    assert gateway.post("calcom", body, headers).status_code == 200
    assert len(gateway.rows("calcom", event_id)) == 1


def _ping() -> bytes:
    payload = json.loads(PING.read_text())
    payload["createdAt"] = (
        f"2025-11-22T08:00:{random.randbelow(60):02d}.{random.randbelow(999):03d}Z"
    )
    payload["payload"]["description"] = random.token_hex(8)
    return json.dumps(payload, separators=(",", ":")).encode()


def test_calcom_ping_test_is_answered_and_not_stored(gateway: Gateway) -> None:
    body = _ping()

    response = gateway.post("calcom", body, sign_calcom(body, secret=current(SECRET)))

    assert (response.status_code, response.json()) == (200, {"status": "pong"})
    assert [row for row in gateway.rows("calcom") if row.body == body] == []


def test_calcom_unsigned_ping_is_refused(gateway: Gateway) -> None:
    body = _ping()

    response = gateway.post("calcom", body, {"X-Cal-Signature-256": "no-secret-provided"})

    assert response.status_code == 400
    assert response.json() == {"error": "invalid_signature", "reason": "mismatch"}


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("tampered", "mismatch"),
        ("wrong-secret", "mismatch"),
        ("unsigned", "mismatch"),
        ("missing-header", "missing_header"),
    ],
)
def test_calcom_unverifiable_delivery_is_rejected_and_nothing_stored(
    gateway: Gateway, fault: str, reason: str
) -> None:
    body, headers, event_id = _signed(secret="someone-elses" if fault == "wrong-secret" else "")
    if fault == "tampered":
        body = body.replace(b'"price": 0', b'"price": 100')
    if fault == "unsigned":
        headers["X-Cal-Signature-256"] = "no-secret-provided"
    if fault == "missing-header":
        del headers["X-Cal-Signature-256"]

    response = gateway.post("calcom", body, headers)

    assert response.status_code == 400
    assert response.json() == {"error": "invalid_signature", "reason": reason}
    assert gateway.rows("calcom", event_id) == []


def test_calcom_route_refuses_get(gateway: Gateway) -> None:
    body, headers, event_id = _signed()

    response = gateway.post("calcom", body, headers, method="GET")

    assert response.status_code == 405
    assert gateway.rows("calcom", event_id) == []
