"""SendGrid over real HTTP: ECDSA-signed batches, one inbox row per event, de-duplicated per event."""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.support.provider_secrets import SENDGRID_OLD_PRIVATE_KEY, SENDGRID_PRIVATE_KEY
from tests.support.sign_sendgrid import sign_sendgrid
from tests.webhooks_gateway.providers.conftest import Gateway
from webhooks_gateway.providers import sendgrid

FIXTURES = Path(__file__).parents[2] / "fixtures" / "sendgrid"
FIXTURE_FILES = sorted(FIXTURES.glob("*.json"))


def _events_of(path: Path) -> list[dict[str, Any]]:
    """A fixture is a batch as SendGrid POSTs it: `<type>.json` holds one event, `batch__*` several."""
    batch = json.loads(path.read_bytes())
    assert isinstance(batch, list)
    return batch


def _readdressed(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The same events under sg_event_ids of this test's own (tests share one inbox)."""
    return [{**event, "sg_event_id": secrets.token_urlsafe(16)} for event in batch]


def _batch(*event_types: str) -> list[dict[str, Any]]:
    return _readdressed([_events_of(FIXTURES / f"{name}.json")[0] for name in event_types])


def _body(batch: list[dict[str, Any]]) -> bytes:
    return json.dumps(batch, indent=2).encode()


def _post(
    gateway: Gateway,
    body: bytes,
    *,
    key: ec.EllipticCurvePrivateKey = SENDGRID_PRIVATE_KEY,
    at: datetime | None = None,
) -> Any:
    return gateway.post(
        "sendgrid", body, sign_sendgrid(body, private_key=key, at=at or datetime.now(UTC))
    )


def _ids(batch: list[dict[str, Any]]) -> list[str]:
    return [event["sg_event_id"] for event in batch]


def _stored(gateway: Gateway, batch: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [
        (row.event_id, row.event_type) for i in _ids(batch) for row in gateway.rows("sendgrid", i)
    ]


def test_fixture_event_types_are_exactly_the_handled_types() -> None:
    """Each file's types are those of its elements, so a mixed batch counts for every type in it."""
    found = {event["event"] for path in FIXTURE_FILES for event in _events_of(path)}

    assert found == sendgrid.HANDLED_EVENT_TYPES
    for path in FIXTURE_FILES:
        if not path.stem.startswith("batch__"):
            assert [event["event"] for event in _events_of(path)] == [path.stem]


@pytest.mark.parametrize("fixture", FIXTURE_FILES, ids=lambda path: path.stem)
def test_every_recorded_batch_stores_one_row_per_event(gateway: Gateway, fixture: Path) -> None:
    batch = _readdressed(_events_of(fixture))
    body = _body(batch)

    response = _post(gateway, body)

    assert response.status_code == 200
    rows = [row for i in _ids(batch) for row in gateway.rows("sendgrid", i)]
    assert response.json()["inbox_ids"] == [row.id for row in rows]
    assert [(row.event_id, row.event_type, row.status) for row in rows] == [
        (event["sg_event_id"], event["event"], "enqueued") for event in batch
    ]
    assert [json.loads(row.body) for row in rows] == batch  # each row holds its own event only


def test_batch_of_three_is_three_rows_with_their_ids(gateway: Gateway) -> None:
    batch = _batch("processed", "delivered", "open")

    response = _post(gateway, _body(batch))

    assert response.json()["duplicates"] == 0
    assert len(response.json()["inbox_ids"]) == 3
    assert _stored(gateway, batch) == [
        (batch[0]["sg_event_id"], "processed"),
        (batch[1]["sg_event_id"], "delivered"),
        (batch[2]["sg_event_id"], "open"),
    ]


def test_reposted_batch_is_a_duplicate_and_still_three_rows(gateway: Gateway) -> None:
    batch = _batch("processed", "delivered", "click")
    body = _body(batch)
    _post(gateway, body)

    again = _post(gateway, body)

    assert (again.status_code, again.json()) == (200, {"status": "duplicate"})
    assert len(_stored(gateway, batch)) == 3


def test_overlapping_batch_stores_only_the_new_events(gateway: Gateway) -> None:
    first = _batch("processed", "delivered")
    _post(gateway, _body(first))
    later = [*first, *_batch("open")]

    response = _post(gateway, _body(later))

    assert response.status_code == 200
    assert response.json()["duplicates"] == 2
    (new_id,) = response.json()["inbox_ids"]
    (row,) = gateway.rows("sendgrid", later[2]["sg_event_id"])
    assert (row.id, row.event_type) == (new_id, "open")
    assert len(_stored(gateway, later)) == 3


def test_rotated_out_key_is_still_accepted(gateway: Gateway) -> None:
    batch = _batch("bounce")

    response = _post(gateway, _body(batch), key=SENDGRID_OLD_PRIVATE_KEY)

    assert response.status_code == 200
    assert _stored(gateway, batch) == [(batch[0]["sg_event_id"], "bounce")]


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("tampered", "mismatch"),
        ("wrong-key", "mismatch"),
        ("stale", "stale"),
        ("from-the-future", "stale"),
        ("missing-signature", "missing_header"),
        ("missing-timestamp", "missing_header"),
    ],
)
def test_unverifiable_batch_is_rejected_and_nothing_stored(
    gateway: Gateway, fault: str, reason: str
) -> None:
    batch = _batch("delivered", "open")
    body = _body(batch)
    now = datetime.now(UTC)
    at = {"stale": now - timedelta(minutes=10), "from-the-future": now + timedelta(minutes=10)}
    key = ec.generate_private_key(ec.SECP256R1()) if fault == "wrong-key" else SENDGRID_PRIVATE_KEY
    headers = sign_sendgrid(body, private_key=key, at=at.get(fault, now))
    if fault == "tampered":
        body = body.replace(b'"delivered"', b'"dropped"')
    if fault == "missing-signature":
        headers.pop("X-Twilio-Email-Event-Webhook-Signature")
    if fault == "missing-timestamp":
        headers.pop("X-Twilio-Email-Event-Webhook-Timestamp")

    response = gateway.post("sendgrid", body, headers)

    assert response.status_code == 400
    assert response.json() == {"error": "invalid_signature", "reason": reason}
    assert _stored(gateway, batch) == []


def test_wrong_method_is_405(gateway: Gateway) -> None:
    response = gateway.post("sendgrid", b"", method="GET")

    assert response.status_code == 405
    assert response.json()["allowed"] == ["POST"]
