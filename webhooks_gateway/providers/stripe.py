"""Stripe webhooks: signature check and event identity.

Scheme: https://docs.stripe.com/webhooks#verify-manually — `Stripe-Signature: t=<unix>,v1=<hex>[,v1=...]`,
HMAC-SHA256 over `"{t}.{raw body}"` keyed with the whole `whsec_...` string. The HMAC comparison is the
stripe SDK's (constant time); the timestamp check is ours so the clock can be injected and a timestamp
from the future is refused too (the SDK only checks the past).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import stripe
from pydantic import SecretStr

from webhooks_gateway.providers.base import PayloadError, SignatureError

NAME: str = "stripe"
SIGNATURE_HEADER = "stripe-signature"
STORED_HEADERS: tuple[str, ...] = (SIGNATURE_HEADER,)
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


def _timestamp(header: str) -> int:
    stamps = [item[2:] for item in header.split(",") if item.startswith("t=")]
    if len(stamps) != 1 or not stamps[0].isdigit():
        raise SignatureError("malformed", "Stripe-Signature needs exactly one numeric t=")
    if not any(item.startswith("v1=") for item in header.split(",")):
        raise SignatureError("malformed", "Stripe-Signature carries no v1 signature")
    return int(stamps[0])


def verify(
    raw: bytes,
    headers: Mapping[str, str],
    *,
    secrets: Sequence[SecretStr],
    now: datetime,
    tolerance_seconds: int,
) -> None:
    """Raise SignatureError unless one of `secrets` signed `raw` within the tolerance."""
    header = headers.get(SIGNATURE_HEADER)
    if not header:
        raise SignatureError("missing_header", "Stripe-Signature")
    signed_at = _timestamp(header)
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SignatureError("malformed", "body is not UTF-8") from exc
    if not any(_signed_by(raw, header, secret) for secret in secrets):
        raise SignatureError("mismatch", "no v1 signature matches a configured secret")
    if abs(now.timestamp() - signed_at) > tolerance_seconds:
        raise SignatureError("stale", f"signed {int(now.timestamp()) - signed_at}s from now")


def _signed_by(raw: bytes, header: str, secret: SecretStr) -> bool:
    try:
        # tolerance=None: the SDK compares the HMAC only; the clock is checked in verify().
        stripe.WebhookSignature.verify_header(raw, header, secret.get_secret_value(), None)
    except stripe.SignatureVerificationError:
        return False
    return True


def event_id(payload: Mapping[str, Any], headers: Mapping[str, str]) -> str:
    value = payload.get("id")
    if not isinstance(value, str) or not value.startswith("evt_"):
        raise PayloadError("Stripe event has no evt_ id")
    return value


def event_type(payload: Mapping[str, Any], headers: Mapping[str, str]) -> str:
    value = payload.get("type")
    if not isinstance(value, str) or not value:
        raise PayloadError("Stripe event has no type")
    return value
