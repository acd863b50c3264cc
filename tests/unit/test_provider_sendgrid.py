"""The SendGrid module as pure functions: malformed headers, bad keys, and batch shapes."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pydantic import SecretStr
from starlette.datastructures import Headers

from tests.support.sign_sendgrid import sign_sendgrid
from webhooks_gateway.providers import sendgrid
from webhooks_gateway.providers.base import (
    Delivery,
    FailureReason,
    PayloadError,
    SignatureError,
    body_hash,
)

NOW = datetime(2025, 11, 22, 8, 30, tzinfo=UTC)
PRIVATE_KEY = ec.generate_private_key(ec.SECP256R1())
BODY = b'[{"email":"a@example.com","event":"open","sg_event_id":"ev1","timestamp":1763800000}]'


def _public(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> str:
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


def _verify(body: bytes, headers: dict[str, str], keys: tuple[str, ...]) -> None:
    sendgrid.verify(
        Delivery(raw=body, headers=Headers(headers)),
        secrets=[SecretStr(key) for key in keys],
        now=NOW,
        tolerance_seconds=300,
    )


def _rejection(body: bytes, headers: dict[str, str]) -> FailureReason:
    with pytest.raises(SignatureError) as caught:
        _verify(body, headers, (_public(PRIVATE_KEY),))
    return caught.value.reason


def test_keys_that_are_not_ec_public_keys_are_skipped_not_fatal() -> None:
    headers = sign_sendgrid(BODY, private_key=PRIVATE_KEY, at=NOW)
    rsa_key = _public(rsa.generate_private_key(public_exponent=65537, key_size=2048))

    _verify(BODY, headers, ("not a key at all", rsa_key, _public(PRIVATE_KEY)))


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"X-Twilio-Email-Event-Webhook-Timestamp": "yesterday"}, "malformed"),
        ({"X-Twilio-Email-Event-Webhook-Timestamp": "1" * 40}, "malformed"),
        ({"X-Twilio-Email-Event-Webhook-Signature": "not base64!"}, "malformed"),
        ({"X-Twilio-Email-Event-Webhook-Signature": "AAAA"}, "mismatch"),
    ],
    ids=["words", "huge", "not-base64", "not-der"],
)
def test_malformed_headers_are_named(change: dict[str, str], reason: FailureReason) -> None:
    headers = {**sign_sendgrid(BODY, private_key=PRIVATE_KEY, at=NOW), **change}

    assert _rejection(BODY, headers) == reason


def test_body_that_is_not_utf8_is_malformed() -> None:
    body = b"[\xff]"

    assert _rejection(body, sign_sendgrid(body, private_key=PRIVATE_KEY, at=NOW)) == "malformed"


@pytest.mark.parametrize(
    "body", [b"{}", b"[]", b"[1]", b"nope"], ids=["object", "empty", "not-objects", "not-json"]
)
def test_bodies_that_are_not_event_batches_are_payload_errors(body: bytes) -> None:
    with pytest.raises(PayloadError):
        sendgrid.parse(Delivery(raw=body, headers=Headers({})))


def test_event_without_sg_event_id_is_keyed_by_its_own_bytes() -> None:
    batch = [
        {"email": "a@example.com", "event": "open"},
        {"email": "b@example.com", "event": "open"},
    ]
    delivery = Delivery(raw=json.dumps(batch).encode(), headers=Headers({}))

    first, second = sendgrid.events(delivery, sendgrid.parse(delivery))

    assert first.event_id == body_hash(first.body) != second.event_id
    assert json.loads(first.body) == batch[0]


def test_event_without_a_type_is_a_payload_error() -> None:
    delivery = Delivery(raw=b'[{"sg_event_id": "x"}]', headers=Headers({}))

    with pytest.raises(PayloadError):
        sendgrid.events(delivery, sendgrid.parse(delivery))
