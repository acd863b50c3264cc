"""SendGrid Event Webhook (signed): signature check and one inbox row per event of a batch.

Scheme: https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/getting-started-event-webhook-security-features
— `X-Twilio-Email-Event-Webhook-Signature` is a base64 DER ECDSA (P-256, SHA-256) signature over the
`X-Twilio-Email-Event-Webhook-Timestamp` value immediately followed by the raw body; it is checked
against the public verification key from Mail Settings (base64 DER, SENDGRID_WEBHOOK_PUBLIC_KEY; every
configured key is tried, for rotation).

The check is the sendgrid library's `EventWebhook.verify_signature` (sendgrid 6.12.5). That release
verifies with `cryptography` (it no longer depends on starkbank-ecdsa, which is not installed here), so
the SDK verifier works as shipped. SendGrid documents no replay window and the SDK checks none; the
gateway's tolerance is applied to the signed timestamp, past and future.

A POST holds a JSON array of events: each becomes one InboundEvent whose id is its `sg_event_id`
(documented as unique; duplicates across deliveries do happen, hence per-event de-duplication), whose
type is its `event`, and whose body is that element re-serialised as compact JSON.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import SecretStr
from sendgrid.helpers.eventwebhook import EventWebhook  # type: ignore[import-untyped]

from schemas.settings import Settings
from webhooks_gateway.providers.base import (
    Delivery,
    InboundEvent,
    PayloadError,
    Reply,
    SignatureError,
    body_hash,
    check_timestamp,
    require_header,
)

NAME = "sendgrid"
SECRET_ENV = "SENDGRID_WEBHOOK_PUBLIC_KEY"
SIGNATURE_HEADER = "x-twilio-email-event-webhook-signature"
TIMESTAMP_HEADER = "x-twilio-email-event-webhook-timestamp"
STORED_HEADERS: tuple[str, ...] = (SIGNATURE_HEADER, TIMESTAMP_HEADER)
METHODS: tuple[str, ...] = ("POST",)
HANDLED_EVENT_TYPES = frozenset(
    {
        "processed",
        "delivered",
        "open",
        "click",
        "bounce",
        "dropped",
        "spamreport",
        "unsubscribe",
        "group_unsubscribe",
        "deferred",
    }
)
# Unix seconds; the length cap keeps a forged value from overflowing the clock arithmetic.
_TIMESTAMP = re.compile(r"[0-9]{1,12}")


def secrets(settings: Settings) -> tuple[SecretStr, ...]:
    return settings.sendgrid_webhook_public_key


def verify(
    delivery: Delivery,
    *,
    secrets: Sequence[SecretStr],
    now: datetime,
    tolerance_seconds: int,
) -> None:
    """Raise SignatureError unless one of the public keys verifies `timestamp + body` in time."""
    signature = require_header(delivery.headers, SIGNATURE_HEADER)
    timestamp = require_header(delivery.headers, TIMESTAMP_HEADER)
    if not _TIMESTAMP.fullmatch(timestamp):
        raise SignatureError("malformed", "the timestamp header is not unix seconds")
    try:
        base64.b64decode(signature, validate=True)
        payload = delivery.raw.decode("utf-8")
    except (binascii.Error, ValueError) as exc:
        raise SignatureError("malformed", "signature is not base64 or body is not UTF-8") from exc
    if not any(_signed_by(payload, signature, timestamp, key) for key in secrets):
        raise SignatureError("mismatch", "no configured public key verifies the signature")
    check_timestamp(int(timestamp), now, tolerance_seconds)


def _signed_by(payload: str, signature: str, timestamp: str, key: SecretStr) -> bool:
    verifier = _verifier(key.get_secret_value())
    if verifier is None:
        return False
    return bool(verifier.verify_signature(payload, signature, timestamp))


@lru_cache(maxsize=8)
def _verifier(public_key: str) -> Any:
    """The SDK verifier for one configured key; None when the key is not an EC public key."""
    try:
        verifier = EventWebhook(public_key)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return None
    return verifier if isinstance(verifier.public_key, ec.EllipticCurvePublicKey) else None


def parse(delivery: Delivery) -> list[dict[str, Any]]:
    try:
        payload = json.loads(delivery.raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PayloadError(f"body is not JSON: {exc}") from exc
    if not isinstance(payload, list) or not payload:
        raise PayloadError("body is not a non-empty JSON array of events")
    if not all(isinstance(element, dict) for element in payload):
        raise PayloadError("an element of the batch is not a JSON object")
    return payload


def handshake(delivery: Delivery, payload: Any) -> Reply | None:
    return None


def events(delivery: Delivery, payload: list[dict[str, Any]]) -> list[InboundEvent]:
    found: list[InboundEvent] = []
    for element in payload:
        event_type = element.get("event")
        if not isinstance(event_type, str) or not event_type:
            raise PayloadError("a SendGrid event has no `event` type")
        body = json.dumps(element, separators=(",", ":")).encode()
        event_id = element.get("sg_event_id")
        if not isinstance(event_id, str) or not event_id:
            event_id = body_hash(body)
        found.append(InboundEvent(event_id=event_id, event_type=event_type, body=body))
    return found
