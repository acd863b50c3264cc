"""Stripe webhooks: signature check and event identity.

Scheme: https://docs.stripe.com/webhooks#verify-manually — `Stripe-Signature: t=<unix>,v1=<hex>[,v1=...]`,
HMAC-SHA256 over `"{t}.{raw body}"` keyed with the whole `whsec_...` string. The HMAC comparison is the
stripe SDK's (constant time); the timestamp check is ours so the clock can be injected and a timestamp
from the future is refused too (the SDK only checks the past).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pydantic import SecretStr
from stripe import SignatureVerificationError, WebhookSignature

from schemas.settings import Settings
from webhooks_gateway.providers.base import (
    Delivery,
    InboundEvent,
    PayloadError,
    Reply,
    SignatureError,
    check_timestamp,
    parse_json_object,
    require_header,
    single_event,
)

NAME = "stripe"
SECRET_ENV = "STRIPE_WEBHOOK_SECRET"
SIGNATURE_HEADER = "stripe-signature"
STORED_HEADERS: tuple[str, ...] = (SIGNATURE_HEADER,)
METHODS: tuple[str, ...] = ("POST",)
HANDLED_EVENT_TYPES = frozenset(
    {
        "checkout.session.completed",
        "customer.subscription.created",
        "customer.subscription.updated",
        "customer.subscription.deleted",
        "invoice.paid",
        "invoice.payment_failed",
    }
)


def secrets(settings: Settings) -> tuple[SecretStr, ...]:
    return settings.stripe_webhook_secret


def _timestamp(header: str) -> int:
    stamps = [item[2:] for item in header.split(",") if item.startswith("t=")]
    if len(stamps) != 1 or not stamps[0].isdigit():
        raise SignatureError("malformed", "Stripe-Signature needs exactly one numeric t=")
    if not any(item.startswith("v1=") for item in header.split(",")):
        raise SignatureError("malformed", "Stripe-Signature carries no v1 signature")
    return int(stamps[0])


def verify(
    delivery: Delivery,
    *,
    secrets: Sequence[SecretStr],
    now: datetime,
    tolerance_seconds: int,
) -> None:
    """Raise SignatureError unless one of `secrets` signed the body within the tolerance."""
    header = require_header(delivery.headers, SIGNATURE_HEADER)
    signed_at = _timestamp(header)
    try:
        delivery.raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SignatureError("malformed", "body is not UTF-8") from exc
    if not any(_signed_by(delivery.raw, header, secret) for secret in secrets):
        raise SignatureError("mismatch", "no v1 signature matches a configured secret")
    check_timestamp(signed_at, now, tolerance_seconds)


def _signed_by(raw: bytes, header: str, secret: SecretStr) -> bool:
    try:
        # tolerance=None: the SDK compares the HMAC only; the clock is checked in verify().
        WebhookSignature.verify_header(raw, header, secret.get_secret_value(), None)
    except SignatureVerificationError:
        return False
    return True


def parse(delivery: Delivery) -> dict[str, Any]:
    return parse_json_object(delivery.raw)


def handshake(delivery: Delivery, payload: Any) -> Reply | None:
    return None


def events(delivery: Delivery, payload: dict[str, Any]) -> list[InboundEvent]:
    event_id, event_type = payload.get("id"), payload.get("type")
    if not isinstance(event_id, str) or not event_id.startswith("evt_"):
        raise PayloadError("Stripe event has no evt_ id")
    if not isinstance(event_type, str) or not event_type:
        raise PayloadError("Stripe event has no type")
    return single_event(event_id, event_type, delivery.raw)
