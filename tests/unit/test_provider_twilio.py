"""The Twilio module as pure functions: JSON bodies, no replay window, and how callbacks are named."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from pydantic import SecretStr
from starlette.datastructures import Headers

from tests.support.sign_twilio import json_url, sign_twilio, sign_twilio_json
from webhooks_gateway.providers import twilio
from webhooks_gateway.providers.base import Delivery, FailureReason, PayloadError, SignatureError

TOKEN = "unit-twilio-auth-token-0123456789"
URL = "https://hooks.example.org/webhooks/twilio"
NOW = datetime(2025, 11, 22, 8, 30, tzinfo=UTC)


def _verify(delivery: Delivery, *, now: datetime = NOW) -> None:
    twilio.verify(delivery, secrets=[SecretStr(TOKEN)], now=now, tolerance_seconds=300)


def _form(body: bytes, headers: dict[str, str], url: str = URL) -> Delivery:
    return Delivery(raw=body, headers=Headers(headers), url=url)


def _rejection(delivery: Delivery) -> FailureReason:
    with pytest.raises(SignatureError) as caught:
        _verify(delivery)
    return caught.value.reason


def _events(body: bytes, headers: dict[str, str] | None = None) -> list[tuple[str, str]]:
    delivery = _form(body, headers or {})
    return [(e.event_id, e.event_type) for e in twilio.events(delivery, twilio.parse(delivery))]


def test_a_signature_never_expires_because_twilio_signs_no_timestamp() -> None:
    body = b"MessageSid=SM1&MessageStatus=sent"

    _verify(_form(body, sign_twilio(URL, body, token=TOKEN)), now=datetime(2099, 1, 1, tzinfo=UTC))


def test_repeated_parameters_are_all_signed() -> None:
    body = b"MessageSid=SM1&MessageStatus=sent&MediaUrl=b&MediaUrl=a"
    # Twilio (and the SDK) sign every value of a repeated name, sorted: ...MediaUrlaMediaUrlb...
    url_and_params = URL + "MediaUrlaMediaUrlbMessageSidSM1MessageStatussent"
    signature = sign_twilio(url_and_params, b"", token=TOKEN)["X-Twilio-Signature"]

    _verify(_form(body, {"X-Twilio-Signature": signature}))


def test_json_body_is_checked_against_body_sha256_in_the_signed_url() -> None:
    body = json.dumps({"MessageSid": "SM9", "MessageStatus": "delivered"}).encode()
    url = json_url(URL, body)
    headers = sign_twilio_json(url, token=TOKEN)
    query = {"bodySHA256": url.rsplit("=", 1)[1]}
    delivery = Delivery(raw=body, headers=Headers(headers), url=url, query=query)

    _verify(delivery)
    assert twilio.events(delivery, twilio.parse(delivery))[0].event_type == "message.delivered"
    tampered = Delivery(
        raw=body.replace(b"SM9", b"SM8"), headers=Headers(headers), url=url, query=query
    )
    assert _rejection(tampered) == "mismatch"


@pytest.mark.parametrize(
    ("headers", "body", "reason"),
    [
        ({}, b"MessageSid=SM1", "missing_header"),
        ({"X-Twilio-Signature": "x"}, b"not a form", "malformed"),
        ({"X-Twilio-Signature": "x"}, b"\xff\xfe=1", "malformed"),
        (
            {"X-Twilio-Signature": "x", "X-Twilio-Webhooks-Signature-Settings": "algorithm=MD5"},
            b"MessageSid=SM1",
            "malformed",
        ),
        ({"X-Twilio-Signature": "x"}, b"MessageSid=SM1", "mismatch"),
    ],
    ids=["no-signature", "not-form", "not-utf8", "unknown-algorithm", "bad-signature"],
)
def test_unverifiable_requests_name_their_reason(
    headers: dict[str, str], body: bytes, reason: FailureReason
) -> None:
    assert _rejection(_form(body, headers)) == reason


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            b"SmsSid=SM1&SmsStatus=received&MessageSid=SM1&Body=hi",
            ("SM1:received", "message.received"),
        ),
        (b"SmsSid=SM2&SmsStatus=sent&MessageStatus=sent", ("SM2:sent", "message.sent")),
        (
            b"MessageSid=SM3&MessageStatus=undelivered&ErrorCode=30005",
            ("SM3:undelivered", "message.undelivered"),
        ),
        (b"CallSid=CA4&CallStatus=no-answer", ("CA4:no-answer", "call.no-answer")),
    ],
    ids=["inbound-sms", "sms-status", "message-status", "call-status"],
)
def test_callbacks_are_named_by_kind_and_status(body: bytes, expected: tuple[str, str]) -> None:
    assert _events(body) == [expected]


def test_unsigned_idempotency_token_does_not_replace_the_signed_composite_id() -> None:
    events = _events(b"MessageSid=SM1&MessageStatus=sent", {"I-Twilio-Idempotency-Token": "tok-1"})

    assert events == [("SM1:sent", "message.sent")]


@pytest.mark.parametrize(
    "body",
    [b"AccountSid=AC1&From=%2B1", b"MessageStatus=sent", b"CallStatus=completed", b"Body=hi"],
    ids=["unknown", "status-without-sid", "call-without-sid", "body-without-sid"],
)
def test_callbacks_we_cannot_name_are_payload_errors(body: bytes) -> None:
    with pytest.raises(PayloadError):
        _events(body)
