"""QuickBooks Online over real HTTP: one inbox row per entity change, legacy and CloudEvents bodies."""

from __future__ import annotations

import json
import secrets
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.support.provider_secrets import current, rotated_out
from tests.support.sign_quickbooks import sign_quickbooks
from tests.webhooks_gateway.providers.conftest import Gateway

SECRET = "QUICKBOOKS_WEBHOOK_VERIFIER_TOKEN"
FIXTURE_DIR = Path(__file__).parents[2] / "fixtures" / "quickbooks"
FIXTURES = sorted(FIXTURE_DIR.glob("*.json"))


def _fresh(fixture: Path) -> Any:
    """The recorded body with ids of this test's own, so tests sharing the database never collide."""
    payload = json.loads(fixture.read_bytes())
    if isinstance(payload, list):
        for event in payload:
            event["id"] = str(uuid.uuid4())
    else:
        realm = str(secrets.randbelow(10**15) + 9 * 10**15)
        for notification in payload["eventNotifications"]:
            notification["realmId"] = realm
    return payload


def _expected(payload: Any) -> list[tuple[str, str]]:
    """(event id, event type) per change, as the QuickBooks docs define them (written independently)."""
    if isinstance(payload, list):
        return [(event["id"], event["type"]) for event in payload]
    return [
        (
            f"{n['realmId']}:{e['name']}:{e['id']}:{e['operation']}:{e['lastUpdated']}",
            f"{e['name']}.{e['operation']}".lower(),
        )
        for n in payload["eventNotifications"]
        for e in n["dataChangeEvent"]["entities"]
    ]


def _signed(payload: Any, token: str = "") -> tuple[bytes, dict[str, str]]:
    body = json.dumps(payload).encode()
    return body, sign_quickbooks(body, verifier_token=token or current(SECRET))


def _legacy(operation: str = "Create") -> Any:
    payload = _fresh(FIXTURE_DIR / "customer.create.json")
    payload["eventNotifications"][0]["dataChangeEvent"]["entities"][0]["operation"] = operation
    return payload


@pytest.mark.parametrize("fixture", FIXTURES, ids=lambda path: path.stem)
def test_each_change_in_a_fixture_is_stored_once_and_enqueued(
    gateway: Gateway, fixture: Path
) -> None:
    payload = _fresh(fixture)
    body, headers = _signed(payload)

    response = gateway.post("quickbooks", body, headers)

    assert response.status_code == 200, response.text
    expected = _expected(payload)
    assert len(response.json()["inbox_ids"]) == len(expected)
    for event_id, event_type in expected:
        (row,) = gateway.rows("quickbooks", event_id)
        assert (row.event_type, row.status) == (event_type, "enqueued")
        assert "intuit-signature" in row.headers
        change = json.loads(row.body)
        if isinstance(payload, list):
            assert change["id"] == event_id
            assert change["intuitaccountid"] == payload[0]["intuitaccountid"]
        else:
            assert change["realmId"] == event_id.split(":")[0]
            assert ":".join((change["name"], change["id"])) in event_id


def test_notification_with_three_changes_stores_three_rows_and_a_repost_none(
    gateway: Gateway,
) -> None:
    payload = _fresh(FIXTURE_DIR / "batch__legacy.json")
    body, headers = _signed(payload)
    ids = [event_id for event_id, _ in _expected(payload)]

    first = gateway.post("quickbooks", body, headers)
    again = gateway.post("quickbooks", body, headers)

    assert first.status_code == 200
    assert len(first.json()["inbox_ids"]) == 3
    assert [len(gateway.rows("quickbooks", event_id)) for event_id in ids] == [1, 1, 1]
    assert again.status_code == 200
    assert again.json() == {"status": "duplicate"}
    assert [len(gateway.rows("quickbooks", event_id)) for event_id in ids] == [1, 1, 1]


def test_a_notification_repeating_stored_changes_stores_only_the_new_one(
    gateway: Gateway,
) -> None:
    payload = _fresh(FIXTURE_DIR / "batch__legacy.json")
    gateway.post("quickbooks", *_signed(payload))
    entities = payload["eventNotifications"][0]["dataChangeEvent"]["entities"]
    entities.append({**entities[0], "operation": "Update", "lastUpdated": "2025-11-03T16:50:00Z"})

    response = gateway.post("quickbooks", *_signed(payload))

    assert response.status_code == 200
    assert (len(response.json()["inbox_ids"]), response.json()["duplicates"]) == (1, 3)
    (new_id, _) = _expected(payload)[-1]
    (row,) = gateway.rows("quickbooks", new_id)
    assert row.event_type == "customer.update"


