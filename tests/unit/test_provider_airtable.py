"""The Airtable module as pure functions: the MAC check against independently signed pings, and the
ping's identity."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import SecretStr
from starlette.datastructures import Headers

from tests.support.sign_airtable import sign_airtable
from webhooks_gateway.providers import airtable
from webhooks_gateway.providers.base import Delivery, PayloadError, SignatureError

NOW = datetime(2025, 11, 3, 16, 45, tzinfo=UTC)
SECRET = base64.b64encode(b"unit-mac-secret-current-0123456789").decode()
OLD_SECRET = base64.b64encode(b"unit-mac-secret-previous-987654321").decode()
FIXTURES = Path(__file__).parents[1] / "fixtures" / "airtable"
PING = (FIXTURES / "airtable.ping.json").read_bytes()


def verify(body: bytes, headers: dict[str, str], secrets: tuple[str, ...] = (SECRET,)) -> None:
    airtable.verify(
        Delivery(raw=body, headers=Headers(headers)),
        secrets=[SecretStr(secret) for secret in secrets],
        now=NOW,
        tolerance_seconds=300,
    )


def reason_for(body: bytes, headers: dict[str, str], **kwargs: tuple[str, ...]) -> str:
    with pytest.raises(SignatureError) as caught:
        verify(body, headers, **kwargs)
    return caught.value.reason


def test_a_ping_signed_with_any_configured_secret_verifies() -> None:
    verify(PING, sign_airtable(PING, mac_secret_base64=SECRET), secrets=(OLD_SECRET, SECRET))
    verify(PING, sign_airtable(PING, mac_secret_base64=OLD_SECRET), secrets=(OLD_SECRET, SECRET))


def test_upper_case_hex_is_the_same_mac() -> None:
    header = sign_airtable(PING, mac_secret_base64=SECRET)["X-Airtable-Content-MAC"]
    prefix, mac = header.split("=", 1)
    verify(PING, {"X-Airtable-Content-MAC": f"{prefix}={mac.upper()}"})


def test_a_secret_that_is_not_base64_matches_nothing_but_does_not_hide_the_others() -> None:
    headers = sign_airtable(PING, mac_secret_base64=SECRET)

    verify(PING, headers, secrets=("not base64!", SECRET))
    assert reason_for(PING, headers, secrets=("not base64!",)) == "mismatch"


def test_the_mac_is_keyed_with_the_decoded_secret_not_its_base64_text() -> None:
    keyed_with_text = hmac.new(SECRET.encode(), PING, hashlib.sha256).hexdigest()

    assert reason_for(PING, {"X-Airtable-Content-MAC": f"hmac-sha256={keyed_with_text}"}) == (
        "mismatch"
    )


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "missing_header"),
        ({"X-Airtable-Content-MAC": "sha256=abc"}, "malformed"),
        ({"X-Airtable-Content-MAC": "hmac-sha256-abc"}, "malformed"),
        ({"X-Airtable-Content-MAC": "hmac-sha256=abc"}, "mismatch"),
    ],
)
def test_a_missing_malformed_or_wrong_mac_is_refused(headers: dict[str, str], reason: str) -> None:
    assert reason_for(PING, headers) == reason


def test_the_ping_is_one_event_keyed_by_webhook_and_timestamp() -> None:
    delivery = Delivery(raw=PING, headers=Headers({}))

    (event,) = airtable.events(delivery, airtable.parse(delivery))

    assert event.event_id == "achV3nLp8sYcE1uHj:2025-11-03T16:42:07.512Z"
    assert event.event_type == "airtable.ping"
    assert event.body == PING
    assert airtable.handshake(delivery, airtable.parse(delivery)) is None


@pytest.mark.parametrize(
    "payload",
    [
        {"webhook": {"id": "achX"}, "timestamp": "t"},
        {"base": {"id": "appX"}, "webhook": "achX", "timestamp": "t"},
        {"base": {"id": "appX"}, "webhook": {"id": ""}, "timestamp": "t"},
        {"base": {"id": "appX"}, "webhook": {"id": "achX"}},
    ],
)
def test_a_ping_without_its_ids_raises_payload_error(payload: dict[str, object]) -> None:
    raw = json.dumps(payload).encode()
    delivery = Delivery(raw=raw, headers=Headers({}))

    with pytest.raises(PayloadError):
        airtable.events(delivery, airtable.parse(delivery))
