"""The Daily module as pure functions: timestamp forms, secrets that do not decode, the probe shape."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr
from starlette.datastructures import Headers

from tests.support.sign_daily import sign_daily
from webhooks_gateway.providers import daily
from webhooks_gateway.providers.base import Delivery, FailureReason, PayloadError, SignatureError

NOW = datetime(2025, 11, 22, 8, 30, tzinfo=UTC)
SECRET = base64.b64encode(b"unit-daily-hmac-key-0123456789ab").decode()
BODY = b'{"version":"1.0.0","type":"meeting.started","id":"met-sta-1","payload":{},"event_ts":1}'


def _verify(body: bytes, headers: dict[str, str], secrets: tuple[str, ...] = (SECRET,)) -> None:
    daily.verify(
        Delivery(raw=body, headers=Headers(headers)),
        secrets=[SecretStr(secret) for secret in secrets],
        now=NOW,
        tolerance_seconds=300,
    )


def _rejection(body: bytes, headers: dict[str, str]) -> FailureReason:
    with pytest.raises(SignatureError) as caught:
        _verify(body, headers)
    return caught.value.reason


def test_millisecond_timestamp_is_read_as_milliseconds() -> None:
    stamp = str(int((NOW - timedelta(seconds=30)).timestamp() * 1000))
    mac = hmac.new(base64.b64decode(SECRET), f"{stamp}.".encode() + BODY, hashlib.sha256)
    headers = {
        "X-Webhook-Timestamp": stamp,
        "X-Webhook-Signature": base64.b64encode(mac.digest()).decode(),
    }

    _verify(BODY, headers)


@pytest.mark.parametrize("stamp", ["soon", "1" * 14, "-5", "1.5"])
def test_timestamp_that_is_not_unix_time_is_malformed(stamp: str) -> None:
    headers = {**sign_daily(BODY, secret=SECRET, at=NOW), "X-Webhook-Timestamp": stamp}

    assert _rejection(BODY, headers) == "malformed"


def test_secret_that_is_not_base64_is_skipped_and_the_next_one_tried() -> None:
    _verify(BODY, sign_daily(BODY, secret=SECRET, at=NOW), secrets=("not base64 !", SECRET))


@pytest.mark.parametrize(
    "body",
    [b'{"test": "test", "id": "x"}', b'["test"]', b"{}", b"test"],
    ids=["extra-key", "array", "empty", "not-json"],
)
def test_only_an_object_with_just_test_passes_unsigned(body: bytes) -> None:
    assert _rejection(body, {}) == "missing_header"


def test_probe_is_a_handshake_and_an_event_is_not() -> None:
    probe = Delivery(raw=b'{"test":"test"}', headers=Headers({}))
    event = Delivery(raw=BODY, headers=Headers({}))

    assert daily.handshake(probe, daily.parse(probe)) is not None
    assert daily.handshake(event, daily.parse(event)) is None
    assert [(e.event_id, e.event_type) for e in daily.events(event, daily.parse(event))] == [
        ("met-sta-1", "meeting.started")
    ]


@pytest.mark.parametrize("body", [b'{"type": "meeting.started"}', b'{"id": "x", "type": ""}'])
def test_event_without_id_or_type_is_a_payload_error(body: bytes) -> None:
    delivery = Delivery(raw=body, headers=Headers({}))

    with pytest.raises(PayloadError):
        daily.events(delivery, daily.parse(delivery))