def test_cloudevents_array_stores_one_row_per_event_under_its_own_id(gateway: Gateway) -> None:
    payload = _fresh(FIXTURE_DIR / "qbo.customer.created.v1.json")
    second = {**payload[0], "id": str(uuid.uuid4()), "type": "qbo.invoice.updated.v1"}
    payload.append(second)
    body, headers = _signed(payload)

    response = gateway.post("quickbooks", body, headers)

    assert response.status_code == 200
    assert len(response.json()["inbox_ids"]) == 2
    (row,) = gateway.rows("quickbooks", second["id"])
    assert row.event_type == "qbo.invoice.updated.v1"
    assert json.loads(row.body) == second


def test_redelivery_is_a_duplicate(gateway: Gateway) -> None:
    payload = _legacy()
    body, headers = _signed(payload)
    gateway.post("quickbooks", body, headers)

    again = gateway.post("quickbooks", body, headers)

    assert again.json() == {"status": "duplicate"}
    ((event_id, _),) = _expected(payload)
    assert len(gateway.rows("quickbooks", event_id)) == 1


def test_rotated_out_verifier_token_is_still_accepted(gateway: Gateway) -> None:
    payload = _legacy()
    body, headers = _signed(payload, token=rotated_out(SECRET))

    assert gateway.post("quickbooks", body, headers).status_code == 200
    ((event_id, _),) = _expected(payload)
    assert len(gateway.rows("quickbooks", event_id)) == 1


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("tampered", "mismatch"),
        ("wrong-token", "mismatch"),
        ("missing-header", "missing_header"),
        ("not-a-digest", "malformed"),
    ],
)
def test_unverifiable_delivery_is_rejected_and_nothing_stored(
    gateway: Gateway, fault: str, reason: str
) -> None:
    payload = _legacy()
    body, headers = _signed(payload, token="wrong-token" if fault == "wrong-token" else "")
    ((event_id, _),) = _expected(payload)
    if fault == "tampered":
        body = body.replace(b'"Create"', b'"Delete"')
    if fault == "missing-header":
        headers.pop("intuit-signature")
    if fault == "not-a-digest":
        headers["intuit-signature"] = "sha256=deadbeef"

    response = gateway.post("quickbooks", body, headers)

    assert response.status_code == 400
    assert response.json() == {"error": "invalid_signature", "reason": reason}
    assert gateway.rows("quickbooks", event_id) == []
    assert gateway.rows("quickbooks", event_id.replace(":Create:", ":Delete:")) == []


def test_an_old_signed_delivery_has_no_timestamp_to_be_stale(gateway: Gateway) -> None:
    """The scheme signs no time: a change last updated years ago is still a valid delivery."""
    payload = _legacy()
    entity = payload["eventNotifications"][0]["dataChangeEvent"]["entities"][0]
    entity["lastUpdated"] = "2019-01-01T00:00:00.000Z"

    assert gateway.post("quickbooks", *_signed(payload)).status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"something": "else"}',
        b'{"eventNotifications": []}',
        b'{"eventNotifications": [{"realmId": "1", "dataChangeEvent": {"entities": [{"id": "1"}]}}]}',
        b'[{"specversion": "1.0", "type": "qbo.customer.created.v1"}]',
    ],
    ids=["not-json", "unknown-shape", "no-changes", "entity-without-id", "cloudevent-without-id"],
)
def test_genuine_but_unreadable_body_is_refused_as_malformed(gateway: Gateway, body: bytes) -> None:
    before = gateway.count("quickbooks")

    response = gateway.post(
        "quickbooks", body, sign_quickbooks(body, verifier_token=current(SECRET))
    )

    assert response.status_code == 400
    assert response.json()["error"] == "malformed_body"
    assert gateway.count("quickbooks") == before


def test_wrong_method_is_refused(gateway: Gateway) -> None:
    response = gateway.post("quickbooks", b"", method="GET")

    assert response.status_code == 405
    assert response.json()["allowed"] == ["POST"]
