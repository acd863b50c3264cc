"""Instantly (API v2) webhooks: token check and event identity.

Scheme: none. Instantly signs nothing (https://developer.instantly.ai/guides/webhook-events); the only
delivery authentication it offers is the optional `headers` object set on the subscription
(`POST /api/v2/webhooks` with `target_hook_url`, `event_type`, `headers`). Set
`{"X-Instantly-Token": "<INSTANTLY_WEBHOOK_SECRET>"}` there; `Authorization: Bearer <token>` and a
`?token=` on the target URL are accepted too. Compared in constant time with every configured secret.

Body: one JSON object per delivery with `timestamp`, `event_type`, `workspace`, `campaign_id`,
`campaign_name` always present and `lead_email`, `email_account`, `step`, `variant`, `email_id`, ...
when they apply (lead custom fields arrive as extra keys). Instantly sends no event id, so the id is
the composite `event_type:campaign_id:lead:email_id-or-step:timestamp` (lead = lower-cased
`lead_email`, else `email_account`), hashed when longer than an inbox id may be; a body without
`timestamp` falls back to the hash of its bytes.
"""

from __future__ import annotations

import hashlib
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
    body_hash,
    check_token,
    parse_json_object,
    single_event,
)

NAME = "instantly"
SECRET_ENV = "INSTANTLY_WEBHOOK_SECRET"
# The custom header we ask operators to set on the Instantly subscription.
TOKEN_HEADER = "x-instantly-token"
STORED_HEADERS: tuple[str, ...] = ()
METHODS: tuple[str, ...] = ("POST",)
HANDLED_EVENT_TYPES = frozenset(
    {
        "email_sent",
        "email_opened",
        "reply_received",
        "lead_interested",
        "email_bounced",
        "lead_unsubscribed",
    }
)
MAX_EVENT_ID_LENGTH = 255


def secrets(settings: Settings) -> tuple[SecretStr, ...]:
    return settings.instantly_webhook_secret


def verify(
    delivery: Delivery,
    *,
    secrets: Sequence[SecretStr],
    now: datetime,
    tolerance_seconds: int,
) -> None:
    """Raise SignatureError unless the request carries a configured token (no timestamp to check)."""
    check_token(delivery, secrets, header=TOKEN_HEADER)


def parse(delivery: Delivery) -> dict[str, Any]:
    return parse_json_object(delivery.raw)


def handshake(delivery: Delivery, payload: Any) -> Reply | None:
    return None


def events(delivery: Delivery, payload: dict[str, Any]) -> list[InboundEvent]:
    event_type = payload.get("event_type")
    if not isinstance(event_type, str) or not event_type:
        raise PayloadError("Instantly webhook has no event_type")
    return single_event(_event_id(event_type, payload, delivery.raw), event_type, delivery.raw)


def _text(payload: dict[str, Any], key: str) -> str:
    value = payload.get(key)
    if isinstance(value, bool) or not isinstance(value, str | int):
        return ""
    return str(value).strip()


def _event_id(event_type: str, payload: dict[str, Any], raw: bytes) -> str:
    timestamp = _text(payload, "timestamp")
    if not timestamp:
        return body_hash(raw)
    lead = _text(payload, "lead_email").lower() or _text(payload, "email_account").lower()
    message = _text(payload, "email_id") or _text(payload, "step")
    event_id = ":".join((event_type, _text(payload, "campaign_id"), lead, message, timestamp))
    if len(event_id) <= MAX_EVENT_ID_LENGTH:
        return event_id
    # Still a function of the same fields, so a redelivery with reordered keys stays a duplicate.
    return f"{event_type[:64]}:sha256:{hashlib.sha256(event_id.encode()).hexdigest()}"
