"""The Cal.com verifier, "Ping test" handshake and event identity, as pure functions."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from starlette.datastructures import Headers

from tests.support.provider_checks import reason_of
from tests.support.sign_calcom import sign_calcom
from webhooks_gateway.providers import calcom
from webhooks_gateway.providers.base import (
    Delivery,
    FailureReason,
    PayloadError,
    Reply,
    body_hash,
)

NOW = datetime(2025, 11, 22, 8, 26, 40, tzinfo=UTC)
SECRET = "calcom-unit-current-6t1VQ2mX9p"
OLD_SECRET = "calcom-unit-previous-Hq8Zr3Ld0w"
FIXTURES = Path(__file__).parents[1] / "fixtures" / "calcom"
PING = FIXTURES / "PING.json"
EVENT_FILES = sorted(p for p in FIXTURES.glob("*.json") if p != PING)
BODY = (FIXTURES / "BOOKING_CREATED.json").read_bytes()


def verify(body: bytes, headers: dict[str, str], *, secrets: tuple[str, ...] = (SECRET,)) -> None:
    calcom.verify(
        Delivery(raw=body, headers=Headers(headers)),
        secrets=[SecretStr(secret) for secret in secrets],
        now=NOW,
        tolerance_seconds=300,
    )


def rejection(body: bytes, headers: dict[str, str], **kwargs: Any) -> FailureReason:
    return reason_of(lambda: verify(body, headers, **kwargs))


def _delivery(body: bytes) -> Delivery:
    return Delivery(raw=body, headers=Headers({}))


def _events(payload: dict[str, Any]) -> list[Any]:
    delivery = _delivery(json.dumps(payload).encode())
    return calcom.events(delivery, payload)


@pytest.mark.parametrize("path", [*EVENT_FILES, PING], ids=lambda p: p.stem)
def test_calcom_accepts_fixture_signed_with_configured_secret(path: Path) -> None:
    body = path.read_bytes()
    verify(body, sign_calcom(body, secret=SECRET))


@pytest.mark.parametrize("path", EVENT_FILES, ids=lambda p: p.stem)
def test_calcom_reads_fixture_type_and_composite_id(path: Path) -> None:
    delivery = _delivery(path.read_bytes())
    payload = calcom.parse(delivery)
    assert calcom.handshake(delivery, payload) is None
    (event,) = calcom.events(delivery, payload)
    uid, created_at = payload["payload"]["uid"], payload["createdAt"]
    assert event.event_id == f"{path.stem}:{uid}:{created_at}"
    assert (event.event_type, event.body) == (path.stem, path.read_bytes())


def test_calcom_fixture_event_ids_are_unique() -> None:
    ids = []
    for path in EVENT_FILES:
        delivery = _delivery(path.read_bytes())
        ids += [event.event_id for event in calcom.events(delivery, calcom.parse(delivery))]
    assert len(ids) == len(set(ids)) == len(EVENT_FILES)


def test_calcom_ping_is_answered_inline() -> None:
    delivery = _delivery(PING.read_bytes())
    assert calcom.handshake(delivery, calcom.parse(delivery)) == Reply(
        status=200, body={"status": "pong"}
    )


def test_calcom_event_without_created_at_is_identified_by_body_hash() -> None:
    payload = {"triggerEvent": "BOOKING_CREATED", "payload": {"uid": "bk_1"}}
    raw = json.dumps(payload).encode()
    (event,) = calcom.events(_delivery(raw), payload)
    assert event.event_id == body_hash(raw)


def test_calcom_event_without_booking_uid_is_identified_by_body_hash() -> None:
    payload = {
        "triggerEvent": "BOOKING_CREATED",
        "createdAt": "2025-11-22T08:30:00Z",
        "payload": {},
    }
    raw = json.dumps(payload).encode()
    (event,) = calcom.events(_delivery(raw), payload)
    assert event.event_id == body_hash(raw)


def test_calcom_flat_meeting_trigger_reads_the_top_level_uid() -> None:
    # Older scheduled triggers post {"triggerEvent", ...booking}: no "payload", no "createdAt".
    payload = {"triggerEvent": "MEETING_ENDED", "id": 97, "uid": "k3Rm", "endTime": "2025-11-27"}
    raw = json.dumps(payload).encode()
    (event,) = calcom.events(_delivery(raw), payload)
    assert (event.event_id, event.event_type) == (body_hash(raw), "MEETING_ENDED")
    (with_time,) = _events({**payload, "createdAt": "2025-11-27T15:30:00Z"})
    assert with_time.event_id == "MEETING_ENDED:k3Rm:2025-11-27T15:30:00Z"


@pytest.mark.parametrize("trigger", [None, "", 7])
def test_calcom_delivery_without_trigger_event_is_a_payload_error(trigger: Any) -> None:
    with pytest.raises(PayloadError):
        _events({"triggerEvent": trigger, "createdAt": "x", "payload": {"uid": "u"}})


def test_calcom_rejects_tampered_body() -> None:
    headers = sign_calcom(BODY, secret=SECRET)
    tampered = BODY.replace(b'"price": 0', b'"price": 100')
    assert tampered != BODY
    assert rejection(tampered, headers) == "mismatch"


def test_calcom_rejects_body_with_trailing_newline_added() -> None:
    assert rejection(BODY + b"\n", sign_calcom(BODY, secret=SECRET)) == "mismatch"


def test_calcom_rejects_signature_from_wrong_secret() -> None:
    assert rejection(BODY, sign_calcom(BODY, secret="someone-elses")) == "mismatch"


def test_calcom_rejects_unsigned_delivery() -> None:
    headers = {"X-Cal-Signature-256": "no-secret-provided"}
    assert rejection(BODY, headers) == "mismatch"


def test_calcom_rejects_missing_signature_header() -> None:
    assert rejection(BODY, {"Content-Type": "application/json"}) == "missing_header"


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("sha256=" + "0" * 64, id="prefixed"),
        pytest.param("0" * 63, id="short"),
        pytest.param("z" * 64, id="not-hex"),
    ],
)
def test_calcom_rejects_malformed_signature(value: str) -> None:
    assert rejection(BODY, {"X-Cal-Signature-256": value}) == "malformed"


def test_calcom_accepts_uppercase_hex_signature() -> None:
    signature = sign_calcom(BODY, secret=SECRET)["X-Cal-Signature-256"].upper()
    verify(BODY, {"X-Cal-Signature-256": signature})


def test_calcom_accepts_signature_from_second_configured_secret() -> None:
    verify(BODY, sign_calcom(BODY, secret=OLD_SECRET), secrets=(SECRET, OLD_SECRET))


def test_calcom_rejects_everything_when_no_secret_configured() -> None:
    assert rejection(BODY, sign_calcom(BODY, secret=SECRET), secrets=()) == "mismatch"
