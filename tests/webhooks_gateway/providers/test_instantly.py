"""Instantly over real HTTP: the token in the subscription's custom header, and composite ids.

Instantly signs nothing (no tampered-body or stale case exists): the custom header set on the
subscription, `X-Instantly-Token`, is the proof; Bearer and `?token=` are accepted too.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import pytest

from tests.support.provider_secrets import current, rotated_out
from tests.support.sign_instantly import sign_instantly
from tests.webhooks_gateway.providers.conftest import Gateway
from webhooks_gateway.providers import instantly

SECRET = "INSTANTLY_WEBHOOK_SECRET"
FIXTURES = Path(__file__).parents[2] / "fixtures" / "instantly"
FIXTURE_FILES = sorted(FIXTURES.glob("*.json"))
CAMPAIGN = "6a1e4f2b-3c5d-4e8f-a9b0-1c2d3e4f5a6b"
FIRST_EMAIL = "019a6c2e-5b7d-7f31-8c4e-2d9a0b1c3e5f"
# event_type:campaign_id:lead:email_id-or-step:timestamp
EXPECTED_IDS = {
    "email_sent": (
        f"email_sent:{CAMPAIGN}:jordan.lee@example.com:{FIRST_EMAIL}:2025-11-18T09:02:14.381Z"
    ),
    "email_opened": (
        f"email_opened:{CAMPAIGN}:jordan.lee@example.com:{FIRST_EMAIL}:2025-11-18T10:47:55.902Z"
    ),
    "reply_received": (
        f"reply_received:{CAMPAIGN}:jordan.lee@example.com:"
        "019a6d71-0e2a-7c44-b5d8-6f1e2a3b4c5d:2025-11-18T13:20:08.117Z"
    ),
    "lead_interested": f"lead_interested:{CAMPAIGN}:jordan.lee@example.com::2025-11-18T13:25:41.560Z",
    "email_bounced": (
        f"email_bounced:{CAMPAIGN}:former.member@example.net:"
        "019a6c2e-6a10-7d92-9e3f-4b5c6d7e8f90:2025-11-18T09:02:31.044Z"
    ),
    "lead_unsubscribed": (
        f"lead_unsubscribed:{CAMPAIGN}:casey.ng@example.com:2:2025-11-19T07:15:03.228Z"
    ),
}


def _opened(**changes: Any) -> tuple[bytes, str]:
    """An email_opened body for a lead of this test only, and the id it must be stored under."""
    payload = json.loads((FIXTURES / "email_opened.json").read_bytes())
    lead = f"lead+{secrets.token_hex(5)}@example.com"
    payload.update(lead_email=lead, **changes)
    event_id = ":".join(("email_opened", CAMPAIGN, lead, payload["email_id"], payload["timestamp"]))
    return json.dumps(payload).encode(), event_id


def test_fixtures_cover_the_handled_event_types() -> None:
    assert (
        {path.stem for path in FIXTURE_FILES} == instantly.HANDLED_EVENT_TYPES == set(EXPECTED_IDS)
    )


@pytest.mark.parametrize("fixture", FIXTURE_FILES, ids=lambda path: path.stem)
def test_event_is_stored_once_under_its_composite_id(gateway: Gateway, fixture: Path) -> None:
    body = fixture.read_bytes()

    response = gateway.post("instantly", body, sign_instantly(current(SECRET)))

    assert response.status_code == 200, response.text
    (row,) = gateway.rows("instantly", EXPECTED_IDS[fixture.stem])
    assert response.json()["inbox_ids"] == [row.id]
    assert (row.event_type, row.status, row.body) == (fixture.stem, "enqueued", body)
    assert row.headers == {}  # the token header is never kept


@pytest.mark.parametrize("form", ["bearer", "query"])
def test_token_as_bearer_or_in_the_url_is_accepted(gateway: Gateway, form: str) -> None:
    body, event_id = _opened()
    token = current(SECRET)
    headers = {"Content-Type": "application/json"}
    if form == "bearer":
        headers["Authorization"] = f"Bearer {token}"

    response = gateway.post(
        "instantly", body, headers, params={"token": token} if form == "query" else None
    )

    assert response.status_code == 200, response.text
    assert len(gateway.rows("instantly", event_id)) == 1


def test_redelivery_is_a_duplicate(gateway: Gateway) -> None:
    body, event_id = _opened()
    gateway.post("instantly", body, sign_instantly(current(SECRET)))

    again = gateway.post("instantly", body, sign_instantly(current(SECRET)))

    assert again.json() == {"status": "duplicate"}
    assert len(gateway.rows("instantly", event_id)) == 1


def test_the_same_event_reserialized_is_still_a_duplicate(gateway: Gateway) -> None:
    body, event_id = _opened()
    gateway.post("instantly", body, sign_instantly(current(SECRET)))
    reordered = json.dumps(dict(reversed(list(json.loads(body).items())))).encode()

    again = gateway.post("instantly", reordered, sign_instantly(current(SECRET)))

    assert again.json() == {"status": "duplicate"}
    assert len(gateway.rows("instantly", event_id)) == 1


def test_a_second_open_later_is_a_new_event(gateway: Gateway) -> None:
    body, event_id = _opened()
    later = json.loads(body) | {"timestamp": "2025-11-19T08:00:00.000Z", "is_first": False}

    for content in (body, json.dumps(later).encode()):
        assert (
            gateway.post("instantly", content, sign_instantly(current(SECRET))).status_code == 200
        )

    assert len(gateway.rows("instantly", event_id)) == 1
    later_id = event_id.replace("2025-11-18T10:47:55.902Z", "2025-11-19T08:00:00.000Z")
    assert len(gateway.rows("instantly", later_id)) == 1


def test_rotated_out_token_is_still_accepted(gateway: Gateway) -> None:
    body, event_id = _opened()

    response = gateway.post("instantly", body, sign_instantly(rotated_out(SECRET)))

    assert response.status_code == 200, response.text
    assert len(gateway.rows("instantly", event_id)) == 1


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("wrong-token", "mismatch"),
        ("other-header-name", "missing_header"),
        ("no-token", "missing_header"),
    ],
)
def test_delivery_without_a_valid_token_is_rejected_and_nothing_stored(
    gateway: Gateway, fault: str, reason: str
) -> None:
    body, event_id = _opened()
    headers = {
        "wrong-token": sign_instantly(secrets.token_urlsafe(24)),
        "other-header-name": sign_instantly(current(SECRET), header="X-Api-Key"),
        "no-token": {"Content-Type": "application/json"},
    }[fault]

    response = gateway.post("instantly", body, headers)

    assert response.status_code == 400
    assert response.json() == {"error": "invalid_signature", "reason": reason}
    assert gateway.rows("instantly", event_id) == []


def test_body_without_event_type_is_refused(gateway: Gateway) -> None:
    payload = json.loads((FIXTURES / "email_opened.json").read_bytes())
    del payload["event_type"]

    response = gateway.post(
        "instantly", json.dumps(payload).encode(), sign_instantly(current(SECRET))
    )

    assert response.status_code == 400
    assert response.json()["error"] == "malformed_body"


def test_wrong_method_is_405(gateway: Gateway) -> None:
    body, event_id = _opened()

    response = gateway.post("instantly", body, sign_instantly(current(SECRET)), method="GET")

    assert response.status_code == 405
    assert gateway.rows("instantly", event_id) == []
