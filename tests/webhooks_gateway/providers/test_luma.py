"""Luma over real HTTP: the reported `Webhook-Signature` scheme, the URL token, composite ids.

Bodies are signed by tests/support/sign_luma.py, written from the third-party description of the
scheme (see the module docstring of webhooks_gateway/providers/luma.py), not from our verifier.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.support.provider_secrets import current, rotated_out
from tests.support.sign_luma import sign_luma
from tests.webhooks_gateway.providers.conftest import Gateway
from webhooks_gateway.providers import luma

SECRET = "LUMA_WEBHOOK_SECRET"
FIXTURES = Path(__file__).parents[2] / "fixtures" / "luma"
FIXTURE_FILES = sorted(FIXTURES.glob("*.json"))
GUEST = "gst-Xk4pR8tYw2Lm6Nq"
EVENT = "evt-7QmZr2KxP9aLd4W"
REGISTERED_AT = "2025-11-21T19:04:12.775Z"


def _expected_id(fixture: Path) -> str:
    body = fixture.read_bytes()
    digest = hashlib.sha256(body).hexdigest()[:16]
    return {
        "guest.registered": f"guest.registered:{GUEST}:pending_approval:{REGISTERED_AT}",
        "guest.updated": f"guest.updated:{GUEST}:approved:{REGISTERED_AT}:{digest}",
        "ticket.registered": (
            f"ticket.registered:{GUEST}:evtticket-9TzQ4mWc1Lr7:approved:{REGISTERED_AT}"
        ),
        "event.created": f"event.created:{EVENT}",
        "event.updated": f"event.updated:{EVENT}:{digest}",
        "event.canceled": f"event.canceled:{EVENT}",
    }[fixture.stem]


def _guest_registered(**changes: Any) -> tuple[bytes, str]:
    """A guest.registered body for a guest of this test only, and the id it must be stored under."""
    payload = json.loads((FIXTURES / "guest.registered.json").read_bytes())
    guest = f"gst-{secrets.token_hex(8)}"
    payload["data"].update(id=guest, **changes)
    status = payload["data"]["approval_status"]
    return json.dumps(payload).encode(), f"guest.registered:{guest}:{status}:{REGISTERED_AT}"


def _signed(body: bytes, secret: str = "", at: datetime | None = None) -> dict[str, str]:
    return sign_luma(body, secret=secret or current(SECRET), at=at or datetime.now(UTC))


def test_fixtures_cover_the_handled_event_types() -> None:
    assert {path.stem for path in FIXTURE_FILES} == luma.HANDLED_EVENT_TYPES


@pytest.mark.parametrize("fixture", FIXTURE_FILES, ids=lambda path: path.stem)
def test_signed_event_is_stored_once_under_its_composite_id(
    gateway: Gateway, fixture: Path
) -> None:
    body = fixture.read_bytes()
    headers = _signed(body)

    response = gateway.post("luma", body, headers)

    assert response.status_code == 200, response.text
    (row,) = gateway.rows("luma", _expected_id(fixture))
    assert response.json()["inbox_ids"] == [row.id]
    assert (row.event_type, row.status, row.body) == (fixture.stem, "enqueued", body)
    # What re-verifying needs is kept.
    assert row.headers["webhook-signature"] == headers["Webhook-Signature"]
    assert row.headers["webhook-id"] == headers["Webhook-Id"]


@pytest.mark.parametrize("form", ["query", "bearer"])
def test_token_in_the_url_or_as_bearer_is_accepted_without_a_signature(
    gateway: Gateway, form: str
) -> None:
    body, event_id = _guest_registered()
    token = current(SECRET)
    headers = {"Content-Type": "application/json"}
    if form == "bearer":
        headers["Authorization"] = f"Bearer {token}"

    response = gateway.post(
        "luma", body, headers, params={"token": token} if form == "query" else None
    )

    assert response.status_code == 200, response.text
    (row,) = gateway.rows("luma", event_id)
    assert row.headers == {}


def test_a_presented_token_decides_even_beside_a_valid_signature(gateway: Gateway) -> None:
    body, event_id = _guest_registered()

    response = gateway.post("luma", body, _signed(body), params={"token": "not-the-token"})

    assert response.status_code == 400
    assert response.json() == {"error": "invalid_signature", "reason": "mismatch"}
    assert gateway.rows("luma", event_id) == []


def test_redelivery_is_a_duplicate(gateway: Gateway) -> None:
    body, event_id = _guest_registered()
    gateway.post("luma", body, _signed(body))

    # Luma re-signs a retry with a new timestamp; the body, and so the id, is the same.
    again = gateway.post("luma", body, _signed(body, at=datetime.now(UTC) + timedelta(seconds=5)))

    assert again.json() == {"status": "duplicate"}
    assert len(gateway.rows("luma", event_id)) == 1


def test_rotated_out_secret_is_still_accepted(gateway: Gateway) -> None:
    body, event_id = _guest_registered()

    response = gateway.post("luma", body, _signed(body, secret=rotated_out(SECRET)))

    assert response.status_code == 200, response.text
    assert len(gateway.rows("luma", event_id)) == 1


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("tampered", "mismatch"),
        ("wrong-secret", "mismatch"),
        ("stale", "stale"),
        ("from-the-future", "stale"),
        ("missing-header", "missing_header"),
        ("malformed-header", "malformed"),
    ],
)
def test_unverifiable_delivery_is_rejected_and_nothing_stored(
    gateway: Gateway, fault: str, reason: str
) -> None:
    body, event_id = _guest_registered()
    at = datetime.now(UTC) + {
        "stale": timedelta(minutes=-10),
        "from-the-future": timedelta(minutes=10),
    }.get(fault, timedelta(0))
    headers = _signed(body, secret="whsec_wrong" if fault == "wrong-secret" else "", at=at)
    if fault == "tampered":
        body = body.replace(b'"pending_approval"', b'"approved"')
    if fault == "missing-header":
        headers.pop("Webhook-Signature")
    if fault == "malformed-header":
        headers["Webhook-Signature"] = headers["Webhook-Signature"].replace("t=", "ts=")

    response = gateway.post("luma", body, headers)

    assert response.status_code == 400
    assert response.json() == {"error": "invalid_signature", "reason": reason}
    assert gateway.rows("luma", event_id) == []
    assert gateway.rows("luma", event_id.replace("pending_approval", "approved")) == []


def test_each_ticket_of_one_guest_is_its_own_event(gateway: Gateway) -> None:
    payload = json.loads((FIXTURES / "ticket.registered.json").read_bytes())
    payload["data"]["id"] = guest = f"gst-{secrets.token_hex(8)}"
    bodies = []
    for ticket in ("evtticket-first", "evtticket-second"):
        payload["data"]["event_ticket"]["id"] = ticket
        bodies.append(json.dumps(payload).encode())

    for body in bodies:
        assert gateway.post("luma", body, _signed(body)).status_code == 200

    rows = [row for row in gateway.rows("luma") if f":{guest}:" in row.event_id]
    assert sorted(row.event_id.split(":")[2] for row in rows) == [
        "evtticket-first",
        "evtticket-second",
    ]


def test_a_check_in_after_approval_is_a_new_guest_updated_event(gateway: Gateway) -> None:
    payload = json.loads((FIXTURES / "guest.updated.json").read_bytes())
    payload["data"]["id"] = guest = f"gst-{secrets.token_hex(8)}"
    approved = json.dumps(payload).encode()
    payload["data"]["event_tickets"][0]["checked_in_at"] = "2025-12-04T18:12:09.000Z"
    checked_in = json.dumps(payload).encode()

    for body in (approved, checked_in, approved):
        gateway.post("luma", body, _signed(body))

    rows = [row for row in gateway.rows("luma") if f":{guest}:" in row.event_id]
    assert [row.body for row in rows] == [approved, checked_in]


def test_wrong_method_is_405(gateway: Gateway) -> None:
    body, event_id = _guest_registered()

    response = gateway.post("luma", body, _signed(body), method="PUT")

    assert response.status_code == 405
    assert gateway.rows("luma", event_id) == []
