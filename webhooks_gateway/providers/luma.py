"""Luma calendar webhooks: authentication (URL token, or the reported signature) and event identity.

What Luma documents (https://help.luma.com/p/webhooks, and the webhooks endpoints of the OpenAPI at
https://public-api.luma.com, mirrored in github.com/api-evangelist/luma
`openapi/luma-webhooks-api-openapi.yml`): webhooks are set up under Calendar -> Settings -> Developer
or `POST /v2/webhooks/create`, which returns a per-webhook `secret`; bodies are
`{"type": ..., "data": {...}}` with no envelope id or timestamp. Neither page says how, or whether,
deliveries are signed. So the route is authenticated, first, by a secret token we put in the URL
we give Luma (`?token=<LUMA_WEBHOOK_SECRET>`, or `Authorization: Bearer`), as DESIGN.md prescribes
for providers that sign nothing.

What third parties report (no Luma page found confirms it): several independent receivers, among
them the `@alhwyn/luma` SDK (`src/core/webhook-signature.ts`) and a reference note citing
docs.luma.com/reference, verify `Webhook-Signature: t=<unix>,v1=<hex>` = HMAC-SHA256 over
`"{t}.{raw body}"` keyed with the webhook `secret` exactly as given (its `whsec_` prefix included),
sent next to `Webhook-Id` and `Webhook-Timestamp`; two others read it as Standard Webhooks
(`{id}.{t}.{body}`, base64). A delivery without a token is checked against the first reading, with
the timestamp tolerance both ways (configure Luma's `secret` as LUMA_WEBHOOK_SECRET to use it). A
token, when one is presented, decides alone, so a URL token keeps working whatever Luma's signature
turns out to be.

Event id: `type:data.id`, plus `data.event_ticket.id` (ticket.registered fires once per ticket of
one guest), `approval_status`, `registered_at` and `updated_at` where present; `*.updated` events
(a check-in, an edit) carry no field that tells two of them apart, so theirs end with a digest of
the body, which a redelivery of the same bytes repeats. No `data.id`: the hash of the body.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pydantic import SecretStr

from schemas.settings import Settings
from webhooks_gateway.providers.base import (
    Delivery,
    InboundEvent,
    PayloadError,
    Reply,
    SignatureError,
    body_hash,
    check_timestamp,
    check_token,
    hmac_matches,
    parse_json_object,
    require_header,
    single_event,
)

NAME = "luma"
SECRET_ENV = "LUMA_WEBHOOK_SECRET"
SIGNATURE_HEADER = "webhook-signature"
STORED_HEADERS: tuple[str, ...] = (SIGNATURE_HEADER, "webhook-id", "webhook-timestamp")
METHODS: tuple[str, ...] = ("POST",)
HANDLED_EVENT_TYPES = frozenset(
    {
        "guest.registered",
        "guest.updated",
        "event.created",
        "event.updated",
        "event.canceled",
        "ticket.registered",
    }
)
MAX_EVENT_ID_LENGTH = 255
# Fields whose values distinguish two genuine events about the same entity.
_STATE_FIELDS = ("approval_status", "registered_at", "updated_at")


def secrets(settings: Settings) -> tuple[SecretStr, ...]:
    return settings.luma_webhook_secret


def _token_presented(delivery: Delivery) -> bool:
    authorization = delivery.headers.get("authorization", "")
    return bool(delivery.query.get("token")) or authorization.lower().startswith("bearer ")


def verify(
    delivery: Delivery,
    *,
    secrets: Sequence[SecretStr],
    now: datetime,
    tolerance_seconds: int,
) -> None:
    """Raise SignatureError unless a configured token, or a signature by a configured secret within
    the tolerance, vouches for the delivery."""
    if _token_presented(delivery):
        check_token(delivery, secrets)
        return
    header = require_header(delivery.headers, SIGNATURE_HEADER)
    signed_at, signatures = _parse_signature(header)
    signed_payload = str(signed_at).encode() + b"." + delivery.raw
    if not any(
        hmac_matches(_hex_hmac(secret, signed_payload), candidate)
        for secret in secrets
        for candidate in signatures
    ):
        raise SignatureError("mismatch", "no v1 signature matches a configured secret")
    check_timestamp(signed_at, now, tolerance_seconds)


def _parse_signature(header: str) -> tuple[int, list[str]]:
    stamps: list[str] = []
    signatures: list[str] = []
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t":
            stamps.append(value.strip())
        elif key == "v1" and value.strip():
            signatures.append(value.strip())
    if len(stamps) != 1 or not stamps[0].isdigit():
        raise SignatureError("malformed", "Webhook-Signature needs exactly one numeric t=")
    if not signatures:
        raise SignatureError("malformed", "Webhook-Signature carries no v1 signature")
    return int(stamps[0]), signatures


def _hex_hmac(secret: SecretStr, message: bytes) -> str:
    return hmac.new(secret.get_secret_value().encode(), message, hashlib.sha256).hexdigest()


def parse(delivery: Delivery) -> dict[str, Any]:
    return parse_json_object(delivery.raw)


def handshake(delivery: Delivery, payload: Any) -> Reply | None:
    return None


def events(delivery: Delivery, payload: dict[str, Any]) -> list[InboundEvent]:
    event_type = payload.get("type")
    if not isinstance(event_type, str) or not event_type:
        raise PayloadError("Luma webhook has no type")
    data = payload.get("data")
    if not isinstance(data, dict):
        raise PayloadError("Luma webhook has no data object")
    return single_event(_event_id(event_type, data, delivery.raw), event_type, delivery.raw)


def _text(mapping: dict[str, Any], key: str) -> str:
    value = mapping.get(key)
    return value.strip() if isinstance(value, str) else ""


def _event_id(event_type: str, data: dict[str, Any], raw: bytes) -> str:
    entity = _text(data, "id")
    if not entity:
        return body_hash(raw)
    parts = [event_type, entity]
    ticket = data.get("event_ticket")
    if isinstance(ticket, dict) and _text(ticket, "id"):
        parts.append(_text(ticket, "id"))
    parts.extend(_text(data, field) for field in _STATE_FIELDS if _text(data, field))
    if event_type.endswith(".updated"):
        parts.append(hashlib.sha256(raw).hexdigest()[:16])
    event_id = ":".join(parts)
    return event_id if len(event_id) <= MAX_EVENT_ID_LENGTH else body_hash(raw)
