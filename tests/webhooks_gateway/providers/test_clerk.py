"""Clerk (Svix) over real HTTP: each message id is this test's own, so tests never share a row."""

from __future__ import annotations

import base64
import secrets as random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.support.provider_secrets import current, rotated_out
from tests.support.sign_clerk import sign_clerk
from tests.webhooks_gateway.providers.conftest import Gateway

SECRET = "CLERK_WEBHOOK_SIGNING_SECRET"
FIXTURES = Path(__file__).parents[2] / "fixtures" / "clerk"
FIXTURE_FILES = sorted(p for p in FIXTURES.glob("*.json") if not p.name.endswith(".headers.json"))
BODY = (FIXTURES / "user.created.json").read_bytes()


def _msg_id() -> str:
    return f"msg_T{random.token_hex(12)}"


def _signed(
    body: bytes = BODY, *, secret: str = "", at: datetime | None = None, prefix: str = "svix"
) -> tuple[dict[str, str], str]:
    msg_id = _msg_id()
    headers = sign_clerk(
        body,
        secret=secret or current(SECRET),
        at=at or datetime.now(UTC),
        msg_id=msg_id,
        prefix=prefix,
    )
    return headers, msg_id


@pytest.mark.parametrize("fixture", FIXTURE_FILES, ids=lambda p: p.stem)
def test_clerk_delivery_is_stored_once_and_enqueued(gateway: Gateway, fixture: Path) -> None:
    body = fixture.read_bytes()
    headers, msg_id = _signed(body)

    response = gateway.post("clerk", body, headers)

    assert response.status_code == 200, response.text
    (row,) = gateway.rows("clerk", msg_id)
    assert response.json()["inbox_ids"] == [row.id]
    assert (row.event_type, row.status, row.body) == (fixture.stem, "enqueued", body)
    assert row.headers == {k: v for k, v in headers.items() if k.startswith("svix-")}


def test_clerk_redelivery_of_a_message_is_a_duplicate(gateway: Gateway) -> None:
    headers, msg_id = _signed()
    assert gateway.post("clerk", BODY, headers).status_code == 200

    # Svix retries carry the same svix-id, signed again at the retry's time.
    again = sign_clerk(BODY, secret=current(SECRET), at=datetime.now(UTC), msg_id=msg_id)
    response = gateway.post("clerk", BODY, again)

    assert (response.status_code, response.json()) == (200, {"status": "duplicate"})
    assert len(gateway.rows("clerk", msg_id)) == 1


def test_clerk_rotated_out_secret_is_still_accepted(gateway: Gateway) -> None:
    headers, msg_id = _signed(secret=rotated_out(SECRET))

    assert gateway.post("clerk", BODY, headers).status_code == 200
    assert len(gateway.rows("clerk", msg_id)) == 1


def test_clerk_white_label_webhook_headers_are_accepted_and_kept(gateway: Gateway) -> None:
    headers, msg_id = _signed(prefix="webhook")

    assert gateway.post("clerk", BODY, headers).status_code == 200
    (row,) = gateway.rows("clerk", msg_id)
    assert set(row.headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("tampered", "mismatch"),
        ("wrong-secret", "mismatch"),
        ("stale", "stale"),
        ("future", "stale"),
        ("missing-svix-id", "missing_header"),
        ("missing-svix-timestamp", "missing_header"),
        ("missing-svix-signature", "missing_header"),
    ],
)
def test_clerk_unverifiable_delivery_is_rejected_and_nothing_stored(
    gateway: Gateway, fault: str, reason: str
) -> None:
    now = datetime.now(UTC)
    at = {"stale": now - timedelta(minutes=10), "future": now + timedelta(minutes=10)}.get(fault)
    wrong = "whsec_" + base64.b64encode(random.token_bytes(24)).decode()
    headers, msg_id = _signed(secret=wrong if fault == "wrong-secret" else "", at=at)
    body = BODY.replace(b"Lovelace", b"Byron") if fault == "tampered" else BODY
    if fault.startswith("missing-"):
        del headers[fault.removeprefix("missing-")]

    response = gateway.post("clerk", body, headers)

    assert response.status_code == 400
    assert response.json() == {"error": "invalid_signature", "reason": reason}
    assert gateway.rows("clerk", msg_id) == []


def test_clerk_route_refuses_get(gateway: Gateway) -> None:
    headers, msg_id = _signed()

    response = gateway.post("clerk", BODY, headers, method="GET")

    assert response.status_code == 405
    assert gateway.rows("clerk", msg_id) == []
