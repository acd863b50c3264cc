"""Stripe over real HTTP: the pattern every provider's test follows."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from tests.signing import sign_stripe
from tests.support.provider_secrets import current, rotated_out
from tests.support.stripe_fixtures import StripeCustomer, body_of
from tests.webhooks_gateway.providers.conftest import Gateway

SECRET = "STRIPE_WEBHOOK_SECRET"


def _signed(secret: str = "", at: datetime | None = None) -> tuple[bytes, dict[str, str], str]:
    event = StripeCustomer.new().event("invoice.paid")
    body = body_of(event)
    headers = sign_stripe(body, secret=secret or current(SECRET), at=at or datetime.now(UTC))
    return body, headers, event["id"]


def test_valid_delivery_is_stored_once_and_enqueued(gateway: Gateway) -> None:
    body, headers, event_id = _signed()

    response = gateway.post("stripe", body, headers)

    assert response.status_code == 200
    (row,) = gateway.rows("stripe", event_id)
    assert response.json()["inbox_ids"] == [row.id]
    assert (row.event_type, row.status, row.body) == ("invoice.paid", "enqueued", body)


def test_redelivery_is_a_duplicate(gateway: Gateway) -> None:
    body, headers, event_id = _signed()
    gateway.post("stripe", body, headers)

    again = gateway.post("stripe", body, headers)

    assert again.json() == {"status": "duplicate"}
    assert len(gateway.rows("stripe", event_id)) == 1


def test_rotated_out_secret_is_still_accepted(gateway: Gateway) -> None:
    body, headers, event_id = _signed(secret=rotated_out(SECRET))

    assert gateway.post("stripe", body, headers).status_code == 200
    assert len(gateway.rows("stripe", event_id)) == 1


@pytest.mark.parametrize("fault", ["tampered", "wrong-secret", "stale", "missing-header"])
def test_unverifiable_delivery_is_rejected_and_nothing_stored(gateway: Gateway, fault: str) -> None:
    at = datetime.now(UTC) - timedelta(minutes=10) if fault == "stale" else None
    body, headers, event_id = _signed(
        secret="whsec_wrong" if fault == "wrong-secret" else "", at=at
    )
    if fault == "tampered":
        body = json.dumps({**json.loads(body), "livemode": True}).encode()
    if fault == "missing-header":
        headers.pop("Stripe-Signature")

    response = gateway.post("stripe", body, headers)

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_signature"
    assert gateway.rows("stripe", event_id) == []
