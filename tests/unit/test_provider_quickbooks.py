"""The QuickBooks module as pure functions: the verifier against independently signed bodies, and
one event per entity change for both body shapes."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from starlette.datastructures import Headers

from tests.support.sign_quickbooks import sign_quickbooks
from webhooks_gateway.providers import quickbooks
from webhooks_gateway.providers.base import Delivery, InboundEvent, PayloadError, SignatureError

NOW = datetime(2025, 11, 3, 16, 45, tzinfo=UTC)
TOKEN = "unit-verifier-current-6f1c2a"
OLD_TOKEN = "unit-verifier-previous-93be0d"
FIXTURES = Path(__file__).parents[1] / "fixtures" / "quickbooks"
FIXTURE_FILES = sorted(FIXTURES.glob("*.json"))


def verify(body: bytes, headers: dict[str, str], tokens: tuple[str, ...] = (TOKEN,)) -> None:
    quickbooks.verify(
        Delivery(raw=body, headers=Headers(headers)),
        secrets=[SecretStr(token) for token in tokens],
        now=NOW,
        tolerance_seconds=300,
    )


def events(body: bytes) -> list[InboundEvent]:
    delivery = Delivery(raw=body, headers=Headers({}))
    return quickbooks.events(delivery, quickbooks.parse(delivery))


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=[path.stem for path in FIXTURE_FILES])
def test_every_fixture_signed_with_a_configured_token_verifies(path: Path) -> None:
    body = path.read_bytes()
    verify(body, sign_quickbooks(body, verifier_token=OLD_TOKEN), tokens=(TOKEN, OLD_TOKEN))


def test_fixtures_cover_exactly_the_handled_event_types() -> None:
    found = {event.event_type for path in FIXTURE_FILES for event in events(path.read_bytes())}
    assert found == quickbooks.HANDLED_EVENT_TYPES


def test_single_change_fixtures_are_named_after_their_event_type() -> None:
    for path in FIXTURE_FILES:
        if "__" not in path.stem:
            assert [event.event_type for event in events(path.read_bytes())] == [path.stem]


def test_legacy_change_is_keyed_by_realm_entity_operation_and_time() -> None:
    (event,) = events((FIXTURES / "invoice.update.json").read_bytes())

    assert event.event_id == "9341453208765412:Invoice:1037:Update:2025-11-03T16:41:55.000Z"
    assert event.event_type == "invoice.update"
    assert json.loads(event.body) == {
        "realmId": "9341453208765412",
        "name": "Invoice",
        "id": "1037",
        "operation": "Update",
        "lastUpdated": "2025-11-03T16:41:55.000Z",
    }


def test_legacy_batch_gives_one_event_per_change_across_realms() -> None:
    payload: dict[str, Any] = json.loads((FIXTURES / "batch__legacy.json").read_bytes())
    other_realm = json.loads(json.dumps(payload["eventNotifications"][0]))
    other_realm["realmId"] = "123146096291789"
    payload["eventNotifications"].append(other_realm)

    found = events(json.dumps(payload).encode())

    assert len(found) == 6
    assert len({event.event_id for event in found}) == 6
    assert {json.loads(event.body)["realmId"] for event in found} == {
        "9341453208765412",
        "123146096291789",
    }


def test_cloudevent_keeps_its_own_id_type_and_json() -> None:
    body = (FIXTURES / "qbo.customer.created.v1.json").read_bytes()
    (event,) = events(body)

    assert event.event_id == "3f1b6c2e-8d4a-4e7b-9a51-2c7d0e9f4b86"
    assert event.event_type == "qbo.customer.created.v1"
    assert json.loads(event.body) == json.loads(body)[0]


def test_a_lone_cloudevent_object_is_read_as_a_batch_of_one() -> None:
    (cloud_event,) = json.loads((FIXTURES / "qbo.customer.created.v1.json").read_bytes())

    (event,) = events(json.dumps(cloud_event).encode())

    assert event.event_id == cloud_event["id"]


def test_a_cloudevent_without_data_is_still_an_event() -> None:
    """Intuit's data-objects page shows updates with neither `data` nor `datacontenttype`."""
    body = b'[{"specversion":"1.0","id":"x-SalesReceipt-150","type":"qbo.salesreceipt.updated.v1"}]'
    (event,) = events(body)
    assert event.event_type == "qbo.salesreceipt.updated.v1"


@pytest.mark.parametrize(
    "body",
    [
        b"[1]",
        b'"text"',
        b'{"eventNotifications": {}}',
        b'{"eventNotifications": [{"dataChangeEvent": {"entities": []}}]}',
        b'{"eventNotifications": [{"realmId": "1", "dataChangeEvent": {}}]}',
        b'{"eventNotifications": [{"realmId": "1", "dataChangeEvent": {"entities": ["x"]}}]}',
        b"[]",
    ],
)
def test_unreadable_bodies_raise_payload_error(body: bytes) -> None:
    with pytest.raises(PayloadError):
        events(body)


def test_a_tampered_body_is_a_mismatch() -> None:
    body = (FIXTURES / "customer.create.json").read_bytes()
    headers = sign_quickbooks(body, verifier_token=TOKEN)

    with pytest.raises(SignatureError) as caught:
        verify(body.replace(b"Create", b"Delete"), headers)

    assert caught.value.reason == "mismatch"


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "missing_header"),
        ({"intuit-signature": ""}, "missing_header"),
        ({"intuit-signature": "c2hvcnQ="}, "malformed"),
    ],
)
def test_a_missing_or_malformed_signature_is_refused(headers: dict[str, str], reason: str) -> None:
    with pytest.raises(SignatureError) as caught:
        verify(b"{}", headers)

    assert caught.value.reason == reason
